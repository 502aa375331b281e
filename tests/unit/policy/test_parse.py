"""parse_policy: the documents AWS accepts, and each way a document is malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyplane.errors import LimitExceededError, MalformedPolicyDocumentError
from keyplane.policy import (
    KEY_POLICY_MAX_BYTES,
    Caller,
    Request,
    evaluate,
    parse_policy,
)

A = "111122223333"
B = "444455556666"
ROOT_A = f"arn:aws:iam::{A}:root"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

SYNTAX = "Syntax errors in policy."
INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."

# key-policy-default.md: the whole default policy of a key created through the API.
API_DEFAULT = {
    "Version": "2012-10-17",
    "Id": "key-default-1",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": ROOT_A},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}

# key-policy-default.md: the console's default policy for a symmetric key, with key
# administrators, key users (one from another account) and the grants statement.
CONSOLE_DEFAULT = {
    "Version": "2012-10-17",
    "Id": "key-consolepolicy-3",
    "Statement": [
        API_DEFAULT["Statement"][0],
        {
            "Sid": "Allow access for Key Administrators",
            "Effect": "Allow",
            "Principal": {
                "AWS": [
                    f"arn:aws:iam::{A}:user/KMSAdminUser",
                    f"arn:aws:iam::{A}:role/KMSAdminRole",
                ]
            },
            "Action": [
                "kms:Create*",
                "kms:Describe*",
                "kms:Enable*",
                "kms:List*",
                "kms:Put*",
                "kms:Update*",
                "kms:Revoke*",
                "kms:Disable*",
                "kms:Get*",
                "kms:Delete*",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
            ],
            "Resource": "*",
        },
        {
            "Sid": "Allow use of the key",
            "Effect": "Allow",
            "Principal": {
                "AWS": [
                    f"arn:aws:iam::{A}:user/ExampleUser",
                    f"arn:aws:iam::{A}:role/ExampleRole",
                    f"arn:aws:iam::{B}:root",
                ]
            },
            "Action": [
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:DescribeKey",
            ],
            "Resource": "*",
        },
        {
            "Sid": "Allow attachment of persistent resources",
            "Effect": "Allow",
            "Principal": {
                "AWS": [
                    f"arn:aws:iam::{A}:user/ExampleUser",
                    f"arn:aws:iam::{A}:role/ExampleRole",
                    f"arn:aws:iam::{B}:root",
                ]
            },
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": True}},
        },
    ],
}


def key_doc(*statements: dict[str, Any], version: str = "2012-10-17") -> str:
    return json.dumps(
        {"Version": version, "Statement": list(statements)}, ensure_ascii=False
    )


def stmt(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": ROOT_A},
        "Action": "kms:*",
        "Resource": "*",
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_api_default_policy_parses():
    doc = parse_policy(json.dumps(API_DEFAULT), kind="key")
    assert doc.kind == "key"
    assert doc.version == "2012-10-17"
    assert doc.policy_id == "key-default-1"
    assert doc.sids == ("Enable IAM User Permissions",)
    assert doc.text == json.dumps(API_DEFAULT)


def test_console_default_policy_parses():
    doc = parse_policy(json.dumps(CONSOLE_DEFAULT, indent=2), kind="key")
    assert doc.sids == (
        "Enable IAM User Permissions",
        "Allow access for Key Administrators",
        "Allow use of the key",
        "Allow attachment of persistent resources",
    )


def test_2008_version_and_single_statement_object_parse():
    text = json.dumps({"Version": "2008-10-17", "Statement": stmt()})
    assert parse_policy(text, kind="key").version == "2008-10-17"


def test_identity_policy_parses():
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["kms:Encrypt"], "Resource": KEY},
                {"Effect": "Deny", "NotAction": "kms:Describe*", "NotResource": "*"},
            ],
        }
    )
    doc = parse_policy(text, kind="identity")
    assert doc.kind == "identity"
    assert doc.sids == (None, None)


@pytest.mark.parametrize(
    "principal",
    [
        "*",
        {"AWS": "*"},
        {"AWS": A},
        {"AWS": ROOT_A},
        {"AWS": f"arn:aws:iam::{A}:user/alice"},
        {"AWS": f"arn:aws:iam::{A}:user/division_abc/subdivision_xyz/Bob"},
        {"AWS": f"arn:aws:iam::{A}:role/service-role/App.Role+1=,@-x"},
        {"AWS": f"arn:aws:sts::{A}:assumed-role/AppRole/session-1"},
        {"AWS": [ROOT_A, f"arn:aws:iam::{B}:root", B]},
        {"Service": "ec2.amazonaws.com"},
        {"Service": ["ec2.amazonaws.com", "s3.amazonaws.com"]},
        {"Federated": "cognito-identity.amazonaws.com"},
        {"AWS": ROOT_A, "Service": "logs.us-east-1.amazonaws.com"},
    ],
    ids=str,
)
def test_valid_principals(principal):
    parse_policy(key_doc(stmt(Principal=principal)), kind="key")


@pytest.mark.parametrize(
    "principal",
    [
        ROOT_A,  # a bare string other than "*" is not a principal
        "",
        {},
        {"AWS": []},
        {"AWS": ""},
        {"AWS": 111122223333},
        {"AWS": [ROOT_A, 7]},
        {"AWS": "1111222233"},
        {"AWS": "arn:aws:iam::1111:root"},
        {"AWS": f"arn:aws:iam::{A}:group/admins"},
        {"AWS": f"arn:aws:iam::{A}:user/"},
        {"AWS": f"arn:aws:iam::{A}:user/a b"},
        {"AWS": f"arn:aws:iam::{A}:ROOT"},
        {"AWS": f"arn:aws:sts::{A}:assumed-role/AppRole"},
        {"AWS": "AIDAJQABLZS4A3QDU576Q"},
        {"AWS": "arn:aws:s3:::bucket"},
        {"AWS": f"arn:aws:kms:us-east-1:{A}:key/abc"},
        {"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7"},
        {"aws": ROOT_A},
        {"Service": []},
        [ROOT_A],
    ],
    ids=str,
)
def test_invalid_principals(principal):
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(key_doc(stmt(Principal=None, NotPrincipal=principal)), kind="key")
    assert str(info.value) == INVALID_PRINCIPALS
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(key_doc({**stmt(), "Principal": principal}), kind="key")
    assert str(info.value) == INVALID_PRINCIPALS


def test_null_principal_is_invalid():
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(key_doc({**stmt(), "Principal": None}), kind="key")
    assert str(info.value) == INVALID_PRINCIPALS


def test_key_policy_statement_needs_a_principal():
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(key_doc(stmt(Principal=None)), kind="key")
    assert str(info.value) == "Policy contains a statement with no principal."


@pytest.mark.parametrize("element", ["Principal", "NotPrincipal"])
def test_identity_policy_statement_must_not_name_a_principal(element):
    statement = {"Effect": "Allow", "Action": "kms:*", "Resource": "*", element: "*"}
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(key_doc(statement), kind="identity")
    assert str(info.value) == "Policy document should not specify a principal."


def test_duplicate_sid():
    text = key_doc(stmt(Sid="one"), stmt(Sid="two"), stmt(Sid="one"))
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(text, kind="key")
    assert str(info.value) == "Statement IDs (SID) in a single policy must be unique."


def test_empty_sids_are_not_duplicates():
    doc = parse_policy(key_doc(stmt(Sid=""), stmt(Sid="")), kind="key")
    assert doc.sids == (None, None)


MALFORMED = {
    "not json": "{",
    "trailing garbage": key_doc(stmt()) + "x",
    "array": "[]",
    "null": "null",
    "string": '"policy"',
    "empty object": "{}",
    "missing version": json.dumps({"Statement": [stmt()]}),
    "unknown version": key_doc(stmt(), version="2013-01-01"),
    "numeric version": json.dumps({"Version": 2012, "Statement": [stmt()]}),
    "id not a string": json.dumps(
        {"Version": "2012-10-17", "Id": 1, "Statement": [stmt()]}
    ),
    "missing statement": json.dumps({"Version": "2012-10-17"}),
    "statement string": json.dumps({"Version": "2012-10-17", "Statement": "x"}),
    "statement empty": json.dumps({"Version": "2012-10-17", "Statement": []}),
    "statement of numbers": json.dumps({"Version": "2012-10-17", "Statement": [1]}),
    "statement null": json.dumps({"Version": "2012-10-17", "Statement": None}),
    "unknown top element": json.dumps(
        {"Version": "2012-10-17", "Statement": [stmt()], "Extra": 1}
    ),
    "unknown statement element": key_doc({**stmt(), "Principals": "*"}),
    "lower-case element": key_doc({**stmt(), "effect": "Allow"}),
    "missing effect": key_doc(stmt(Effect=None)),
    "lower-case effect": key_doc(stmt(Effect="allow")),
    "other effect": key_doc(stmt(Effect="Permit")),
    "effect list": key_doc(stmt(Effect=["Allow"])),
    "sid not a string": key_doc(stmt(Sid=5)),
    "sid null": key_doc({**stmt(), "Sid": None}),
    "action and notaction": key_doc(stmt(NotAction="kms:Encrypt")),
    "resource and notresource": key_doc(stmt(NotResource="*")),
    "principal and notprincipal": key_doc(stmt(NotPrincipal="*")),
    "action number": key_doc(stmt(Action=5)),
    "action list of numbers": key_doc(stmt(Action=["kms:Encrypt", 1])),
    "action object": key_doc(stmt(Action={"kms": "Encrypt"})),
    "action null": key_doc({**stmt(), "Action": None}),
    "resource null": key_doc({**stmt(), "Resource": None}),
    "condition list": key_doc(stmt(Condition=[])),
    "condition string": key_doc(stmt(Condition="StringEquals")),
    "condition operator not a mapping": key_doc(stmt(Condition={"StringEquals": "x"})),
    "condition operator list": key_doc(stmt(Condition={"StringEquals": [{"a": "b"}]})),
    "condition value null": key_doc(stmt(Condition={"StringEquals": {"a": None}})),
    "condition value object": key_doc(
        stmt(Condition={"StringEquals": {"a": {"b": "c"}}})
    ),
    "condition list holding an object": key_doc(
        stmt(Condition={"StringEquals": {"a": ["b", {}]}})
    ),
    "unknown operator": key_doc(stmt(Condition={"StringEqual": {"a": "b"}})),
    "operator wrong case": key_doc(stmt(Condition={"stringequals": {"a": "b"}})),
    "bare IfExists": key_doc(stmt(Condition={"IfExists": {"a": "b"}})),
    "NullIfExists": key_doc(stmt(Condition={"NullIfExists": {"a": "true"}})),
    "qualified Null": key_doc(stmt(Condition={"ForAnyValue:Null": {"a": "true"}})),
    "unknown qualifier": key_doc(
        stmt(Condition={"ForSomeValues:StringEquals": {"a": "b"}})
    ),
    "qualifier alone": key_doc(stmt(Condition={"ForAllValues:": {"a": "b"}})),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(text):
    with pytest.raises(MalformedPolicyDocumentError) as info:
        parse_policy(text, kind="key")
    assert str(info.value) == SYNTAX


def test_deep_nesting_is_malformed_not_a_crash():
    with pytest.raises(MalformedPolicyDocumentError):
        parse_policy("[" * 100_000 + "]" * 100_000, kind="identity")


@pytest.mark.parametrize(
    "operator",
    [
        "StringEquals",
        "StringNotEqualsIgnoreCase",
        "StringLikeIfExists",
        "NumericGreaterThanEqualsIfExists",
        "DateNotEquals",
        "Bool",
        "BoolIfExists",
        "BinaryEquals",
        "IpAddress",
        "NotIpAddressIfExists",
        "ArnLike",
        "ArnNotEqualsIfExists",
        "Null",
        "ForAnyValue:StringLike",
        "ForAllValues:StringEqualsIfExists",
        "ForAllValues:ArnNotLike",
    ],
)
def test_known_operators_parse(operator):
    condition = {operator: {"kms:CallerAccount": [A, True, 5, 1.5]}}
    parse_policy(key_doc(stmt(Condition=condition)), kind="key")


def test_statements_without_action_or_resource_are_accepted_but_never_apply():
    # key-policy-overview.md: such statements are accepted and have no effect.
    doc = parse_policy(key_doc(stmt(Action=None), stmt(Resource=None)), kind="key")
    decision = evaluate(Request(Caller(ROOT_A, A), "kms:Encrypt", KEY, A), doc)
    assert not decision.allowed


def test_key_policy_size_limit():
    base = key_doc(stmt())
    at_limit = base + " " * (KEY_POLICY_MAX_BYTES - len(base))
    assert parse_policy(at_limit, kind="key").sids == (None,)
    with pytest.raises(LimitExceededError):
        parse_policy(at_limit + " ", kind="key")
    # Identity policies are not held to the key policy quota.
    identity = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
        }
    )
    parse_policy(identity + " " * KEY_POLICY_MAX_BYTES, kind="identity")


def test_key_policy_size_counts_utf8_bytes_not_characters():
    base = key_doc(stmt(Sid=""))
    room = KEY_POLICY_MAX_BYTES - len(base)
    # Each "é" is one character but two bytes of UTF-8.
    text = key_doc(stmt(Sid="é" * (room // 2 + 1)))
    assert len(text) <= KEY_POLICY_MAX_BYTES
    with pytest.raises(LimitExceededError):
        parse_policy(text, kind="key")


def test_documents_compare_by_text_and_kind():
    text = key_doc(stmt())
    assert parse_policy(text, kind="key") == parse_policy(text, kind="key")
    assert parse_policy(text, kind="key") != parse_policy(text + " ", kind="key")


def test_unknown_kind_is_a_caller_bug():
    with pytest.raises(ValueError, match="resource"):
        parse_policy(key_doc(stmt()), kind="resource")  # type: ignore[arg-type]  # the point
