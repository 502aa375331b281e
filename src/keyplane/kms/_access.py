"""Authorization: what each request is judged by, and the decisions worth keeping.

``keyplane.policy`` decides; this module gathers what it decides on: the key's parsed
key policy and grants, the caller's identity policies, and the values of the condition
keys (computed only when a condition asks for one). A decision that no condition or
grant constraint took part in holds for every request of that caller and action on
that key, so it is kept on the key until the key's policy or grants change: the data
plane then pays one dict lookup for authorization.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from keyplane.errors import AccessDeniedError
from keyplane.kms._model import Alias, KmsKey
from keyplane.policy import (
    Decision,
    PolicyDocument,
    Request,
    access_denied_message,
    evaluate,
)

if TYPE_CHECKING:
    from keyplane.kms._service import RequestContext

_log = logging.getLogger("keyplane.policy")

# AWS KMS Developer Guide, "Permissions reference": the operations whose "Cross-account
# use" column says yes. Any other operation on another account's key is denied.
CROSS_ACCOUNT_ACTIONS: Final = frozenset(
    f"kms:{name}"
    for name in (
        "CreateGrant",
        "Decrypt",
        "DeriveSharedSecret",
        "DescribeKey",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "ListGrants",
        "ReEncryptFrom",
        "ReEncryptTo",
        "RetireGrant",
        "RevokeGrant",
        "Sign",
        "Verify",
        "VerifyMac",
    )
)

# Decisions kept per key; past this many (callers x actions) the cache starts over
# rather than grow without bound.
MAX_CACHED_DECISIONS: Final = 4096

_NOT_CROSS_ACCOUNT: Final = Decision(
    allowed=False,
    source="none",
    statement=None,
    grant_id=None,
    explicit_deny=False,
    context_free=True,
    reason="denied: this operation cannot be used on a key of another account",
)


class Authorizer:
    """Asks the policy engine, before every operation, whether the caller may act."""

    def __init__(
        self,
        clock: Callable[[], float],
        aliases_of: Callable[[KmsKey], list[Alias]],
        enabled: bool = True,
    ) -> None:
        self.clock = clock
        self.aliases_of = aliases_of
        # Off only when the server runs without authentication (tests and benchmarks
        # that measure its cost): then there is no caller to judge.
        self.enabled = enabled

    def check_key(
        self,
        ctx: RequestContext,
        action: str,
        key: KmsKey,
        *,
        encryption_context: Mapping[str, str] | None = None,
        values: Mapping[str, object] | None = None,
    ) -> Decision | None:
        """Allow ``action`` on ``key``, or raise.

        Args:
            values: condition keys this request sets beyond the ones every request
                has (lower-case names, e.g. ``kms:grantoperations``).

        Returns:
            The decision that allowed it (None when authorization is off).

        Raises:
            AccessDeniedError: with AWS's message naming principal, action and key.
        """
        if not self.enabled:
            return None
        cached = key.decisions.get((ctx.caller.arn, action))
        if (
            cached is not None
            and cached.allowed
            and not _log.isEnabledFor(logging.DEBUG)
        ):
            return cached
        request = self._request(ctx, action, key, values, encryption_context)
        if cached is not None:
            decision = cached
        elif key.account != ctx.account and action not in CROSS_ACCOUNT_ACTIONS:
            decision = _NOT_CROSS_ACCOUNT
        else:
            decision = evaluate(request, key.policy_document(), key.policy_grants())
            if decision.context_free:
                if len(key.decisions) >= MAX_CACHED_DECISIONS:
                    key.decisions.clear()
                key.decisions[(ctx.caller.arn, action)] = decision
        self._conclude(ctx, request, decision)
        return decision

    def check_account(
        self,
        ctx: RequestContext,
        action: str,
        resource: str = "*",
        *,
        values: Mapping[str, object] | None = None,
    ) -> None:
        """Allow an action that no key policy governs (CreateKey, ListKeys, the alias
        side of alias operations...): only the caller's identity policies decide.

        Raises:
            AccessDeniedError: with AWS's message.
        """
        if not self.enabled:
            return
        request = self._request(ctx, action, None, values, None, resource)
        self._conclude(ctx, request, evaluate(request, None))

    def allows_with(
        self, ctx: RequestContext, action: str, key: KmsKey, document: PolicyDocument
    ) -> bool:
        """Whether ``document``, were it the key's policy, would allow ``action``
        (the lockout safety check of CreateKey and PutKeyPolicy)."""
        request = self._request(ctx, action, key, None, None)
        return evaluate(request, document, key.policy_grants()).allowed

    def explain(
        self,
        ctx: RequestContext,
        action: str,
        key: KmsKey | None,
        *,
        encryption_context: Mapping[str, str] | None = None,
    ) -> Decision:
        """The decision for ``action`` without raising or caching (for ExplainAccess),
        made as ``check_key`` or ``check_account`` would make it."""
        request = self._request(ctx, action, key, None, encryption_context)
        if key is None:
            return evaluate(request, None)
        if key.account != ctx.account and action not in CROSS_ACCOUNT_ACTIONS:
            return _NOT_CROSS_ACCOUNT
        return evaluate(request, key.policy_document(), key.policy_grants())

    def _request(
        self,
        ctx: RequestContext,
        action: str,
        key: KmsKey | None,
        values: Mapping[str, object] | None,
        encryption_context: Mapping[str, str] | None,
        resource: str = "*",
    ) -> Request:
        """The request the policy engine judges: on ``key``, or else on ``resource``
        of the caller's own account."""
        return Request(
            ctx.caller,
            action,
            key.arn if key is not None else resource,
            key.account if key is not None else ctx.account,
            _Conditions(self, ctx, key, values),
            encryption_context,
        )

    def _conclude(
        self, ctx: RequestContext, request: Request, decision: Decision
    ) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "request %s: %s %s on %s: %s",
                ctx.request_id,
                request.caller.arn,
                request.action,
                request.resource,
                decision.reason,
            )
        if not decision.allowed:
            raise AccessDeniedError(access_denied_message(request, decision))


