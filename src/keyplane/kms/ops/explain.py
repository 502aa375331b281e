"""ExplainAccess (a keyplane extension): which statement or grant decides whether a
principal may perform an action on a key, without performing it.

It answers what the policy engine would decide for that request, with the request's
encryption context if given. Because the answer shows how a key's policy treats a
principal, asking about a key needs kms:GetKeyPolicy on it; asking about an action no
key governs is for the principal itself, or its account's root.
"""

from __future__ import annotations

from collections.abc import Mapping

from keyplane.errors import AccessDeniedError, NotFoundError, ValidationError
from keyplane.kms._service import KmsService, RequestContext
from keyplane.policy import Decision


def explain_access(
    svc: KmsService,
    ctx: RequestContext,
    *,
    action: str,
    principal: str | None = None,
    key_id: str | None = None,
    encryption_context: Mapping[str, str] | None = None,
) -> tuple[str, str, Decision]:
    """The decision for ``principal`` (default: the caller) doing ``action``.

    Returns:
        The principal's ARN, the resource judged, and the decision.

    Raises:
        ValidationError: an action that is not ``kms:<Operation>``.
        NotFoundError: no such principal, key or alias.
        AccessDeniedError: the caller may not ask this.
    """
    if not action.startswith("kms:") or not action[4:].isalnum():
        raise ValidationError(f"Action must be kms:<Operation>, not {action!r}")
    principal = principal or ctx.principal
    # Everything is authorized before the principal is looked up, so that the answer
    # never tells a caller whether a principal exists unless it may ask about it. An
    # answer shows the subject's identity policies at work: only its own account may
    # see them.
    if principal != ctx.principal and _account_of(principal) != ctx.account:
        raise _refused(ctx, principal, "a principal of another account")
    key = None
    if key_id is not None:
        key = svc.authorized(ctx, "kms:GetKeyPolicy", key_id)
    elif principal != ctx.principal and not ctx.caller.is_root:
        raise _refused(ctx, principal, "only it and its account's root may")
    who = svc.callers.get(principal) if principal != ctx.principal else ctx.caller
    if who is None:
        raise NotFoundError(f"Principal {principal} does not exist")
    subject = RequestContext(who, ctx.region, ctx.request_id, ctx.source_ip)
    decision = svc.access.explain(
        subject, action, key, encryption_context=encryption_context
    )
    return who.arn, key.arn if key is not None else "*", decision


def _account_of(principal: str) -> str:
    parts = principal.split(":", 5)
    return parts[4] if len(parts) == 6 else ""


def _refused(ctx: RequestContext, principal: str, why: str) -> AccessDeniedError:
    return AccessDeniedError(
        f"User: {ctx.principal} is not authorized to explain the access of "
        f"{principal}: {why}"
    )
