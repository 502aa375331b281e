"""Key policy operations: PutKeyPolicy, GetKeyPolicy, ListKeyPolicies, and the checks
every new key policy passes (CreateKey's too)."""

from __future__ import annotations

from typing import Final

from keyplane.errors import MalformedPolicyDocumentError, NotFoundError
from keyplane.kms._model import KmsKey
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import Op, require
from keyplane.policy import PolicyDocument, parse_policy

# A key has exactly one policy, and AWS names it "default".
POLICY_NAME: Final = "default"
LOCKOUT_MESSAGE: Final = (
    "The new key policy will not allow you to update the key policy in the future."
)


def checked_policy(
    svc: KmsService,
    ctx: RequestContext,
    key: KmsKey,
    text: str,
    *,
    bypass_lockout_check: bool,
) -> PolicyDocument:
    """Parse a key policy for ``key`` and refuse one that would lock the caller out.

    Raises:
        MalformedPolicyDocumentError: not a valid key policy, or (unless bypassed) one
            under which the caller could not change the policy again.
        LimitExceededError: larger than AWS's key policy size quota.
    """
    document = parse_policy(text, kind="key")
    if not bypass_lockout_check and not svc.access.allows_with(
        ctx, "kms:PutKeyPolicy", key, document
    ):
        raise MalformedPolicyDocumentError(LOCKOUT_MESSAGE)
    return document


def _check_name(policy_name: str) -> None:
    if policy_name != POLICY_NAME:
        raise NotFoundError(f"No such policy exists: {policy_name}")


async def put_key_policy(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    policy: str,
    *,
    policy_name: str | None = None,
    bypass_lockout_check: bool = False,
) -> None:
    """AWS PutKeyPolicy: replace the key's policy; decisions made under the old one
    are forgotten at once."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:PutKeyPolicy", key_id, aliases=False)
        _check_name(policy_name or POLICY_NAME)
        require(key.state, Op.DESCRIBE, key.arn)
        document = checked_policy(
            svc, ctx, key, policy, bypass_lockout_check=bypass_lockout_check
        )
        record = key.record(policy=policy)
        await svc.write(svc.store.update_key, record)
        key.apply(record)
        key.parsed_policy = document


def get_key_policy(
    svc: KmsService, ctx: RequestContext, key_id: str, policy_name: str | None
) -> str:
    """AWS GetKeyPolicy: the policy text exactly as it was set."""
    key = svc.authorized(ctx, "kms:GetKeyPolicy", key_id, aliases=False)
    _check_name(policy_name or POLICY_NAME)
    require(key.state, Op.DESCRIBE, key.arn)
    return key.policy


def list_key_policies(svc: KmsService, ctx: RequestContext, key_id: str) -> list[str]:
    """AWS ListKeyPolicies: always the one name, "default"."""
    key = svc.authorized(ctx, "kms:ListKeyPolicies", key_id, aliases=False)
    require(key.state, Op.DESCRIBE, key.arn)
    return [POLICY_NAME]
