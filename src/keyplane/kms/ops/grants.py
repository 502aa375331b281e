"""Grant operations: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
RevokeGrant, and the grant tokens every operation accepts.

A grant takes effect the moment CreateGrant commits it (keyplane has no propagation
delay), so a grant token's only job here is to be one this service issued, for a grant
that exists: a token is a version byte, the grant id, a nonce and an HMAC of those
under the grant's own token secret, base64url-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

from keyplane.errors import (
    AccessDeniedError,
    DryRunError,
    InvalidGrantIdError,
    InvalidGrantTokenError,
    LimitExceededError,
    NotFoundError,
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.kms._model import KeyGrant, KmsKey
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import Op, require
from keyplane.kms.ops._paging import page
from keyplane.policy import Decision

# AWS KMS resource quotas: 50,000 grants per key.
MAX_GRANTS_PER_KEY: Final = 50_000
# AWS: up to 10 grant tokens in one request.
MAX_GRANT_TOKENS: Final = 10
DEFAULT_LIST_LIMIT: Final = 50
_TOKEN_VERSION: Final = 1
_TOKEN_NONCE_BYTES: Final = 16
_TOKEN_TAG_BYTES: Final = 16
_TOKEN_BYTES: Final = 1 + 32 + _TOKEN_NONCE_BYTES + _TOKEN_TAG_BYTES
# AWS KMS Developer Guide, "Grant constraints": at most 8 pairs, values of at most 384
# characters.
MAX_CONSTRAINT_PAIRS: Final = 8
MAX_CONSTRAINT_VALUE_CHARS: Final = 384
_GRANT_ID: Final = re.compile(r"[0-9a-f]{64}")
_PRINCIPAL: Final = re.compile(
    r"arn:aws:(iam::\d{12}:(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|sts::\d{12}:assumed-role/[\w+=,.@-]+/[\w+=,.@-]+)"
)
# AWS KMS Developer Guide, "Grant operations": what a grant on a symmetric
# encryption key may allow.
SYMMETRIC_GRANT_OPERATIONS: Final = frozenset(
    {
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "ReEncryptFrom",
        "ReEncryptTo",
        "CreateGrant",
        "RetireGrant",
        "DescribeKey",
    }
)


def new_token(grant: KeyGrant) -> str:
    """A new token for ``grant``: its id, a nonce, and an HMAC of both under the
    grant's token secret, so that only tokens issued here check out."""
    head = bytes([_TOKEN_VERSION]) + bytes.fromhex(grant.grant_id)
    head += secrets.token_bytes(_TOKEN_NONCE_BYTES)
    tag = hmac.digest(grant.token_secret, head, "sha256")[:_TOKEN_TAG_BYTES]
    return base64.urlsafe_b64encode(head + tag).decode().rstrip("=")


