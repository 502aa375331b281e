"""evaluate and access_denied_message against AWS KMS's documented examples.

Sources: key-policy-default.md (the account principal enables IAM policies),
policy-evaluation.md (evaluation order), key-policy-modifying-external-accounts.md
(cross-account use), iam-policies.md, and the IAM User Guide's NotPrincipal and
access-denied pages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyplane.policy import (
    Caller,
    Decision,
    Grant,
    PolicyDocument,
    Request,
    access_denied_message,
    evaluate,
    parse_policy,
)

A = "111122223333"
B = "444455556666"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET_KEY = f"arn:aws:kms:us-east-1:{A}:key/secret-0000"
ROOT_A = f"arn:aws:iam::{A}:root"
ROOT_B = f"arn:aws:iam::{B}:root"
ALICE = f"arn:aws:iam::{A}:user/alice"
CAROL = f"arn:aws:iam::{A}:user/carol"
APP_ROLE = f"arn:aws:iam::{A}:role/AppRole"
APP_SESSION = f"arn:aws:sts::{A}:assumed-role/AppRole/worker-1"
BOB = f"arn:aws:iam::{B}:user/bob"


def key_policy(*statements: dict[str, Any]) -> PolicyDocument:
    return parse_policy(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), kind="key"
    )


def iam(*statements: dict[str, Any]) -> PolicyDocument:
    return parse_policy(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements)}),
        kind="identity",
    )


def allow(principal: Any = None, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": "*"}
    if principal is not None:
        statement["Principal"] = {"AWS": principal}
    statement.update(extra)
    return statement


def deny(principal: Any = None, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    return {**allow(principal, action, **extra), "Effect": "Deny"}


def caller(arn: str, *policies: PolicyDocument) -> Caller:
    account = arn.split(":")[4]
    return Caller(arn, account, tuple(policies))


def request(
    who: Caller, action: str = "kms:Encrypt", resource: str = KEY, **kw: Any
) -> Request:
    return Request(who, action, resource, kw.pop("resource_account", A), **kw)


DEFAULT = key_policy({"Sid": "Enable IAM policies", **allow(ROOT_A)})
IAM_ALLOW_ALL = iam(allow())
IAM_ALLOW_ENCRYPT = iam({"Sid": "UseKey", **allow(action="kms:Encrypt")})
IAM_ALLOW_DECRYPT_ONLY = iam(allow(action="kms:Decrypt"))
IAM_DENY_ENCRYPT = iam({"Sid": "NoEncrypt", **deny(action="kms:Encrypt")})


# --- the default key policy: the account principal delegates to IAM -------------------


def test_default_policy_allows_the_account_root():
    d = evaluate(request(caller(ROOT_A)), DEFAULT)
    assert d == Decision(
        allowed=True,
        source="key-policy",
        statement="Enable IAM policies",
        grant_id=None,
        explicit_deny=False,
        context_free=True,
        reason="allowed by key policy statement 'Enable IAM policies'",
    )


def test_default_policy_user_needs_an_iam_policy():
    req = request(caller(ALICE))
    d = evaluate(req, DEFAULT)
    assert not d.allowed and not d.explicit_deny
    assert d.source == "identity-policy"
    assert "Enable IAM policies" in d.reason
    assert access_denied_message(req, d) == (
        f"User: {ALICE} is not authorized to perform: kms:Encrypt on resource: {KEY} "
        "because no identity-based policy allows the kms:Encrypt action"
    )


def test_default_policy_user_with_iam_allow():
    d = evaluate(request(caller(ALICE, IAM_ALLOW_ENCRYPT)), DEFAULT)
    assert d.allowed and d.source == "key-policy"
    assert d.statement == "Enable IAM policies"
    assert d.reason == (
        "allowed by key policy statement 'Enable IAM policies' together with "
        "identity policy statement 'UseKey'"
    )
    assert d.context_free


def test_default_policy_user_with_iam_for_another_action():
    assert not evaluate(request(caller(ALICE, IAM_ALLOW_DECRYPT_ONLY)), DEFAULT).allowed


@pytest.mark.parametrize(
    ("resource", "allowed"),
    [
        (KEY, True),
        (f"arn:aws:kms:*:{A}:key/*", True),
        (f"arn:aws:kms:us-east-1:{A}:key/1234abcd-*", True),
        (f"arn:aws:kms:us-west-2:{A}:key/*", False),
        (f"arn:aws:kms:*:{B}:key/*", False),
        (f"arn:aws:kms:us-east-1:{A}:alias/*", False),
        (SECRET_KEY, False),
    ],
)
def test_iam_resource_patterns(resource, allowed):
    policy = iam(allow(action="kms:Encrypt", Resource=resource))
    assert evaluate(request(caller(ALICE, policy)), DEFAULT).allowed is allowed


def test_iam_allow_without_key_policy_delegation_is_denied():
    # The key policy names a role, not the account: IAM policies are ineffective.
    policy = key_policy({"Sid": "RoleOnly", **allow(APP_ROLE)})
    req = request(caller(ALICE, IAM_ALLOW_ALL))
    d = evaluate(req, policy)
    assert not d.allowed and d.source == "none" and d.statement is None
    assert access_denied_message(req, d) == (
        f"User: {ALICE} is not authorized to perform: kms:Encrypt on resource: {KEY} "
        "because no resource-based policy allows the kms:Encrypt action"
    )


# --- principals named directly --------------------------------------------------------


def test_key_policy_naming_a_user_needs_no_iam_policy():
    policy = key_policy({"Sid": "Alice", **allow(ALICE, "kms:Encrypt")})
    d = evaluate(request(caller(ALICE)), policy)
    assert d.allowed and d.statement == "Alice"
    assert not evaluate(request(caller(CAROL)), policy).allowed
    assert not evaluate(request(caller(ALICE), "kms:Decrypt"), policy).allowed


@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": ["*"]}])
def test_wildcard_principal_allows_everyone_in_the_account(principal):
    policy = key_policy(
        {"Effect": "Allow", "Principal": principal, "Action": "kms:*", "Resource": "*"}
    )
    assert evaluate(request(caller(CAROL)), policy).allowed


def test_role_principal_covers_its_sessions():
    policy = key_policy(allow(APP_ROLE))
    assert evaluate(request(caller(APP_ROLE)), policy).allowed
    assert evaluate(request(caller(APP_SESSION)), policy).allowed
    other = f"arn:aws:sts::{A}:assumed-role/OtherRole/worker-1"
    assert not evaluate(request(caller(other)), policy).allowed


def test_session_principal_covers_only_that_session():
    policy = key_policy(allow(APP_SESSION))
    assert evaluate(request(caller(APP_SESSION)), policy).allowed
    assert not evaluate(request(caller(APP_ROLE)), policy).allowed


def test_bare_account_id_is_the_account_principal():
    policy = key_policy(allow(A))
    assert evaluate(request(caller(ROOT_A)), policy).allowed
    assert not evaluate(request(caller(ALICE)), policy).allowed
    assert evaluate(request(caller(ALICE, IAM_ALLOW_ALL)), policy).allowed


def test_service_principals_never_match_callers():
    policy = key_policy(
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    assert not evaluate(request(caller(ROOT_A)), policy).allowed


# --- explicit denies ------------------------------------------------------------------


def test_key_policy_deny_beats_key_policy_allow():
    policy = key_policy(
        {"Sid": "Use", **allow(ALICE)},
        {"Sid": "NoEncrypt", **deny(ALICE, "kms:Encrypt")},
    )
    req = request(caller(ALICE))
    d = evaluate(req, policy)
    assert (d.allowed, d.explicit_deny, d.source, d.statement) == (
        False,
        True,
        "key-policy",
        "NoEncrypt",
    )
    assert d.reason == "denied by key policy statement 'NoEncrypt'"
    assert access_denied_message(req, d) == (
        f"User: {ALICE} is not authorized to perform: kms:Encrypt on resource: {KEY} "
        "with an explicit deny in a resource-based policy"
    )
    assert evaluate(request(caller(ALICE), "kms:Decrypt"), policy).allowed


def test_key_policy_deny_beats_delegated_iam_allow():
    policy = key_policy(allow(ROOT_A), deny(ALICE, "kms:Encrypt"))
    assert evaluate(request(caller(ALICE, IAM_ALLOW_ALL)), policy).explicit_deny


def test_deny_naming_the_account_covers_everyone_in_it():
    policy = key_policy(allow([ALICE, ROOT_A]), deny(ROOT_A, "kms:Decrypt"))
    assert not evaluate(request(caller(ALICE), "kms:Decrypt"), policy).allowed
    assert not evaluate(request(caller(ROOT_A), "kms:Decrypt"), policy).allowed
    assert evaluate(request(caller(ALICE)), policy).allowed


def test_iam_deny_beats_key_policy_allow():
    policy = key_policy(allow(ALICE))
    req = request(caller(ALICE, IAM_DENY_ENCRYPT))
    d = evaluate(req, policy)
    assert (d.allowed, d.explicit_deny, d.source, d.statement) == (
        False,
        True,
        "identity-policy",
        "NoEncrypt",
    )
    assert access_denied_message(req, d) == (
        f"User: {ALICE} is not authorized to perform: kms:Encrypt on resource: {KEY} "
        "with an explicit deny in an identity-based policy"
    )


def test_iam_deny_beats_iam_allow_in_another_policy():
    d = evaluate(request(caller(ALICE, IAM_ALLOW_ALL, IAM_DENY_ENCRYPT)), DEFAULT)
    assert d.explicit_deny and d.source == "identity-policy"


def test_iam_deny_applies_across_accounts():
    policy = key_policy(allow(ROOT_A), allow(ROOT_B, ["kms:Encrypt", "kms:Decrypt"]))
    bob = caller(BOB, IAM_ALLOW_ALL, IAM_DENY_ENCRYPT)
    assert evaluate(request(bob), policy).explicit_deny
    assert evaluate(request(bob, "kms:Decrypt"), policy).allowed


def test_key_policy_deny_is_checked_before_identity_policy_deny():
    policy = key_policy(allow(ALICE), {"Sid": "KP", **deny(ALICE)})
    d = evaluate(request(caller(ALICE, IAM_DENY_ENCRYPT)), policy)
    assert d.source == "key-policy" and d.statement == "KP"


# --- cross-account use ----------------------------------------------------------------

CROSS = key_policy(
    {"Sid": "Enable IAM policies", **allow(ROOT_A)},
    {
        "Sid": "Allow an external account",
        **allow(ROOT_B, ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]),
    },
)


def test_external_user_with_iam_allow():
    d = evaluate(request(caller(BOB, IAM_ALLOW_ENCRYPT)), CROSS)
    assert d.allowed and d.statement == "Allow an external account"


def test_external_user_without_iam_allow():
    req = request(caller(BOB))
    d = evaluate(req, CROSS)
    assert not d.allowed and d.source == "identity-policy"
    assert access_denied_message(req, d).endswith(
        "because no identity-based policy allows the kms:Encrypt action"
    )


def test_external_root_is_allowed():
    assert evaluate(request(caller(ROOT_B)), CROSS).allowed


def test_external_account_only_gets_what_the_key_policy_lists():
    req = request(caller(BOB, IAM_ALLOW_ALL), "kms:PutKeyPolicy")
    d = evaluate(req, CROSS)
    assert not d.allowed and d.source == "none"
    assert access_denied_message(req, d).endswith(
        "because no resource-based policy allows the kms:PutKeyPolicy action"
    )


def test_external_user_named_directly_still_needs_iam():
    policy = key_policy(allow(ROOT_A), allow(BOB, "kms:Encrypt"))
    assert not evaluate(request(caller(BOB)), policy).allowed
    assert evaluate(request(caller(BOB, IAM_ALLOW_ENCRYPT)), policy).allowed


def test_wildcard_principal_with_caller_account_condition():
    # conditions-kms.md, kms:CallerAccount: the AWS managed key pattern.
    policy = key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": A,
                    "kms:ViaService": "ec2.us-west-2.amazonaws.com",
                }
            },
        }
    )
    via_ec2 = {"kms:calleraccount": A, "kms:viaservice": "ec2.us-west-2.amazonaws.com"}
    d = evaluate(request(caller(CAROL), context=via_ec2), policy)
    assert d.allowed and not d.context_free
    direct = {"kms:calleraccount": A}
    assert not evaluate(request(caller(CAROL), context=direct), policy).allowed
    external = {**via_ec2, "kms:calleraccount": B}
    assert not evaluate(
        request(caller(BOB, IAM_ALLOW_ALL), context=external), policy
    ).allowed


# --- NotAction, NotResource, NotPrincipal ---------------------------------------------


def test_not_action():
    policy = key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": ALICE},
            "NotAction": "kms:ScheduleKeyDeletion",
            "Resource": "*",
        }
    )
    assert evaluate(request(caller(ALICE)), policy).allowed
    assert not evaluate(
        request(caller(ALICE), "kms:ScheduleKeyDeletion"), policy
    ).allowed


def test_not_resource_in_an_identity_policy():
    policy = iam(
        {
            "Effect": "Allow",
            "Action": "kms:*",
            "NotResource": f"arn:aws:kms:*:{A}:key/secret-*",
        }
    )
    alice = caller(ALICE, policy)
    assert evaluate(request(alice), DEFAULT).allowed
    assert not evaluate(request(alice, resource=SECRET_KEY), DEFAULT).allowed


NOT_PRINCIPAL = key_policy(
    allow(ROOT_A),
    {
        "Sid": "OnlyAlice",
        "Effect": "Deny",
        "NotPrincipal": {"AWS": [ALICE, ROOT_A]},
        "Action": "kms:*",
        "Resource": "*",
    },
)


def test_not_principal_deny_spares_the_listed():
    assert evaluate(request(caller(ALICE, IAM_ALLOW_ALL)), NOT_PRINCIPAL).allowed
    assert evaluate(request(caller(ROOT_A)), NOT_PRINCIPAL).allowed


def test_not_principal_deny_hits_everyone_else():
    d = evaluate(request(caller(CAROL, IAM_ALLOW_ALL)), NOT_PRINCIPAL)
    assert d.explicit_deny and d.statement == "OnlyAlice"


def test_not_principal_without_the_account_spares_no_one():
    # IAM User Guide, NotPrincipal: leave out the principal's account and the Deny
    # applies to the whole account, the listed user included.
    policy = key_policy(
        allow(ROOT_A),
        {
            "Effect": "Deny",
            "NotPrincipal": {"AWS": ALICE},
            "Action": "kms:*",
            "Resource": "*",
        },
    )
    assert evaluate(request(caller(ALICE, IAM_ALLOW_ALL)), policy).explicit_deny


def test_not_principal_for_a_session_needs_account_role_and_session():
    def policy(*listed: str) -> PolicyDocument:
        return key_policy(
            allow(APP_ROLE),
            {
                "Effect": "Deny",
                "NotPrincipal": {"AWS": list(listed)},
                "Action": "kms:*",
                "Resource": "*",
            },
        )

    session = request(caller(APP_SESSION))
    assert evaluate(session, policy(ROOT_A, APP_ROLE, APP_SESSION)).allowed
    assert evaluate(session, policy(ROOT_A, APP_ROLE)).explicit_deny
    assert evaluate(session, policy(APP_ROLE, APP_SESSION)).explicit_deny


def test_not_principal_allow_covers_the_unlisted():
    policy = key_policy(
        {
            "Effect": "Allow",
            "NotPrincipal": {"AWS": [CAROL, ROOT_A]},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    assert evaluate(request(caller(ALICE)), policy).allowed
    assert not evaluate(request(caller(CAROL)), policy).allowed


# --- actions and resources ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "allowed"),
    [
        ("kms:*", "kms:Encrypt", True),
        ("*", "kms:Encrypt", True),
        ("kms:ReEncrypt*", "kms:ReEncryptFrom", True),
        ("kms:ReEncrypt*", "kms:ReEncryptTo", True),
        ("kms:GenerateDataKey*", "kms:GenerateDataKeyPairWithoutPlaintext", True),
        ("kms:GenerateDataKey*", "kms:GenerateRandom", False),
        ("kms:Describe?ey", "kms:DescribeKey", True),
        ("kms:Describe?ey", "kms:DescribeKeyy", False),
        ("KMS:encrypt", "kms:Encrypt", True),
        ("kms:Encrypt", "KMS:ENCRYPT", True),
        ("kms:Encrypt", "kms:EncryptX", False),
        ("kms:Encrypt*", "kms:Decrypt", False),
        ("s3:*", "kms:Encrypt", False),
        (["kms:Decrypt", "kms:Encrypt"], "kms:Encrypt", True),
        ([], "kms:Encrypt", False),
    ],
)
def test_action_patterns(pattern, action, allowed):
    policy = key_policy(allow(ALICE, pattern))
    assert evaluate(request(caller(ALICE), action), policy).allowed is allowed


@pytest.mark.parametrize(
    ("resource", "allowed"),
    [
        ("*", True),
        (KEY, True),
        (SECRET_KEY, False),
        (f"arn:aws:kms:us-east-1:{A}:key/*", True),
        (KEY.upper(), False),
    ],
)
def test_key_policy_resource(resource, allowed):
    policy = key_policy(allow(ALICE, Resource=resource))
    assert evaluate(request(caller(ALICE)), policy).allowed is allowed


def test_unnamed_statements_are_labelled_by_index():
    policy = key_policy(deny(CAROL), deny(ALICE, "kms:Encrypt"))
    d = evaluate(request(caller(ALICE)), policy)
    assert d.statement == "#1" and d.reason == "denied by key policy statement '#1'"


# --- actions only IAM authorizes (no key policy) --------------------------------------


def test_iam_only_action_allowed_by_identity_policy():
    policy = iam({"Sid": "Create", **allow(action="kms:CreateKey")})
    d = evaluate(request(caller(ALICE, policy), "kms:CreateKey", "*"), None)
    assert d.allowed and d.source == "identity-policy" and d.statement == "Create"
    assert d.reason == "allowed by identity policy statement 'Create'"


def test_iam_only_action_without_identity_policy():
    req = request(caller(ALICE, IAM_ALLOW_DECRYPT_ONLY), "kms:ListKeys", "*")
    d = evaluate(req, None)
    assert not d.allowed and d.source == "identity-policy" and not d.explicit_deny
    assert access_denied_message(req, d) == (
        f"User: {ALICE} is not authorized to perform: kms:ListKeys on resource: * "
        "because no identity-based policy allows the kms:ListKeys action"
    )


def test_iam_only_action_by_root():
    assert evaluate(request(caller(ROOT_A), "kms:CreateKey", "*"), None).allowed


def test_iam_only_action_denied_explicitly():
    policy = iam(allow(), deny(action="kms:Create*"))
    d = evaluate(request(caller(ALICE, policy), "kms:CreateKey", "*"), None)
    assert d.explicit_deny and d.source == "identity-policy"


def test_iam_only_action_in_another_account():
    req = request(
        caller(BOB, IAM_ALLOW_ALL),
        "kms:CreateAlias",
        resource_account=A,
        resource=f"arn:aws:kms:us-east-1:{A}:alias/app",
    )
    assert not evaluate(req, None).allowed
    assert not evaluate(request(caller(ROOT_B), "kms:ListAliases", "*"), None).allowed


def test_grants_do_not_apply_without_a_key_policy():
    grant = Grant("g1", ALICE, frozenset({"CreateKey", "Encrypt"}))
    assert not evaluate(
        request(caller(ALICE), "kms:CreateKey", "*"), None, [grant]
    ).allowed


# --- decisions and messages -----------------------------------------------------------


def test_context_free_when_no_condition_was_read():
    assert evaluate(request(caller(ROOT_A)), DEFAULT).context_free
    assert evaluate(request(caller(ALICE)), DEFAULT).context_free


def test_not_context_free_when_a_condition_was_read():
    guarded = key_policy(
        allow(ROOT_A), deny("*", Condition={"Bool": {"aws:SecureTransport": "false"}})
    )
    d = evaluate(
        request(caller(ROOT_A), context={"aws:securetransport": True}), guarded
    )
    assert d.allowed and not d.context_free
    d = evaluate(
        request(caller(ROOT_A), context={"aws:securetransport": False}), guarded
    )
    assert d.explicit_deny and not d.context_free


def test_iam_condition_read_makes_delegated_decision_context_dependent():
    policy = iam(allow(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    inside = evaluate(
        request(caller(ALICE, policy), context={"aws:sourceip": "10.1.2.3"}), DEFAULT
    )
    outside = evaluate(
        request(caller(ALICE, policy), context={"aws:sourceip": "192.0.2.1"}), DEFAULT
    )
    assert inside.allowed and not inside.context_free
    assert not outside.allowed and not outside.context_free


def test_access_denied_message_refuses_an_allow():
    req = request(caller(ROOT_A))
    with pytest.raises(ValueError, match="denial"):
        access_denied_message(req, evaluate(req, DEFAULT))


def test_evaluation_does_not_change_its_inputs():
    req = request(caller(ALICE, IAM_ALLOW_ALL), context={"kms:calleraccount": A})
    before = (dict(req.context), DEFAULT.text)
    evaluate(req, DEFAULT)
    assert (dict(req.context), DEFAULT.text) == before
