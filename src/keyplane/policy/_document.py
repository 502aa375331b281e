"""Key policies and identity policies: validation, and their compiled form.

Owns the policy grammar (which JSON is a policy, which principals, actions, resources
and condition blocks are well formed) and compiles each statement once, so that
evaluation does set lookups and pre-built regular expressions only. It must stay pure:
no I/O, no clock, and nothing of keyplane but ``keyplane.errors``.

Error texts are AWS's: IAM's "Syntax errors in policy." for anything structurally wrong,
and KMS's own texts for principals.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from keyplane.errors import LimitExceededError, MalformedPolicyDocumentError
from keyplane.policy._conditions import SYNTAX_ERROR, Predicate, compile_conditions
from keyplane.policy._model import Decision
from keyplane.policy._wildcard import compile_wildcards, has_wildcard

# AWS KMS resource quotas, "Key policy document size": 32 KiB, counted in UTF-8 bytes.
KEY_POLICY_MAX_BYTES: Final = 32768

VERSIONS: Final = frozenset({"2012-10-17", "2008-10-17"})

_DUPLICATE_SID: Final = "Statement IDs (SID) in a single policy must be unique."
_INVALID_PRINCIPALS: Final = (
    "Policy contains a statement with one or more invalid principals."
)
_NO_PRINCIPAL: Final = "Policy contains a statement with no principal."
_PRINCIPAL_IN_IDENTITY_POLICY: Final = "Policy document should not specify a principal."
# AWS gives no message text of its own for this quota that we could find.
_TOO_LARGE: Final = (
    f"The key policy document exceeds the {KEY_POLICY_MAX_BYTES}-byte quota "
    "for key policy documents."
)

_TOP_ELEMENTS: Final = frozenset({"Version", "Id", "Statement"})
_STATEMENT_ELEMENTS: Final = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_PRINCIPAL_TYPES: Final = frozenset({"AWS", "Service", "Federated"})

# IAM user and role names (and their path segments): letters, digits and +=,.@_-.
_NAME: Final = r"[\w+=,.@-]+"
_PATH_NAME: Final = rf"(?:{_NAME}/)*{_NAME}"
_AWS_PRINCIPAL: Final = re.compile(
    rf"(?P<bare>\d{{12}})"
    rf"|arn:aws:iam::(?P<acct>\d{{12}}):"
    rf"(?:(?P<root>root)|user/{_PATH_NAME}|role/(?:{_NAME}/)*(?P<role>{_NAME}))"
    rf"|arn:aws:sts::\d{{12}}:assumed-role/{_NAME}/{_NAME}",
    re.ASCII,
)

Kind = Literal["key", "identity"]


@dataclass(frozen=True, slots=True)
class Patterns:
    """A compiled Action or Resource list: exact names in a set, wildcards in a
    regular expression."""

    any: bool
    exact: frozenset[str]
    regex: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Principals:
    """A compiled Principal or NotPrincipal element.

    ``roles`` holds ``<account>:<role name>`` for every role named, so sessions of a
    role (``assumed-role/<name>/<session>``) match it as they do in AWS.
    """

    wildcard: bool
    arns: frozenset[str]
    accounts: frozenset[str]
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled statement.

    ``actions`` or ``resources`` is ``None`` when the statement has neither the element
    nor its Not form: AWS accepts such a statement but it never applies.
    ``decisions`` are this statement's own outcomes, built once: index 0 when no
    condition was consulted on the way, index 1 when one was.
    """

    index: int
    sid: str | None
    label: str
    allow: bool
    principals: Principals | None
    not_principal: bool
    actions: Patterns | None
    not_action: bool
    resources: Patterns | None
    not_resource: bool
    conditions: tuple[Predicate, ...]
    decisions: tuple[Decision, Decision]

    def targets(self, action: str, resource: str) -> bool:
        """Whether the statement's actions and resources cover the request.

        Args:
            action: The action, lower-cased.
            resource: The resource ARN, or ``*``.
        """
        # A name is in a Patterns list when the list is "*", holds it exactly, or one
        # of its wildcards matches. Written out twice rather than as a method: this
        # runs for every statement of every request, and the calls cost a quarter of
        # evaluate's time.
        actions, resources = self.actions, self.resources
        if actions is None or resources is None:
            return False
        regex = actions.regex
        hit = (
            actions.any
            or action in actions.exact
            or (regex is not None and regex.fullmatch(action) is not None)
        )
        if hit is self.not_action:
            return False
        regex = resources.regex
        hit = (
            resources.any
            or resource in resources.exact
            or (regex is not None and regex.fullmatch(resource) is not None)
        )
        return hit is not self.not_resource


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A parsed, validated and compiled policy. Build it with :func:`parse_policy`.

    Two documents are equal when their kind and text are; the compiled statements are
    derived from those.
    """

    text: str
    kind: Kind
    version: str
    policy_id: str | None
    statements: tuple[Statement, ...] = field(repr=False, compare=False)
    allows: tuple[Statement, ...] = field(repr=False, compare=False)
    denies: tuple[Statement, ...] = field(repr=False, compare=False)

    @property
    def sids(self) -> tuple[str | None, ...]:
        """Every statement's Sid in document order (``None`` where it has none)."""
        return tuple(s.sid for s in self.statements)


