"""Grants: who they cover, which operations, and their encryption context constraints.

Constraint semantics follow the KMS API Reference, GrantConstraints: applied only to
operations that take an encryption context; keys compare case-insensitively and values
case-sensitively.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from keyplane.policy import (
    CONTEXT_OPERATIONS,
    Caller,
    Grant,
    Request,
    evaluate,
    parse_policy,
)

A = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROOT_A = f"arn:aws:iam::{A}:root"
ALICE = f"arn:aws:iam::{A}:user/alice"
CAROL = f"arn:aws:iam::{A}:user/carol"
APP_ROLE = f"arn:aws:iam::{A}:role/AppRole"

DEFAULT = parse_policy(
    json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ROOT_A},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    ),
    kind="key",
)


def decide(
    grant: Grant,
    action: str = "kms:Encrypt",
    ec: Mapping[str, str] | None = None,
    who: str = ALICE,
) -> bool:
    req = Request(Caller(who, A), action, KEY, A, encryption_context=ec)
    return evaluate(req, DEFAULT, [grant]).allowed


def test_context_operations():
    assert (
        frozenset(
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
        == CONTEXT_OPERATIONS
    )


def test_grant_allows_its_grantee():
    grant = Grant("g-1", ALICE, frozenset({"Encrypt", "Decrypt"}))
    req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A)
    d = evaluate(req, DEFAULT, [grant])
    assert (d.allowed, d.source, d.grant_id, d.statement) == (
        True,
        "grant",
        "g-1",
        None,
    )
    assert d.reason == "allowed by grant 'g-1'"
    assert d.context_free
    # Without the grant the user has no IAM policy, so the default policy denies.
    assert not evaluate(req, DEFAULT).allowed


def test_grant_for_someone_else():
    assert not decide(Grant("g", CAROL, frozenset({"Encrypt"})))


def test_grant_without_the_operation():
    grant = Grant("g", ALICE, frozenset({"Decrypt"}))
    assert not decide(grant)
    assert decide(grant, "kms:Decrypt")
    assert not decide(grant, "kms:ReEncryptFrom")


def test_grant_operations_compare_case_insensitively():
    assert decide(Grant("g", ALICE, frozenset({"encrypt"})))
    assert decide(Grant("g", ALICE, frozenset({"Encrypt"})), "kms:encrypt")


def test_first_matching_grant_decides():
    grants = [
        Grant("other", CAROL, frozenset({"Encrypt"})),
        Grant("mine", ALICE, frozenset({"Encrypt"})),
        Grant("later", ALICE, frozenset({"Encrypt"})),
    ]
    req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A)
    assert evaluate(req, DEFAULT, grants).grant_id == "mine"


def test_grant_for_a_role_covers_its_sessions():
    grant = Grant("g", APP_ROLE, frozenset({"Encrypt"}))
    assert decide(grant, who=APP_ROLE)
    assert decide(grant, who=f"arn:aws:sts::{A}:assumed-role/AppRole/s-1")
    assert not decide(grant, who=f"arn:aws:sts::{A}:assumed-role/Other/s-1")


def test_grant_for_a_session_covers_neither_the_role_nor_other_sessions():
    session = f"arn:aws:sts::{A}:assumed-role/AppRole/s-1"
    grant = Grant("g", session, frozenset({"Encrypt"}))
    assert decide(grant, who=session)
    assert not decide(grant, who=APP_ROLE)
    assert not decide(grant, who=f"arn:aws:sts::{A}:assumed-role/AppRole/s-2")


EQUALS = Grant("eq", ALICE, frozenset({"Encrypt"}), {"Purpose": "Test"})


@pytest.mark.parametrize(
    ("ec", "allowed"),
    [
        ({"Purpose": "Test"}, True),
        ({"purpose": "Test"}, True),  # keys: case-insensitive
        ({"PURPOSE": "Test"}, True),
        ({"Purpose": "test"}, False),  # values: case-sensitive
        ({"Purpose": "Test", "Extra": "x"}, False),
        ({"Other": "Test"}, False),
        ({}, False),
        (None, False),
        ({"Purpose": "Test", "purpose": "Test"}, False),  # ambiguous: not equal
    ],
)
def test_encryption_context_equals(ec, allowed):
    assert decide(EQUALS, ec=ec) is allowed


@pytest.mark.parametrize(
    ("ec", "allowed"), [(None, True), ({}, True), ({"a": "b"}, False)]
)
def test_encryption_context_equals_empty(ec, allowed):
    grant = Grant("eq", ALICE, frozenset({"Encrypt"}), encryption_context_equals={})
    assert decide(grant, ec=ec) is allowed


SUBSET = Grant(
    "sub", ALICE, frozenset({"Decrypt"}), encryption_context_subset={"Dept": "IT"}
)


@pytest.mark.parametrize(
    ("ec", "allowed"),
    [
        ({"Dept": "IT"}, True),
        ({"Dept": "IT", "Project": "Alpha"}, True),
        ({"dept": "IT", "Project": "Alpha"}, True),  # keys: case-insensitive
        ({"Dept": "it"}, False),  # values: case-sensitive
        ({"Project": "Alpha"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_encryption_context_subset(ec, allowed):
    assert decide(SUBSET, "kms:Decrypt", ec) is allowed


def test_both_constraints_must_hold():
    grant = Grant(
        "both",
        ALICE,
        frozenset({"Encrypt"}),
        encryption_context_equals={"a": "1", "b": "2"},
        encryption_context_subset={"a": "1"},
    )
    assert decide(grant, ec={"a": "1", "b": "2"})
    assert not decide(grant, ec={"a": "1"})


@pytest.mark.parametrize(
    "action",
    [
        "kms:DescribeKey",
        "kms:RetireGrant",
        "kms:CreateGrant",
        "kms:Sign",
        "kms:GenerateMac",
    ],
)
def test_constraints_are_ignored_for_operations_without_a_context(action):
    operation = action.split(":")[1]
    grant = Grant(
        "g",
        ALICE,
        frozenset({operation}),
        encryption_context_equals={"Purpose": "Test"},
    )
    req = Request(Caller(ALICE, A), action, KEY, A)
    d = evaluate(req, DEFAULT, [grant])
    assert d.allowed and d.context_free


@pytest.mark.parametrize("operation", sorted(CONTEXT_OPERATIONS))
def test_constraints_apply_to_every_context_operation(operation):
    grant = Grant("g", ALICE, frozenset({operation}), {"Purpose": "Test"})
    assert not decide(grant, f"kms:{operation}", {"Purpose": "Other"})
    assert decide(grant, f"kms:{operation}", {"Purpose": "Test"})


def test_reading_a_constraint_makes_the_decision_context_dependent():
    req = Request(
        Caller(ALICE, A), "kms:Encrypt", KEY, A, encryption_context={"Purpose": "Test"}
    )
    d = evaluate(req, DEFAULT, [EQUALS])
    assert d.allowed and not d.context_free


def test_explicit_deny_beats_a_grant():
    policy = parse_policy(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": ROOT_A},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Effect": "Deny",
                        "Principal": {"AWS": ALICE},
                        "Action": "kms:Encrypt",
                        "Resource": "*",
                    },
                ],
            }
        ),
        kind="key",
    )
    req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A)
    d = evaluate(req, policy, [Grant("g", ALICE, frozenset({"Encrypt"}))])
    assert d.explicit_deny and d.grant_id is None


def test_grant_decides_after_an_unmet_delegation():
    req = Request(Caller(ALICE, A), "kms:Encrypt", KEY, A)
    d = evaluate(req, DEFAULT, [Grant("g", ALICE, frozenset({"Encrypt"}))])
    assert d.source == "grant"