def grant_of_token(svc: KmsService, token: str) -> tuple[KmsKey, KeyGrant]:
    """The grant a token was issued for, and its key.

    Raises:
        InvalidGrantTokenError: a token this service did not issue, or one for a grant
            that no longer exists.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    invalid = InvalidGrantTokenError("The grant token is not valid.")
    if len(raw) != _TOKEN_BYTES or raw[0] != _TOKEN_VERSION:
        raise invalid
    grant_id = raw[1:33].hex()
    key = svc.keys.get(svc.grant_keys.get(grant_id, ""))
    grant = key.grants.get(grant_id) if key is not None else None
    if key is None or grant is None:
        raise invalid
    head, tag = raw[:-_TOKEN_TAG_BYTES], raw[-_TOKEN_TAG_BYTES:]
    expected = hmac.digest(grant.token_secret, head, "sha256")[:_TOKEN_TAG_BYTES]
    if not hmac.compare_digest(expected, tag):
        raise invalid
    return key, grant


def check_grant_tokens(svc: KmsService, tokens: Sequence[str]) -> None:
    """Refuse a request whose GrantTokens are not all tokens this service issued for
    grants that still exist.

    Raises:
        InvalidGrantTokenError: a malformed, foreign or stale token.
        ValidationError: more than 10 tokens.
    """
    if len(tokens) > MAX_GRANT_TOKENS:
        raise ValidationError(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy "
            f"constraint: Member must have length less than or equal to "
            f"{MAX_GRANT_TOKENS}"
        )
    for token in tokens:
        grant_of_token(svc, token)


def _check_principal(value: str, member: str) -> None:
    if not _PRINCIPAL.fullmatch(value):
        raise ValidationError(f"{member} {value} is not a valid principal ARN.")


async def create_grant(
    svc: KmsService,
    ctx: RequestContext,
    *,
    key_id: str,
    grantee: str | None,
    operations: Sequence[str],
    retiring: str | None = None,
    constraints: Mapping[str, Mapping[str, str]] | None = None,
    name: str | None = None,
    dry_run: bool = False,
) -> tuple[KeyGrant, str]:
    """AWS CreateGrant: let ``grantee`` do ``operations`` with the key.

    A retry with the same Name and the same parameters returns the same grant (with a
    new token), as AWS does.

    Returns:
        The grant and a new grant token for it.

    Raises:
        ValidationError: a bad principal, no operations, or an operation a symmetric
            key's grant cannot allow.
        AccessDeniedError: the caller may not create this grant; or it creates it by
            a grant and asks for more than that grant gives.
        LimitExceededError: the key already has 50,000 grants.
    """
    if grantee is None:
        raise UnsupportedOperationError(
            "GranteeServicePrincipal is not supported by keyplane; name a "
            "GranteePrincipal."
        )
    _check_principal(grantee, "GranteePrincipal")
    if retiring is not None:
        _check_principal(retiring, "RetiringPrincipal")
    wanted = tuple(dict.fromkeys(operations))
    if not wanted:
        raise ValidationError("Operations must name at least one grant operation.")
    terms = _constraints(constraints)
    async with svc.control:
        values: dict[str, object] = {
            "kms:grantoperations": list(wanted),
            "kms:granteeprincipal": grantee,
            "kms:grantisforawsresource": False,
        }
        if retiring is not None:
            values["kms:retiringprincipal"] = retiring
        # AWS: CreateGrant names its key by key id or key ARN, never by an alias.
        key = svc.resolve(ctx, key_id, aliases=False)
        decision = svc.access.check_key(ctx, "kms:CreateGrant", key, values=values)
        require(key.state, Op.CRYPTO, key.arn)
        unsupported = sorted(set(wanted) - SYMMETRIC_GRANT_OPERATIONS)
        if unsupported:
            raise ValidationError(
                f"Grant operations {unsupported} are not supported for a symmetric "
                "encryption KMS key."
            )
        if decision is not None and decision.source == "grant":
            _within_parent(ctx, key, decision, wanted, terms)
        if dry_run:
            raise DryRunError(
                "The request would have succeeded, but the DryRun flag is set."
            )
        if name is not None:
            for existing in key.grants.values():
                if (
                    existing.name == name
                    and existing.issuing_account == ctx.account
                    and existing.grantee == grantee
                    and existing.retiring == retiring
                    and set(existing.operations) == set(wanted)
                    and existing.constraints == terms
                ):
                    return existing, new_token(existing)
        if len(key.grants) >= MAX_GRANTS_PER_KEY:
            raise LimitExceededError(
                f"The key {key.arn} already has {MAX_GRANTS_PER_KEY} grants."
            )
        grant = KeyGrant.build(
            secrets.token_hex(32),
            key.key_id,
            key.account,
            svc.clock(),
            {
                "name": name or "",
                "grantee": grantee,
                "retiring": retiring,
                "operations": list(wanted),
                "constraints": terms,
                "issuing_account": ctx.account,
                "token_secret": secrets.token_bytes(32).hex(),
            },
        )
        await svc.write(svc.store.put_grant, grant.record())
        key.grants[grant.grant_id] = grant
        key.access_changed()
        svc.grant_keys[grant.grant_id] = key.key_id
        return grant, new_token(grant)


def _constraints(
    given: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, dict[str, str]] | None:
    if not given:
        return None
    if given.get("SourceArn") is not None:
        raise UnsupportedOperationError(
            "The SourceArn grant constraint is not supported by keyplane."
        )
    terms = {
        name: dict(pairs)
        for name, pairs in given.items()
        if name in ("EncryptionContextEquals", "EncryptionContextSubset")
        and pairs is not None
    }
    for name, pairs in terms.items():
        if len(pairs) > MAX_CONSTRAINT_PAIRS or any(
            len(value) > MAX_CONSTRAINT_VALUE_CHARS for value in pairs.values()
        ):
            raise ValidationError(
                f"{name} takes at most {MAX_CONSTRAINT_PAIRS} pairs, each value at "
                f"most {MAX_CONSTRAINT_VALUE_CHARS} characters."
            )
    return terms or None


def _within_parent(
    ctx: RequestContext,
    key: KmsKey,
    decision: Decision,
    wanted: tuple[str, ...],
    terms: dict[str, dict[str, str]] | None,
) -> None:
    """A grantee that creates a grant through its own grant may pass on no more than
    that grant gives: its operations, under constraints at least as strict."""
    parent = key.grants.get(decision.grant_id or "")
    if parent is None:
        return
    narrower_ops = set(wanted) <= set(parent.operations)
    if narrower_ops and _at_least_as_strict(terms, parent.constraints):
        return
    raise AccessDeniedError(
        f"User: {ctx.principal} is not authorized to perform: kms:CreateGrant on "
        f"resource: {key.arn} because the grant that allows it does not allow a grant "
        "with these operations or weaker constraints"
    )


def _at_least_as_strict(
    child: dict[str, dict[str, str]] | None,
    parent: dict[str, dict[str, str]] | None,
) -> bool:
    if not parent:
        return True
    if not child:
        return False
    equals = parent.get("EncryptionContextEquals")
    if equals is not None:
        return child.get("EncryptionContextEquals") == equals
    subset = parent.get("EncryptionContextSubset") or {}
    narrowed = child.get("EncryptionContextEquals") or child.get(
        "EncryptionContextSubset"
    )
    return narrowed is not None and subset.items() <= narrowed.items()


def list_grants(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    limit: int | None,
    marker: str | None,
    grant_id: str | None = None,
    grantee: str | None = None,
) -> tuple[KmsKey, list[KeyGrant], str | None]:
    """AWS ListGrants: the key's grants, oldest first, optionally one grant id or one
    grantee's."""
    key = svc.authorized(ctx, "kms:ListGrants", key_id, aliases=False)
    grants = sorted(key.grants.values(), key=lambda g: (g.created_at, g.grant_id))
    if grant_id is not None:
        grants = [g for g in grants if g.grant_id == grant_id]
    if grantee is not None:
        grants = [g for g in grants if g.grantee == grantee]
    found, next_marker = page(
        grants,
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda g: g.grant_id,
        lambda m: _GRANT_ID.fullmatch(m) is not None,
    )
    return key, found, next_marker