class _Conditions(Mapping[str, object]):
    """The condition keys of one request, each computed only if a condition asks.

    Names are lower-case, as the policy engine looks them up.
    """

    __slots__ = ("_authorizer", "_ctx", "_key", "_values")

    def __init__(
        self,
        authorizer: Authorizer,
        ctx: RequestContext,
        key: KmsKey | None,
        values: Mapping[str, object] | None,
    ) -> None:
        self._authorizer = authorizer
        self._ctx = ctx
        self._key = key
        self._values = values or {}

    def __getitem__(self, name: str) -> object:
        given = self._values.get(name)
        if given is not None:
            return given
        ctx, key = self._ctx, self._key
        if name in ("kms:calleraccount", "aws:principalaccount"):
            return ctx.account
        if name == "aws:principalarn":
            return ctx.caller.arn
        if name == "aws:principaltype":
            return "Account" if ctx.caller.is_root else "User"
        if name == "aws:sourceip" and ctx.source_ip:
            return ctx.source_ip
        if name == "aws:securetransport":
            return False  # keyplane serves plain HTTP
        if name == "aws:currenttime":
            now = datetime.fromtimestamp(self._authorizer.clock(), UTC)
            return now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if name == "aws:epochtime":
            return int(self._authorizer.clock())
        if key is not None:
            if name == "kms:resourcealiases":
                return [a.name for a in self._authorizer.aliases_of(key)]
            found = _key_condition(key, name)
            if found is not None:
                return found
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        for name in self._names():
            try:
                self[name]
            except KeyError:
                continue
            yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _names(self) -> list[str]:
        names = [
            *self._values,
            "kms:calleraccount",
            "aws:principalaccount",
            "aws:principalarn",
            "aws:principaltype",
            "aws:sourceip",
            "aws:securetransport",
            "aws:currenttime",
            "aws:epochtime",
        ]
        if self._key is not None:
            names += ["kms:keyspec", "kms:keyusage", "kms:keyorigin", "kms:multiregion"]
            names += ["kms:resourcealiases"]
            names += [f"aws:resourcetag/{t.lower()}" for t in self._key.tags]
        return names


def _key_condition(key: KmsKey, name: str) -> object | None:
    if name == "kms:keyspec":
        return key.key_spec
    if name == "kms:keyusage":
        return key.key_usage
    if name == "kms:keyorigin":
        return key.origin
    if name == "kms:multiregion":
        return False
    if name.startswith("aws:resourcetag/"):
        wanted = name[len("aws:resourcetag/") :]
        # Condition key names are case-insensitive, so the tag key is too.
        for tag, value in key.tags.items():
            if tag.lower() == wanted:
                return value
    return None
