"""Condition operators, as the IAM User Guide's "Condition operators" and
"Single-valued vs. multivalued context keys" pages and the KMS condition-key reference
(conditions-kms.md) describe them.

Every case is one Allow statement carrying the condition: allowed means the condition
held.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from keyplane.policy import Caller, Request, evaluate, parse_policy

A = "111122223333"
B = "444455556666"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALICE = f"arn:aws:iam::{A}:user/alice"
APP_ROLE = f"arn:aws:iam::{A}:role/AppRole"


def holds(
    condition: Mapping[str, Any],
    context: Mapping[str, object] | None = None,
    ec: Mapping[str, str] | None = None,
) -> bool:
    doc = parse_policy(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": ALICE},
                        "Action": "kms:*",
                        "Resource": "*",
                        "Condition": condition,
                    }
                ],
            }
        ),
        kind="key",
    )
    req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A, dict(context or {}), ec)
    return evaluate(req, doc).allowed


def case(
    condition: Mapping[str, Any],
    context: Mapping[str, object] | None,
    expected: bool,
    ec: Mapping[str, str] | None = None,
) -> Any:
    return pytest.param(
        condition, context, ec, expected, id=f"{json.dumps(condition)}|{context}|{ec}"
    )


CA = "kms:CallerAccount"
VIA = "kms:ViaService"
EC2 = "ec2.us-east-1.amazonaws.com"
NOW = "aws:CurrentTime"
JUNE = "2024-06-01T12:00:00Z"
JUNE_EPOCH = "1717243200"

CASES = [
    # --- strings
    case({"StringEquals": {CA: A}}, {"kms:calleraccount": A}, True),
    case({"StringEquals": {CA: A}}, {"kms:calleraccount": B}, False),
    case({"StringEquals": {CA: A}}, {}, False),
    case({"StringEquals": {"KMS:CALLERACCOUNT": A}}, {"kms:calleraccount": A}, True),
    case({"StringEquals": {CA: [B, A]}}, {"kms:calleraccount": A}, True),
    case({"StringEquals": {VIA: EC2}}, {"kms:viaservice": EC2.upper()}, False),
    case({"StringNotEquals": {CA: A}}, {"kms:calleraccount": B}, True),
    case({"StringNotEquals": {CA: A}}, {"kms:calleraccount": A}, False),
    case({"StringNotEquals": {CA: [A, B]}}, {"kms:calleraccount": B}, False),
    case(
        {"StringNotEquals": {CA: [A, B]}}, {"kms:calleraccount": "999999999999"}, True
    ),
    # IAM: a negated operator whose key is absent is true.
    case({"StringNotEquals": {CA: A}}, {}, True),
    case({"StringEqualsIgnoreCase": {VIA: EC2}}, {"kms:viaservice": EC2.upper()}, True),
    case({"StringEqualsIgnoreCase": {VIA: EC2}}, {"kms:viaservice": "s3"}, False),
    case(
        {"StringNotEqualsIgnoreCase": {VIA: EC2}},
        {"kms:viaservice": EC2.upper()},
        False,
    ),
    case({"StringNotEqualsIgnoreCase": {VIA: EC2}}, {"kms:viaservice": "s3"}, True),
    case({"StringLike": {VIA: "ec2.*.amazonaws.com"}}, {"kms:viaservice": EC2}, True),
    case({"StringLike": {VIA: "s3.*"}}, {"kms:viaservice": EC2}, False),
    case({"StringLike": {VIA: "EC2.*"}}, {"kms:viaservice": EC2}, False),
    case(
        {"StringLike": {VIA: "ec?.us-east-1.amazonaws.com"}},
        {"kms:viaservice": EC2},
        True,
    ),
    case(
        {"StringLike": {VIA: "e?.us-east-1.amazonaws.com"}},
        {"kms:viaservice": EC2},
        False,
    ),
    case({"StringLike": {VIA: ["s3.*", "ec2.*"]}}, {"kms:viaservice": EC2}, True),
    case({"StringNotLike": {VIA: "ec2.*"}}, {"kms:viaservice": EC2}, False),
    case({"StringNotLike": {VIA: "s3.*"}}, {"kms:viaservice": EC2}, True),
    # Keys in one block, and blocks, are ANDed.
    case(
        {"StringEquals": {CA: A, VIA: EC2}},
        {"kms:calleraccount": A, "kms:viaservice": EC2},
        True,
    ),
    case({"StringEquals": {CA: A, VIA: EC2}}, {"kms:calleraccount": A}, False),
    case(
        {"StringEquals": {CA: A}, "StringLike": {VIA: "s3.*"}},
        {"kms:calleraccount": A, "kms:viaservice": EC2},
        False,
    ),
    # --- numbers
    case(
        {"NumericEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        True,
    ),
    case(
        {"NumericEquals": {"kms:RotationPeriodInDays": 90}},
        {"kms:rotationperiodindays": "90.0"},
        True,
    ),
    case(
        {"NumericEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 91},
        False,
    ),
    case(
        {"NumericEquals": {"kms:RotationPeriodInDays": "ninety"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": "ninety"},
        False,
    ),
    case(
        {"NumericNotEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 91},
        True,
    ),
    case(
        {"NumericNotEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericLessThan": {"kms:RotationPeriodInDays": "100"}},
        {"kms:rotationperiodindays": 90},
        True,
    ),
    case(
        {"NumericLessThan": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericLessThanEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        True,
    ),
    case(
        {"NumericLessThanEquals": {"kms:RotationPeriodInDays": "89.5"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericGreaterThan": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericGreaterThan": {"kms:RotationPeriodInDays": "89"}},
        {"kms:rotationperiodindays": 90},
        True,
    ),
    case(
        {"NumericGreaterThanEquals": {"kms:RotationPeriodInDays": "90"}},
        {"kms:rotationperiodindays": 90},
        True,
    ),
    case(
        {"NumericGreaterThanEquals": {"kms:RotationPeriodInDays": "91"}},
        {"kms:rotationperiodindays": 90},
        False,
    ),
    case(
        {"NumericLessThan": {"kms:RotationPeriodInDays": "100"}},
        {"kms:rotationperiodindays": True},
        False,
    ),
    # --- dates: ISO 8601 and epoch seconds on either side
    case(
        {"DateLessThan": {NOW: "2025-01-01T00:00:00Z"}}, {"aws:currenttime": JUNE}, True
    ),
    case(
        {"DateLessThan": {NOW: "2024-01-01T00:00:00Z"}},
        {"aws:currenttime": JUNE},
        False,
    ),
    case({"DateLessThan": {NOW: "2024-06-01"}}, {"aws:currenttime": JUNE}, False),
    case({"DateGreaterThan": {NOW: "2024-06-01"}}, {"aws:currenttime": JUNE}, True),
    case(
        {"DateGreaterThan": {NOW: "2025-01-01T00:00:00+00:00"}},
        {"aws:currenttime": JUNE},
        False,
    ),
    case({"DateEquals": {NOW: JUNE_EPOCH}}, {"aws:currenttime": JUNE}, True),
    case(
        {"DateEquals": {NOW: "2024-06-01T14:00:00+02:00"}},
        {"aws:currenttime": JUNE},
        True,
    ),
    case(
        {"DateEquals": {NOW: JUNE}}, {"aws:currenttime": "2024-06-01T12:00:01Z"}, False
    ),
    case(
        {"DateNotEquals": {NOW: JUNE}},
        {"aws:currenttime": "2024-06-01T12:00:01Z"},
        True,
    ),
    case({"DateNotEquals": {NOW: JUNE}}, {"aws:currenttime": JUNE}, False),
    case({"DateLessThanEquals": {NOW: JUNE}}, {"aws:currenttime": JUNE}, True),
    case(
        {"DateLessThanEquals": {NOW: JUNE}},
        {"aws:currenttime": "2024-06-01T12:00:01Z"},
        False,
    ),
    case({"DateGreaterThanEquals": {NOW: JUNE}}, {"aws:currenttime": JUNE}, True),
    case(
        {"DateGreaterThanEquals": {NOW: JUNE}},
        {"aws:currenttime": "2024-06-01T11:59:59Z"},
        False,
    ),
    case(
        {"DateGreaterThan": {"aws:EpochTime": "2024-01-01T00:00:00Z"}},
        {"aws:epochtime": 1717243200},
        True,
    ),
    case({"DateLessThan": {NOW: "not a date"}}, {"aws:currenttime": JUNE}, False),
    case(
        {"DateLessThan": {NOW: "2025-01-01"}}, {"aws:currenttime": "yesterday"}, False
    ),
    # --- Bool
    case(
        {"Bool": {"kms:GrantIsForAWSResource": True}},
        {"kms:grantisforawsresource": True},
        True,
    ),
    case(
        {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        {"kms:grantisforawsresource": "true"},
        True,
    ),
    case(
        {"Bool": {"kms:GrantIsForAWSResource": "True"}},
        {"kms:grantisforawsresource": True},
        True,
    ),
    case(
        {"Bool": {"kms:GrantIsForAWSResource": True}},
        {"kms:grantisforawsresource": False},
        False,
    ),
    case({"Bool": {"kms:GrantIsForAWSResource": True}}, {}, False),
    case(
        {"Bool": {"aws:SecureTransport": "false"}}, {"aws:securetransport": False}, True
    ),
    # --- BinaryEquals (base64 in the policy)
    case(
        {"BinaryEquals": {"kms:RecipientData": "YWJj"}},
        {"kms:recipientdata": b"abc"},
        True,
    ),
    case(
        {"BinaryEquals": {"kms:RecipientData": "YWJj"}},
        {"kms:recipientdata": b"abd"},
        False,
    ),
    case(
        {"BinaryEquals": {"kms:RecipientData": "YWJj"}},
        {"kms:recipientdata": "YWJj"},
        True,
    ),
    # --- IP addresses
    case(
        {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
        {"aws:sourceip": "203.0.113.5"},
        True,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
        {"aws:sourceip": "198.51.100.1"},
        False,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": ["198.51.100.0/24", "203.0.113.5"]}},
        {"aws:sourceip": "203.0.113.5"},
        True,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}},
        {"aws:sourceip": "2001:db8::1"},
        True,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}},
        {"aws:sourceip": "203.0.113.5"},
        False,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
        {"aws:sourceip": "not-an-ip"},
        False,
    ),
    case(
        {"IpAddress": {"aws:SourceIp": "203.0.113.0/33"}},
        {"aws:sourceip": "203.0.113.5"},
        False,
    ),
    case(
        {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
        {"aws:sourceip": "198.51.100.1"},
        True,
    ),
    case(
        {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
        {"aws:sourceip": "203.0.113.9"},
        False,
    ),
    # --- ARNs
    case(
        {"ArnEquals": {"aws:PrincipalArn": APP_ROLE}},
        {"aws:principalarn": APP_ROLE},
        True,
    ),
    case(
        {"ArnEquals": {"aws:PrincipalArn": APP_ROLE}},
        {"aws:principalarn": APP_ROLE + "2"},
        False,
    ),
    case(
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/App*"}},
        {"aws:principalarn": APP_ROLE},
        True,
    ),
    case(
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/App*"}},
        {"aws:principalarn": ALICE},
        False,
    ),
    case(
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/App*"}},
        {"aws:principalarn": "arn:aws:iam::1:2:role/App"},
        False,
    ),
    case(
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*"}},
        {"aws:principalarn": APP_ROLE},
        False,
    ),
    case(
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:kms:*:*:key/*"}},
        {"aws:principalarn": KEY},
        True,
    ),
    case(
        {"ArnNotEquals": {"aws:PrincipalArn": APP_ROLE}},
        {"aws:principalarn": ALICE},
        True,
    ),
    case(
        {"ArnNotEquals": {"aws:PrincipalArn": APP_ROLE}},
        {"aws:principalarn": APP_ROLE},
        False,
    ),
    case(
        {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}},
        {"aws:principalarn": ALICE},
        False,
    ),
    case(
        {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}},
        {"aws:principalarn": APP_ROLE},
        True,
    ),
    # --- Null
    case({"Null": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}, {}, True),
    case(
        {"Null": {"kms:BypassPolicyLockoutSafetyCheck": True}},
        {"kms:bypasspolicylockoutsafetycheck": False},
        False,
    ),
    case(
        {"Null": {"kms:BypassPolicyLockoutSafetyCheck": "false"}},
        {"kms:bypasspolicylockoutsafetycheck": False},
        True,
    ),
    case({"Null": {"kms:BypassPolicyLockoutSafetyCheck": "false"}}, {}, False),
    case({"Null": {"aws:TagKeys": "true"}}, {"aws:tagkeys": []}, True),
    # --- ...IfExists
    case({"StringEqualsIfExists": {CA: A}}, {}, True),
    case({"StringEqualsIfExists": {CA: A}}, {"kms:calleraccount": A}, True),
    case({"StringEqualsIfExists": {CA: A}}, {"kms:calleraccount": B}, False),
    case({"StringNotEqualsIfExists": {CA: A}}, {"kms:calleraccount": A}, False),
    case({"NumericLessThanIfExists": {"kms:RotationPeriodInDays": "100"}}, {}, True),
    case(
        {"NumericLessThanIfExists": {"kms:RotationPeriodInDays": "100"}},
        {"kms:rotationperiodindays": 365},
        False,
    ),
    case({"BoolIfExists": {"aws:MultiFactorAuthPresent": "true"}}, {}, True),
    case(
        {"BoolIfExists": {"aws:MultiFactorAuthPresent": "true"}},
        {"aws:multifactorauthpresent": False},
        False,
    ),
    case({"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    case({"ArnLikeIfExists": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}}, {}, True),
    case(
        {"DateLessThanIfExists": {NOW: "2020-01-01"}}, {"aws:currenttime": JUNE}, False
    ),
    # --- set qualifiers on a multi-valued key
    case(
        {"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}},
        {"aws:tagkeys": ["team", "x"]},
        True,
    ),
    case(
        {"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}},
        {"aws:tagkeys": ["x", "y"]},
        False,
    ),
    case(
        {"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}},
        {"aws:tagkeys": []},
        False,
    ),
    case({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}}, {}, False),
    case({"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": ["env"]}}, {}, True),
    case(
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "team"]}},
        {"aws:tagkeys": ["team"]},
        True,
    ),
    case(
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "team"]}},
        {"aws:tagkeys": ["team", "x"]},
        False,
    ),
    case(
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}},
        {"aws:tagkeys": []},
        True,
    ),
    case({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}, {}, True),
    # IAM User Guide's ForAllValues:StringNotLike example.
    case(
        {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
        {"aws:tagkeys": ["key2:audit"]},
        True,
    ),
    case(
        {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
        {"aws:tagkeys": ["key1:hr", "key1:personnel"]},
        False,
    ),
    case(
        {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
        {"aws:tagkeys": ["key1:legal", "key2:audit"]},
        False,
    ),
    case({"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}, {}, True),
    case(
        {"ForAnyValue:StringNotEquals": {"aws:TagKeys": "a"}},
        {"aws:tagkeys": ["a", "b"]},
        True,
    ),
    case(
        {"ForAnyValue:StringNotEquals": {"aws:TagKeys": "a"}},
        {"aws:tagkeys": ["a"]},
        False,
    ),
    case(
        {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/prod-*"}},
        {"kms:resourcealiases": ["alias/dev", "alias/prod-db"]},
        True,
    ),
    case({"ForAllValues:NumericLessThan": {"k": "10"}}, {"k": [1, 2, 30]}, False),
    # A multi-valued key without a qualifier: any value may match; negated, none may.
    case({"StringEquals": {"aws:TagKeys": "b"}}, {"aws:tagkeys": ["a", "b"]}, True),
    case({"StringNotEquals": {"aws:TagKeys": "b"}}, {"aws:tagkeys": ["a", "b"]}, False),
    case({"StringNotEquals": {"aws:TagKeys": "c"}}, {"aws:tagkeys": ["a", "b"]}, True),
]


@pytest.mark.parametrize(("condition", "context", "ec", "expected"), CASES)
def test_operator(condition, context, ec, expected):
    assert holds(condition, context, ec) is expected


APP = {"StringEquals": {"kms:EncryptionContext:AppName": "ExampleApp"}}
APP_KEYS = {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "AppName"}}
ONLY_APP_KEYS = {
    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["AppName", "Project"]}
}


@pytest.mark.parametrize(
    ("condition", "ec", "expected"),
    [
        (APP, {"AppName": "ExampleApp"}, True),
        (APP, {"AppName": "ExampleApp", "Other": "x"}, True),
        # conditions-kms.md, "Case sensitivity of the encryption context condition":
        # the context key in the condition key is not case sensitive, the value is.
        (APP, {"appname": "ExampleApp"}, True),
        (APP, {"AppName": "exampleapp"}, False),
        (
            {"StringEquals": {"KMS:ENCRYPTIONCONTEXT:APPNAME": "ExampleApp"}},
            {"AppName": "ExampleApp"},
            True,
        ),
        (APP, {"Other": "ExampleApp"}, False),
        (APP, None, False),
        (
            {"StringNotEquals": {"kms:EncryptionContext:Stage": "Restricted"}},
            {"Stage": "Test"},
            True,
        ),
        (
            {"StringNotEquals": {"kms:EncryptionContext:Stage": "Restricted"}},
            {"Stage": "Restricted"},
            False,
        ),
        (
            {"StringEqualsIgnoreCase": {"kms:EncryptionContext:AppName": "exampleapp"}},
            {"AppName": "ExampleApp"},
            True,
        ),
        # kms:EncryptionContextKeys compares the context keys as values: case-sensitive.
        (APP_KEYS, {"AppName": "Helper", "Project": "Alpha"}, True),
        (APP_KEYS, {"Project": "Alpha"}, False),
        (APP_KEYS, {"appname": "Helper"}, False),
        (APP_KEYS, None, False),
        (APP_KEYS, {}, False),
        (ONLY_APP_KEYS, {"AppName": "x"}, True),
        (ONLY_APP_KEYS, {"AppName": "x", "Project": "y"}, True),
        (ONLY_APP_KEYS, {"AppName": "x", "Stage": "y"}, False),
        (ONLY_APP_KEYS, None, True),
        ({**APP, **ONLY_APP_KEYS}, None, False),
        ({**APP, **ONLY_APP_KEYS}, {"AppName": "ExampleApp"}, True),
        ({"Null": {"kms:EncryptionContextKeys": "false"}}, {"a": "b"}, True),
        ({"Null": {"kms:EncryptionContextKeys": "false"}}, {}, False),
        ({"Null": {"kms:EncryptionContextKeys": "false"}}, None, False),
    ],
)
def test_encryption_context_keys(condition, ec, expected):
    assert holds(condition, ec=ec) is expected


def test_encryption_context_keys_come_only_from_the_encryption_context():
    # A context entry of the same name must not stand in for the request's own.
    smuggled = {"kms:encryptioncontext:appname": "ExampleApp"}
    assert not holds(APP, smuggled, None)


def test_context_keys_differing_only_by_case_answer_together():
    ec = {"Stage": "Restricted", "stage": "Test"}
    deny_restricted = {"StringEquals": {"kms:EncryptionContext:stage": "Restricted"}}
    assert holds(deny_restricted, ec=ec)


def test_policy_variables_are_literal_text():
    condition = {"StringEquals": {"kms:EncryptionContext:user": "${aws:username}"}}
    assert holds(condition, ec={"user": "${aws:username}"})
    assert not holds(condition, {"aws:username": "bob"}, {"user": "bob"})
