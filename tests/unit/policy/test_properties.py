"""Properties of the engine over generated policies, requests and grants.

The evaluation order makes Deny monotone (more Denies never allow more) and Allow
monotone (fewer Allows never allow more); evaluate is a pure function; a decision
marked context-free holds under any context; and parse_policy fails only with the two
policy errors, whatever text it is given.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.errors import LimitExceededError, MalformedPolicyDocumentError
from keyplane.policy import (
    Caller,
    Grant,
    PolicyDocument,
    Request,
    evaluate,
    parse_policy,
)

A = "111122223333"
B = "444455556666"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:us-east-1:{B}:key/ffffffff-0000-0000-0000-000000000000"
ROOT_A = f"arn:aws:iam::{A}:root"
ROOT_B = f"arn:aws:iam::{B}:root"
ALICE = f"arn:aws:iam::{A}:user/alice"
APP_ROLE = f"arn:aws:iam::{A}:role/AppRole"
APP_SESSION = f"arn:aws:sts::{A}:assumed-role/AppRole/s-1"
BOB = f"arn:aws:iam::{B}:user/bob"
CALLERS = [ROOT_A, ALICE, APP_ROLE, APP_SESSION, ROOT_B, BOB]

PRINCIPALS = st.sampled_from(
    [
        "*",
        {"AWS": "*"},
        {"AWS": ROOT_A},
        {"AWS": A},
        {"AWS": ALICE},
        {"AWS": APP_ROLE},
        {"AWS": APP_SESSION},
        {"AWS": ROOT_B},
        {"AWS": BOB},
        {"AWS": [ALICE, ROOT_B]},
        {"Service": "ec2.amazonaws.com"},
    ]
)
ACTIONS = st.sampled_from(
    [
        "*",
        "kms:*",
        "kms:Encrypt",
        ["kms:Encrypt", "kms:Decrypt"],
        "kms:ReEncrypt*",
        "kms:Describe*",
        "kms:CreateKey",
        "kms:?ecrypt",
    ]
)
RESOURCES = st.sampled_from(
    ["*", KEY, OTHER_KEY, f"arn:aws:kms:*:{A}:key/*", f"arn:aws:kms:*:{B}:key/*"]
)
CONDITIONS = st.sampled_from(
    [
        {"StringEquals": {"kms:CallerAccount": A}},
        {"StringNotEquals": {"kms:CallerAccount": A}},
        {"Bool": {"kms:GrantIsForAWSResource": True}},
        {"StringEquals": {"kms:EncryptionContext:app": "x"}},
        {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app"]}},
        {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "a*"}},
        {"Null": {"kms:EncryptionContextKeys": "false"}},
        {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"NotIpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}},
        {"DateLessThan": {"aws:CurrentTime": "2025-01-01T00:00:00Z"}},
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}},
        {"NumericLessThanEquals": {"kms:RotationPeriodInDays": "180"}},
    ]
)
CONTEXTS = st.fixed_dictionaries(
    {},
    optional={
        "kms:calleraccount": st.sampled_from([A, B]),
        "kms:grantisforawsresource": st.booleans(),
        "aws:sourceip": st.sampled_from(["10.1.2.3", "192.0.2.1", "2001:db8::1"]),
        "aws:currenttime": st.sampled_from(
            ["2024-06-01T12:00:00Z", "2026-01-01T00:00:00Z"]
        ),
        "aws:principalarn": st.sampled_from(CALLERS),
        "kms:rotationperiodindays": st.integers(0, 400),
    },
)
ENCRYPTION_CONTEXTS = st.sampled_from(
    [None, {}, {"app": "x"}, {"App": "y", "other": "z"}, {"APP": "x"}]
)
OPERATIONS = ["Encrypt", "Decrypt", "DescribeKey", "ReEncryptFrom", "CreateGrant"]


@st.composite
def statements(draw: Any, *, key: bool) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Deny"]))}
    if key:
        element = draw(st.sampled_from(["Principal"] * 4 + ["NotPrincipal"]))
        statement[element] = draw(PRINCIPALS)
    action_element = draw(st.sampled_from(["Action"] * 4 + ["NotAction", None]))
    if action_element:
        statement[action_element] = draw(ACTIONS)
    resource_element = draw(st.sampled_from(["Resource"] * 4 + ["NotResource", None]))
    if resource_element:
        statement[resource_element] = draw(RESOURCES)
    if draw(st.booleans()):
        statement["Condition"] = draw(CONDITIONS)
    return statement


Kind = Literal["key", "identity"]
KINDS: tuple[Kind, ...] = ("key", "identity")


def document(statement_list: list[dict[str, Any]], kind: Kind) -> PolicyDocument:
    text = json.dumps({"Version": "2012-10-17", "Statement": statement_list})
    return parse_policy(text, kind=kind)


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    key_statements = draw(st.lists(statements(key=True), min_size=1, max_size=5))
    identity = draw(
        st.lists(
            st.lists(statements(key=False), min_size=1, max_size=3),
            max_size=2,
        )
    )
    grants = draw(
        st.lists(
            st.builds(
                Grant,
                grant_id=st.sampled_from(["g1", "g2", "g3"]),
                grantee=st.sampled_from(CALLERS),
                operations=st.frozensets(st.sampled_from(OPERATIONS), min_size=1),
                encryption_context_equals=st.sampled_from([None, {}, {"app": "x"}]),
                encryption_context_subset=st.sampled_from([None, {"APP": "x"}]),
            ),
            max_size=2,
        )
    )
    arn = draw(st.sampled_from(CALLERS))
    return {
        "key_statements": key_statements,
        "no_key_policy": draw(st.integers(0, 5)) == 0,
        "identity": identity,
        "grants": grants,
        "caller": arn,
        "action": draw(
            st.sampled_from(
                [f"kms:{op}" for op in OPERATIONS]
                + ["kms:CreateKey", "kms:PutKeyPolicy"]
            )
        ),
        "resource": draw(st.sampled_from([KEY, OTHER_KEY, "*"])),
        "resource_account": draw(st.sampled_from([A, A, B])),
        "context": draw(CONTEXTS),
        "ec": draw(ENCRYPTION_CONTEXTS),
    }


def run(s: dict[str, Any]) -> Any:
    arn = s["caller"]
    caller = Caller(
        arn,
        arn.split(":")[4],
        tuple(document(stmts, "identity") for stmts in s["identity"]),
    )
    req = Request(
        caller, s["action"], s["resource"], s["resource_account"], s["context"], s["ec"]
    )
    policy = None if s["no_key_policy"] else document(s["key_statements"], "key")
    return evaluate(req, policy, s["grants"])


# Drawing a scenario costs far more than evaluating it; 100 keeps the suite fast.
PROPERTY = settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios(), statements(key=True))
def test_adding_a_key_policy_deny_never_allows_more(s, extra):
    before = run(s)
    after = run(
        {**s, "key_statements": [*s["key_statements"], {**extra, "Effect": "Deny"}]}
    )
    assert before.allowed or not after.allowed


@PROPERTY
@given(scenarios(), statements(key=False), st.integers(0, 2))
def test_adding_an_identity_policy_deny_never_allows_more(s, extra, where):
    identity = [list(stmts) for stmts in s["identity"]]
    denial = {**extra, "Effect": "Deny"}
    if where < len(identity):
        identity[where].append(denial)
    else:
        identity.append([denial])
    before = run(s)
    after = run({**s, "identity": identity})
    assert before.allowed or not after.allowed


@PROPERTY
@given(scenarios(), st.data())
def test_removing_an_allow_never_allows_more(s, data):
    places: list[tuple[str, Any]] = [
        ("key", i) for i, x in enumerate(s["key_statements"]) if x["Effect"] == "Allow"
    ]
    places += [
        ("identity", (p, i))
        for p, stmts in enumerate(s["identity"])
        for i, x in enumerate(stmts)
        if x["Effect"] == "Allow"
    ]
    places += [("grant", i) for i in range(len(s["grants"]))]
    if not places:
        return
    kind, where = data.draw(st.sampled_from(places))
    changed = dict(s)
    if kind == "key":
        changed["key_statements"] = [
            x for i, x in enumerate(s["key_statements"]) if i != where
        ]
        if not changed["key_statements"]:
            # A key policy needs a statement; one that never applies stands in.
            changed["key_statements"] = [{"Effect": "Allow", "Principal": "*"}]
    elif kind == "identity":
        p, i = where
        identity = [list(stmts) for stmts in s["identity"]]
        del identity[p][i]
        changed["identity"] = [stmts for stmts in identity if stmts]
    else:
        changed["grants"] = [g for i, g in enumerate(s["grants"]) if i != where]
    before = run(s)
    after = run(changed)
    assert before.allowed or not after.allowed


@PROPERTY
@given(scenarios())
def test_evaluate_is_deterministic_and_names_explicit_denies(s):
    decision = run(s)
    assert run(s) == decision == run(s)
    if decision.explicit_deny:
        assert not decision.allowed
        assert decision.statement is not None
        assert decision.statement in decision.reason


@settings(max_examples=200)
@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.sampled_from(["StringEquals", "StringEqualsIgnoreCase", "StringLike"]),
)
def test_negated_string_operators_complement_on_present_keys(value, wanted, base):
    def allowed(operator: str) -> bool:
        policy = document(
            [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {operator: {"k": wanted}},
                }
            ],
            "key",
        )
        req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A, {"k": value})
        return evaluate(req, policy).allowed

    negated = base.replace("String", "StringNot", 1)
    assert allowed(base) is not allowed(negated)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ELEMENT_VALUES = JSON | PRINCIPALS | ACTIONS | RESOURCES | CONDITIONS


@st.composite
def near_policies(draw: Any) -> Any:
    """Documents shaped like policies, with any element wrong in any way."""
    statement = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "Sid",
                    "Effect",
                    "Principal",
                    "NotPrincipal",
                    "Action",
                    "NotAction",
                    "Resource",
                    "NotResource",
                    "Condition",
                    "Bogus",
                ]
            ),
            st.sampled_from(["Allow", "Deny", "x"]) | ELEMENT_VALUES,
            max_size=6,
        )
    )
    return {
        "Version": draw(st.sampled_from(["2012-10-17", "2008-10-17", "", None])),
        "Statement": draw(
            st.sampled_from([[statement], statement, [statement, statement]])
        ),
    }


def _parse_only_fails_as_a_policy_error(text: str) -> None:
    for kind in KINDS:
        with contextlib.suppress(MalformedPolicyDocumentError, LimitExceededError):
            parse_policy(text, kind=kind)


@settings(max_examples=300)
@given(st.text())
def test_any_text_parses_or_is_malformed(text):
    _parse_only_fails_as_a_policy_error(text)


@settings(max_examples=300)
@given(JSON)
def test_any_json_parses_or_is_malformed(value):
    _parse_only_fails_as_a_policy_error(json.dumps(value))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(near_policies(), CONTEXTS, ENCRYPTION_CONTEXTS)
def test_near_policies_parse_or_are_malformed(value, context, ec):
    text = json.dumps(value)
    for kind in KINDS:
        try:
            policy = parse_policy(text, kind=kind)
        except (MalformedPolicyDocumentError, LimitExceededError):
            continue
        # Whatever parsed also evaluates without error.
        caller = Caller(ALICE, A, (policy,) if kind == "identity" else ())
        req = Request(caller, "kms:Encrypt", KEY, A, context, ec)
        evaluate(req, policy if kind == "key" else None)
