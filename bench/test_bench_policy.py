"""pytest-benchmark timing of one policy decision, for tracking it over time.

The policy is the console's default for a symmetric key plus a Deny for other accounts:
five statements, among them 15 administrator actions, two key-user roles, a Bool and a
StringNotEquals condition. The caller is one of the key-user roles asking for
kms:Encrypt, the decision on every KMS data-plane request. The target is under 5 µs a
call on the development machine; read it from the benchmark's output, it is not
asserted here. Each test checks the decision it timed, so a broken engine fails rather
than posting a number.

Run::

    .venv/bin/python -m pytest bench/test_bench_policy.py --benchmark-enable
"""

from __future__ import annotations

import json

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from keyplane.policy import Caller, PolicyDocument, Request, evaluate, parse_policy

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_USERS = [
    f"arn:aws:iam::{ACCOUNT}:role/AppRole",
    f"arn:aws:iam::{ACCOUNT}:role/BatchRole",
]
ADMIN_ACTIONS = [
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
    "kms:RotateKeyOnDemand",
]

POLICY = {
    "Version": "2012-10-17",
    "Id": "key-consolepolicy-3",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "Allow access for Key Administrators",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"},
            "Action": ADMIN_ACTIONS,
            "Resource": "*",
        },
        {
            "Sid": "Allow use of the key",
            "Effect": "Allow",
            "Principal": {"AWS": KEY_USERS},
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
            "Principal": {"AWS": KEY_USERS},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
        {
            "Sid": "Deny other accounts",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"kms:CallerAccount": ACCOUNT}},
        },
    ],
}


@pytest.fixture(scope="module")
def policy() -> PolicyDocument:
    return parse_policy(json.dumps(POLICY), kind="key")


def test_evaluate_key_user_encrypt(
    benchmark: BenchmarkFixture, policy: PolicyDocument
) -> None:
    request = Request(
        Caller(KEY_USERS[0], ACCOUNT),
        "kms:Encrypt",
        KEY,
        ACCOUNT,
        {"kms:calleraccount": ACCOUNT},
        {"purpose": "bench"},
    )
    decision = benchmark(evaluate, request, policy)
    assert decision.allowed
    assert decision.statement == "Allow use of the key"
    # The Deny's condition was read on the way, so the decision depends on context.
    assert not decision.context_free


def test_parse_console_policy(benchmark: BenchmarkFixture) -> None:
    text = json.dumps(POLICY)
    document = benchmark(parse_policy, text, kind="key")
    assert len(document.statements) == 5
