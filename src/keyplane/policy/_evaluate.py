"""Authorization decisions, made in the order AWS KMS documents.

Owns the evaluation order of "Determining access to an AWS KMS key" (AWS KMS Developer
Guide, policy-evaluation.md): an explicit Deny anywhere wins; then a key policy Allow,
which for an account principal only delegates to the caller's IAM policies and for a
caller of another account needs that account's IAM policies too; then grants; else an
implicit deny. Actions that no key authorizes (CreateKey, ListKeys, ...) are decided by
IAM policies alone. Pure and synchronous: time and everything else about the request
come in through :class:`Request`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from keyplane.policy._conditions import Context, EncryptionContext, Predicate
from keyplane.policy._document import PolicyDocument, Principals, Statement
from keyplane.policy._model import Decision, Grant, Request

# GrantConstraints (AWS KMS API Reference): constraints apply only to the operations
# that take an encryption context; DescribeKey, RetireGrant, CreateGrant and the rest
# ignore them.
CONTEXT_OPERATIONS: Final = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)
_CONTEXT_OPERATIONS_LOWER: Final = frozenset(op.lower() for op in CONTEXT_OPERATIONS)

# How a key policy statement's Principal element reaches the caller.
_NOT: Final = 0
_DIRECT: Final = 1  # names the caller (or everyone): the key policy alone allows
_DELEGATED: Final = 2  # names the caller's account: IAM policies must allow too

_ROLE_KEY_CACHE: dict[str, str | None] = {}
_ROLE_KEY_CACHE_MAX: Final = 4096


def evaluate(
    request: Request, key_policy: PolicyDocument | None, grants: Sequence[Grant] = ()
) -> Decision:
    """Decide whether ``request`` is allowed.

    Args:
        request: The caller, action, resource and condition context.
        key_policy: The key's policy, or ``None`` for an action that IAM policies alone
            authorize (CreateKey, ListKeys, ListAliases, GenerateRandom, the alias side
            of CreateAlias/UpdateAlias/DeleteAlias).
        grants: The key's grants; ignored when ``key_policy`` is ``None``.

    Returns:
        The decision, naming the statement or grant that decided it.
    """
    caller = request.caller
    arn = caller.arn
    account = caller.account
    is_root = arn.endswith(":root")
    role_key = _role_key(arn)
    action = request.action.lower()
    resource = request.resource
    ctx = request.context
    ec = request.encryption_context
    identity_policies = caller.identity_policies
    consulted = False

    # 1. An explicit Deny in the key policy or in any identity policy wins, whatever
    # else allows; IAM Denies apply across accounts too.
    if key_policy is not None:
        for st in key_policy.denies:
            if not st.targets(action, resource):
                continue
            principals = st.principals
            if principals is not None and (
                _reach(principals, st.not_principal, arn, account, is_root, role_key)
                == _NOT
            ):
                continue
            if st.conditions:
                consulted = True
                if not _hold(st.conditions, ctx, ec):
                    continue
            return st.decisions[consulted]
    for policy in identity_policies:
        for st in policy.denies:
            if not st.targets(action, resource):
                continue
            if st.conditions:
                consulted = True
                if not _hold(st.conditions, ctx, ec):
                    continue
            return st.decisions[consulted]

    if key_policy is None:
        return _iam_only(request, account, is_root, action, consulted)

    # 2. Key policy Allows. A statement naming the caller decides on its own, unless
    # the caller belongs to another account; one naming the caller's account only
    # delegates to IAM. Both wait for the identity policies, checked once, below.
    pending: Statement | None = None
    same_account = account == request.resource_account
    for st in key_policy.allows:
        if not st.targets(action, resource):
            continue
        principals = st.principals
        reach = (
            _DIRECT
            if principals is None
            else _reach(principals, st.not_principal, arn, account, is_root, role_key)
        )
        if reach == _NOT:
            continue
        if st.conditions:
            consulted = True
            if not _hold(st.conditions, ctx, ec):
                continue
        # AWS's root user holds every permission of its own account, so it never
        # needs an identity policy to accept what a key policy grants it.
        if reach == _DIRECT and (same_account or is_root):
            return st.decisions[consulted]
        if pending is None:
            pending = st
    if pending is not None:
        read, via = _identity_allow(identity_policies, action, resource, ctx, ec)
        consulted = consulted or read
        if via is not None:
            return Decision(
                True,
                "key-policy",
                pending.label,
                None,
                False,
                not consulted,
                f"allowed by key policy statement '{pending.label}' together with "
                f"identity policy statement '{via.label}'",
            )

    # 3. Grants for the caller that include the operation and whose constraints hold.
    if grants and action.startswith("kms:"):
        operation = request.action[4:]
        operation_lower = action[4:]
        constrained = operation_lower in _CONTEXT_OPERATIONS_LOWER
        for grant in grants:
            if grant.grantee != arn and not _role_covers(grant.grantee, arn, role_key):
                continue
            if operation not in grant.operations and not any(
                op.lower() == operation_lower for op in grant.operations
            ):
                continue
            if constrained and (
                grant.encryption_context_equals is not None
                or grant.encryption_context_subset is not None
            ):
                consulted = True
                if not _constraints_hold(grant, ec):
                    continue
            return Decision(
                True,
                "grant",
                None,
                grant.grant_id,
                False,
                not consulted,
                f"allowed by grant '{grant.grant_id}'",
            )

    # 4. Nothing allowed: an implicit deny.
    if pending is not None:
        return Decision(
            False,
            "identity-policy",
            None,
            None,
            False,
            not consulted,
            f"denied: key policy statement '{pending.label}' allows {request.action} "
            "only with an identity policy of the caller that allows it too, "
            "and none does",
        )
    return Decision(
        False,
        "none",
        None,
        None,
        False,
        not consulted,
        f"denied: no statement in the key policy, the caller's identity policies or a "
        f"grant allows {request.action}",
    )


def access_denied_message(request: Request, decision: Decision) -> str:
    """AWS's AccessDeniedException text for a denied request.

    The wording follows the IAM User Guide, "Troubleshoot access denied error
    messages": an explicit deny reports ``with an explicit deny in a <type> policy``
    and an implicit one ``because no <type> policy allows the <action> action``, where
    the key policy is AWS KMS's resource-based policy.

    Args:
        request: The request that was denied.
        decision: Its decision, from :func:`evaluate`.

    Returns:
        The message, naming the caller, the action and the resource.

    Raises:
        ValueError: ``decision`` allows the request (a caller bug).
    """
    if decision.allowed:
        raise ValueError("access_denied_message needs a denial")
    head = (
        f"User: {request.caller.arn} is not authorized to perform: {request.action} "
        f"on resource: {request.resource}"
    )
    if decision.explicit_deny:
        if decision.source == "identity-policy":
            return f"{head} with an explicit deny in an identity-based policy"
        return f"{head} with an explicit deny in a resource-based policy"
    kind = (
        "identity-based" if decision.source == "identity-policy" else "resource-based"
    )
    return f"{head} because no {kind} policy allows the {request.action} action"


def _iam_only(
    request: Request, account: str, is_root: bool, action: str, consulted: bool
) -> Decision:
    name = request.action
    if account != request.resource_account:
        return Decision(
            False,
            "identity-policy",
            None,
            None,
            False,
            not consulted,
            f"denied: {name} on a resource of account {request.resource_account} is "
            "for principals of that account only",
        )
    if is_root:
        return Decision(
            True,
            "identity-policy",
            None,
            None,
            False,
            not consulted,
            f"allowed: the account root needs no identity policy for {name}",
        )
    read, via = _identity_allow(
        request.caller.identity_policies,
        action,
        request.resource,
        request.context,
        request.encryption_context,
    )
    consulted = consulted or read
    if via is not None:
        return via.decisions[consulted]
    return Decision(
        False,
        "identity-policy",
        None,
        None,
        False,
        not consulted,
        f"denied: no identity policy statement of the caller allows {name}",
    )


def _identity_allow(
    policies: tuple[PolicyDocument, ...],
    action: str,
    resource: str,
    ctx: Context,
    ec: EncryptionContext,
) -> tuple[bool, Statement | None]:
    """The first identity policy Allow that applies, and whether a condition was
    read on the way."""
    consulted = False
    for policy in policies:
        for st in policy.allows:
            if not st.targets(action, resource):
                continue
            if st.conditions:
                consulted = True
                if not _hold(st.conditions, ctx, ec):
                    continue
            return consulted, st
    return consulted, None


def _hold(
    conditions: tuple[Predicate, ...], ctx: Context, ec: EncryptionContext
) -> bool:
    # A plain loop rather than all(...): no generator per call on the hot path.
    for condition in conditions:  # noqa: SIM110
        if not condition(ctx, ec):
            return False
    return True


def _reach(
    principals: Principals,
    not_principal: bool,
    arn: str,
    account: str,
    is_root: bool,
    role_key: str | None,
) -> int:
    if not_principal:
        # IAM User Guide, NotPrincipal: a principal is excluded only when every
        # identity the request carries is listed: the account, then the user or role,
        # then the role session. Listing a user without its account excludes no one.
        session = role_key is not None and ":assumed-role/" in arn
        excluded = principals.wildcard or (
            account in principals.accounts
            and (
                is_root
                or (
                    arn in principals.arns
                    and (not session or role_key in principals.roles)
                )
            )
        )
        return _NOT if excluded else _DIRECT
    if (
        principals.wildcard
        or arn in principals.arns
        or (role_key is not None and role_key in principals.roles)
    ):
        return _DIRECT
    if account in principals.accounts:
        # The account principal means the account root itself, and for everyone else
        # in the account it delegates to their IAM policies (key-policy-default.md).
        return _DIRECT if is_root else _DELEGATED
    return _NOT


def _role_key(arn: str) -> str | None:
    """``<account>:<role name>`` for a role or role-session ARN, else ``None``."""
    try:
        return _ROLE_KEY_CACHE[arn]
    except KeyError:
        pass
    key = None
    if arn.startswith("arn:aws:iam::") and ":role/" in arn:
        account, _, path = arn[len("arn:aws:iam::") :].partition(":role/")
        key = f"{account}:{path.rsplit('/', 1)[-1]}"
    elif arn.startswith("arn:aws:sts::") and ":assumed-role/" in arn:
        account, _, rest = arn[len("arn:aws:sts::") :].partition(":assumed-role/")
        key = f"{account}:{rest.split('/', 1)[0]}"
    if len(_ROLE_KEY_CACHE) >= _ROLE_KEY_CACHE_MAX:
        _ROLE_KEY_CACHE.clear()
    _ROLE_KEY_CACHE[arn] = key
    return key


def _role_covers(grantee: str, arn: str, role_key: str | None) -> bool:
    """Whether ``grantee`` is the IAM role of which the caller ``arn`` is a session."""
    return (
        role_key is not None
        and ":assumed-role/" in arn
        and grantee.startswith("arn:aws:iam::")
        and _role_key(grantee) == role_key
    )


def _fold(pairs: Mapping[str, str]) -> dict[str, str] | None:
    """Pairs keyed by lower-cased key, or ``None`` if two keys differ only by case."""
    folded = {k.lower(): v for k, v in pairs.items()}
    return folded if len(folded) == len(pairs) else None


def _constraints_hold(grant: Grant, ec: EncryptionContext) -> bool:
    # GrantConstraints (AWS KMS API Reference): "in a grant constraint, the key in each
    # key-value pair is not case sensitive, but the value is case sensitive." A request
    # without an encryption context has the empty one.
    request = ec or {}
    equals = grant.encryption_context_equals
    if equals is not None:
        mine, theirs = _fold(equals), _fold(request)
        if mine is None or theirs is None or mine != theirs:
            return False
    subset = grant.encryption_context_subset
    if subset is not None:
        for key, value in subset.items():
            wanted = key.lower()
            if not any(k.lower() == wanted and v == value for k, v in request.items()):
                return False
    return True