def parse_policy(text: str, *, kind: Kind) -> PolicyDocument:
    """Parse, validate and compile a key policy or an identity (IAM) policy.

    Statements without Action/NotAction or Resource/NotResource are accepted and never
    apply, as AWS KMS documents for key policies.

    Args:
        text: The policy document as JSON text.
        kind: ``"key"`` for a key policy (every statement names a Principal or
            NotPrincipal), ``"identity"`` for an IAM policy (none may).

    Returns:
        The compiled document, ready to be evaluated any number of times.

    Raises:
        LimitExceededError: A key policy larger than ``KEY_POLICY_MAX_BYTES`` bytes of
            UTF-8.
        MalformedPolicyDocumentError: The text is not a valid policy of that kind.
        ValueError: ``kind`` is neither ``"key"`` nor ``"identity"`` (a caller bug).
    """
    if kind not in ("key", "identity"):
        raise ValueError(f"unknown policy kind {kind!r}")
    if kind == "key" and _utf8_length(text) > KEY_POLICY_MAX_BYTES:
        raise LimitExceededError(_TOO_LARGE)
    try:
        root = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedPolicyDocumentError(SYNTAX_ERROR) from exc
    if not isinstance(root, dict) or not _TOP_ELEMENTS.issuperset(root):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    version = root.get("Version")
    if not isinstance(version, str) or version not in VERSIONS:
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    policy_id = root.get("Id")
    if "Id" in root and not isinstance(policy_id, str):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    raw_statements = root.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)

    statements = tuple(_statement(i, raw, kind) for i, raw in enumerate(raw_statements))
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise MalformedPolicyDocumentError(_DUPLICATE_SID)
    return PolicyDocument(
        text=text,
        kind=kind,
        version=version,
        policy_id=policy_id,
        statements=statements,
        allows=tuple(s for s in statements if s.allow),
        denies=tuple(s for s in statements if not s.allow),
    )


def _utf8_length(text: str) -> int:
    # Lone surrogates are invalid JSON text anyway; count them rather than fail here so
    # the size check never raises anything but LimitExceededError.
    return len(text.encode("utf-8", "surrogatepass"))


def _statement(index: int, raw: object, kind: Kind) -> Statement:
    if not isinstance(raw, dict) or not _STATEMENT_ELEMENTS.issuperset(raw):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    for element, negated in (
        ("Principal", "NotPrincipal"),
        ("Action", "NotAction"),
        ("Resource", "NotResource"),
    ):
        if element in raw and negated in raw:
            raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    sid = raw.get("Sid")
    if "Sid" in raw and not isinstance(sid, str):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)

    principals = None
    not_principal = "NotPrincipal" in raw
    if kind == "identity":
        if "Principal" in raw or not_principal:
            raise MalformedPolicyDocumentError(_PRINCIPAL_IN_IDENTITY_POLICY)
    else:
        if "Principal" not in raw and not not_principal:
            raise MalformedPolicyDocumentError(_NO_PRINCIPAL)
        principals = _principals(raw["NotPrincipal" if not_principal else "Principal"])

    not_action = "NotAction" in raw
    action_list = _names(raw, "NotAction" if not_action else "Action")
    actions = None if action_list is None else _patterns(action_list, lower=True)
    not_resource = "NotResource" in raw
    resource_list = _names(raw, "NotResource" if not_resource else "Resource")
    resources = None if resource_list is None else _patterns(resource_list, lower=False)
    conditions = compile_conditions(raw["Condition"]) if "Condition" in raw else ()

    label = sid if sid else f"#{index}"
    allow = effect == "Allow"
    return Statement(
        index=index,
        sid=sid or None,
        label=label,
        allow=allow,
        principals=principals,
        not_principal=not_principal,
        actions=actions,
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        conditions=conditions,
        decisions=_decisions(kind, label, allow),
    )


def _decisions(kind: Kind, label: str, allow: bool) -> tuple[Decision, Decision]:
    source = "key-policy" if kind == "key" else "identity-policy"
    what = "key policy" if kind == "key" else "identity policy"
    reason = f"{'allowed' if allow else 'denied'} by {what} statement '{label}'"
    return (
        Decision(allow, source, label, None, not allow, True, reason),
        Decision(allow, source, label, None, not allow, False, reason),
    )


def _names(statement: dict[str, object], element: str) -> tuple[str, ...] | None:
    """An Action/Resource element as a tuple of strings, ``None`` when it is absent."""
    if element not in statement:
        return None
    raw = statement[element]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    return tuple(items)


def _patterns(names: tuple[str, ...], *, lower: bool) -> Patterns:
    # IAM action names are case-insensitive; resource ARNs are compared as written.
    if lower:
        names = tuple(n.lower() for n in names)
    wild = [n for n in names if has_wildcard(n)]
    return Patterns(
        any="*" in names,
        exact=frozenset(n for n in names if not has_wildcard(n)),
        regex=compile_wildcards(wild),
    )


def _principals(raw: object) -> Principals:
    if raw == "*":
        return Principals(True, frozenset(), frozenset(), frozenset())
    if not isinstance(raw, dict) or not raw or not _PRINCIPAL_TYPES.issuperset(raw):
        raise MalformedPolicyDocumentError(_INVALID_PRINCIPALS)
    wildcard = False
    arns: set[str] = set()
    accounts: set[str] = set()
    roles: set[str] = set()
    for principal_type, value in raw.items():
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(i, str) and i for i in items)
        ):
            raise MalformedPolicyDocumentError(_INVALID_PRINCIPALS)
        if principal_type != "AWS":
            # Service and federated principals are valid but no keyplane caller is
            # one, so they are kept out of the compiled form and never match.
            continue
        for item in items:
            if item == "*":
                wildcard = True
                continue
            found = _AWS_PRINCIPAL.fullmatch(item)
            if found is None:
                raise MalformedPolicyDocumentError(_INVALID_PRINCIPALS)
            if found["bare"]:
                accounts.add(found["bare"])
            elif found["root"]:
                accounts.add(found["acct"])
            else:
                arns.add(item)
                if found["role"]:
                    roles.add(f"{found['acct']}:{found['role']}")
    return Principals(wildcard, frozenset(arns), frozenset(accounts), frozenset(roles))