def list_retirable_grants(
    svc: KmsService,
    ctx: RequestContext,
    retiring: str | None,
    limit: int | None,
    marker: str | None,
) -> tuple[list[tuple[KmsKey, KeyGrant]], str | None]:
    """AWS ListRetirableGrants: the grants of the caller's account and region that
    ``retiring`` may retire."""
    if retiring is None:
        raise UnsupportedOperationError(
            "RetiringServicePrincipal is not supported by keyplane; name a "
            "RetiringPrincipal."
        )
    _check_principal(retiring, "RetiringPrincipal")
    svc.access.check_account(ctx, "kms:ListRetirableGrants")
    # AWS: the retiring principal is one of the caller's account; its grants may be on
    # keys of any account.
    if _account_of(retiring) != ctx.account:
        raise AccessDeniedError(
            f"User: {ctx.principal} is not authorized to perform: "
            f"kms:ListRetirableGrants for {retiring}, a principal of another account"
        )
    found = sorted(
        (
            (key, grant)
            for key in svc.keys.values()
            if key.region == svc.region
            for grant in key.grants.values()
            if grant.retiring == retiring
        ),
        key=lambda kg: (kg[1].created_at, kg[1].grant_id),
    )
    return page(
        found,
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda kg: kg[1].grant_id,
        lambda m: _GRANT_ID.fullmatch(m) is not None,
    )


async def retire_grant(
    svc: KmsService,
    ctx: RequestContext,
    *,
    grant_token: str | None = None,
    key_id: str | None = None,
    grant_id: str | None = None,
    dry_run: bool = False,
) -> None:
    """AWS RetireGrant: by token, or by key and grant id. Allowed to the grant's
    retiring principal, to its grantee when the grant includes RetireGrant, and to the
    account that created it (by its IAM policies).

    Raises:
        ValidationError: neither a token nor a key id and grant id.
        InvalidGrantTokenError, InvalidGrantIdError: malformed.
        NotFoundError: no such grant.
        AccessDeniedError: the caller may not retire it.
    """
    async with svc.control:
        if grant_token is not None:
            key, grant = grant_of_token(svc, grant_token)
            if grant_id is not None and grant_id != grant.grant_id:
                raise InvalidGrantIdError(
                    "The grant id does not match the grant token."
                )
            if (
                key_id is not None
                and svc.resolve(ctx, key_id, aliases=False) is not key
            ):
                raise NotFoundError(f"Grant ID {grant.grant_id} not found")
        elif grant_id is not None and key_id is not None:
            key, grant = _grant_of(svc.resolve(ctx, key_id, aliases=False), grant_id)
        else:
            raise ValidationError("Grant token OR (grant ID, key ID) must be specified")
        if not _may_retire(svc, ctx, key, grant):
            raise AccessDeniedError(
                f"User: {ctx.principal} is not authorized to perform: "
                f"kms:RetireGrant on resource: {key.arn} because it is neither the "
                "grant's retiring principal, nor its grantee with RetireGrant, nor "
                "allowed by the account that holds the grant"
            )
        if dry_run:
            raise DryRunError(
                "The request would have succeeded, but the DryRun flag is set."
            )
        await _remove(svc, key, grant)


def _may_retire(
    svc: KmsService, ctx: RequestContext, key: KmsKey, grant: KeyGrant
) -> bool:
    """AWS KMS Developer Guide, "Retiring and revoking grants": the retiring
    principal, the grantee when the grant allows RetireGrant, and the account the
    grant is in (the key's, and the one that created it) by its own policies, may
    retire a grant; an explicit Deny of kms:RetireGrant stops every one of them."""
    if svc.access.explain(ctx, "kms:RetireGrant", key).explicit_deny:
        return False
    if ctx.principal in (grant.retiring, _grantee_who_may_retire(grant)):
        return True
    # A retiring principal that is an account lets that account delegate by IAM.
    accounts = {grant.issuing_account, key.account}
    if grant.retiring is not None and grant.retiring.endswith(":root"):
        accounts.add(_account_of(grant.retiring))
    if ctx.account not in accounts:
        return False
    try:
        svc.access.check_account(ctx, "kms:RetireGrant", key.arn)
    except AccessDeniedError:
        return False
    return True


def _grantee_who_may_retire(grant: KeyGrant) -> str | None:
    return grant.grantee if "RetireGrant" in grant.operations else None


def _account_of(principal: str) -> str:
    """The account of a principal ARN (already checked by ``_check_principal``)."""
    return principal.split(":", 5)[4]


async def revoke_grant(
    svc: KmsService,
    ctx: RequestContext,
    *,
    key_id: str,
    grant_id: str,
    dry_run: bool = False,
) -> None:
    """AWS RevokeGrant: needs kms:RevokeGrant on the key.

    Raises:
        InvalidGrantIdError: a malformed grant id.
        NotFoundError: the key has no such grant.
    """
    async with svc.control:
        key = svc.authorized(ctx, "kms:RevokeGrant", key_id, aliases=False)
        key, grant = _grant_of(key, grant_id)
        if dry_run:
            raise DryRunError(
                "The request would have succeeded, but the DryRun flag is set."
            )
        await _remove(svc, key, grant)


def _grant_of(key: KmsKey | None, grant_id: str) -> tuple[KmsKey, KeyGrant]:
    """The key and its grant ``grant_id``.

    Raises:
        InvalidGrantIdError: not a grant id this service makes.
        NotFoundError: no key, or the key has no such grant.
    """
    if not _GRANT_ID.fullmatch(grant_id):
        raise InvalidGrantIdError(f"Invalid grant ID {grant_id}")
    grant = key.grants.get(grant_id) if key is not None else None
    if key is None or grant is None:
        raise NotFoundError(f"Grant ID {grant_id} not found")
    return key, grant


async def _remove(svc: KmsService, key: KmsKey, grant: KeyGrant) -> None:
    await svc.write(svc.store.delete_grant, grant.grant_id)
    del key.grants[grant.grant_id]
    key.access_changed()
    svc.grant_keys.pop(grant.grant_id, None)
