"""Identity and access against a real server: two accounts, several principals, each
signing with its own keys through boto3. What each may and may not do under key
policies, IAM policies and grants; and requests whose signature is missing, wrong,
expired or for another body."""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from keyplane.client import BatchClient, BatchRequestError
from tests.integration.conftest import (
    ACCOUNT,
    ServerProcess,
    kms_client,
    signed_headers,
)

OTHER = "444455556666"


def _key(name: str) -> tuple[str, str]:
    """A distinct, valid access key pair per test principal."""
    return f"AKIA{name.upper():X<16}"[:20], f"secret-of-{name}"


KEYS = {
    name: _key(name)
    for name in ("admin", "alice", "bob", "carol", "eve", "mallory", "otherroot")
}
USER_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"],
                "Resource": f"arn:aws:kms:*:{ACCOUNT}:key/*",
            }
        ],
    }
)
CAROL_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": ["kms:Decrypt", "kms:RetireGrant"],
                "Resource": "*",
            },
        ],
    }
)
EVE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:DisableKey",
                    "kms:CreateKey",
                    "kms:CreateGrant",
                    "kms:ListKeys",
                    "kms:ListRetirableGrants",
                    "kms:ListAliases",
                ],
                "Resource": "*",
            }
        ],
    }
)
ADMIN_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    }
)


def _principal(name: str, policy: str | None) -> str:
    key_id, secret = KEYS[name]
    text = (
        f'[[accounts.principals]]\ntype = "user"\nname = "{name}"\n'
        f'access_keys = [{{ id = "{key_id}", secret = "{secret}" }}]\n'
    )
    if policy is not None:
        text += f"policies = [{{ name = \"p\", document = '{policy}' }}]\n"
    return text


CONFIG = (
    f'[[accounts]]\nid = "{ACCOUNT}"\n'
    + _principal("admin", ADMIN_POLICY)
    + _principal("alice", USER_POLICY)
    + _principal("bob", None)
    + _principal("carol", CAROL_POLICY)
    + f'[[accounts]]\nid = "{OTHER}"\n'
    + f'root_access_keys = [{{ id = "{KEYS["otherroot"][0]}", '
    f'secret = "{KEYS["otherroot"][1]}" }}]\n'
    + _principal("eve", EVE_POLICY)
    + _principal("mallory", None)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("access"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def as_(server: ServerProcess) -> Any:
    clients: dict[str, Any] = {}

    def client(name: str) -> Any:
        if name not in clients:
            key_id, secret = KEYS[name]
            clients[name] = kms_client(server.endpoint, key_id, secret)
        return clients[name]

    return client


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def denied(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    code, message = error(exc)
    assert code == "AccessDeniedException", message
    return message


def arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def policy(*statements: dict[str, Any]) -> str:
    root = {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]})


@pytest.fixture
def key(as_: Any) -> dict[str, str]:
    """A key with the default policy, made by admin."""
    meta = as_("admin").create_key(Description="access test")["KeyMetadata"]
    return {"id": meta["KeyId"], "arn": meta["Arn"]}


# --- authentication -------------------------------------------------------------------


def _raw(server: ServerProcess, head: dict[str, str], body: bytes) -> tuple[int, dict]:
    host = server.endpoint.split("//", 1)[1]
    lines = ["POST / HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in head.items() if k.lower() != "host"]
    lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not _whole(data):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2])


def _whole(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _host(server: ServerProcess) -> str:
    return server.endpoint.split("//", 1)[1]


def _signed(server: ServerProcess, body: bytes) -> dict[str, str]:
    key_id, secret = KEYS["admin"]
    return signed_headers(
        body, "TrentService.GenerateRandom", _host(server), key_id, secret
    )


def test_an_unsigned_request_can_do_nothing(server: ServerProcess) -> None:
    body = b"{}"
    status, reply = _raw(
        server,
        {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.CreateKey",
        },
        body,
    )
    assert (status, reply["__type"]) == (400, "MissingAuthenticationTokenException")
    assert reply["message"] == "Missing Authentication Token"


def test_wrong_secret_is_an_invalid_signature(server: ServerProcess) -> None:
    client = kms_client(server.endpoint, KEYS["alice"][0], "not-alice's-secret")
    with pytest.raises(ClientError) as exc:
        client.list_keys()
    code, message = error(exc)
    assert code == "InvalidSignatureException"
    assert message.startswith("The request signature we calculated does not match")


def test_unknown_access_key_is_unrecognized(server: ServerProcess) -> None:
    client = kms_client(server.endpoint, "AKIAUNKNOWNUNKNOWN00", "whatever")
    with pytest.raises(ClientError) as exc:
        client.list_keys()
    assert error(exc) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_skewed_clock_is_refused_as_expired(server: ServerProcess) -> None:
    body = b'{"NumberOfBytes": 8}'
    skewed = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - (
        datetime.timedelta(minutes=16)
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        head = _signed(server, body)
    status, reply = _raw(server, head, body)
    assert (status, reply["__type"]) == (400, "InvalidSignatureException")
    assert reply["message"].startswith("Signature expired: ")
    assert "is now earlier than" in reply["message"]


def test_a_body_changed_after_signing_is_refused(server: ServerProcess) -> None:
    signed = b'{"NumberOfBytes": 8}'
    head = _signed(server, signed)
    status, reply = _raw(server, head, b'{"NumberOfBytes": 9}')
    assert (status, reply["__type"]) == (400, "InvalidSignatureException")
    # The same headers with the body they signed do work: the refusal was the body.
    status, reply = _raw(server, head, signed)
    assert status == 200 and len(base64.b64decode(reply["Plaintext"])) == 8


# --- key policies and IAM policies ----------------------------------------------------


def test_default_policy_lets_iam_policies_decide(as_: Any, key: dict) -> None:
    # alice's IAM policy allows Encrypt: the default key policy delegates to IAM.
    blob = as_("alice").encrypt(KeyId=key["id"], Plaintext=b"x")["CiphertextBlob"]
    assert as_("alice").decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    # Her IAM policy does not allow ScheduleKeyDeletion.
    message = denied(
        as_("alice").schedule_key_deletion, KeyId=key["id"], PendingWindowInDays=7
    )
    assert message == (
        f"User: {arn('alice')} is not authorized to perform: kms:ScheduleKeyDeletion "
        f"on resource: {key['arn']} because no identity-based policy allows the "
        "kms:ScheduleKeyDeletion action"
    )
    # bob has no IAM policy at all.
    denied(as_("bob").encrypt, KeyId=key["id"], Plaintext=b"x")
    denied(as_("bob").describe_key, KeyId=key["id"])


def test_a_key_policy_naming_a_user_needs_no_iam_policy(as_: Any) -> None:
    text = policy(
        {
            "Sid": "bob uses the key",
            "Effect": "Allow",
            "Principal": {"AWS": arn("bob")},
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
        }
    )
    key_id = as_("admin").create_key(Policy=text)["KeyMetadata"]["KeyId"]
    blob = as_("bob").encrypt(KeyId=key_id, Plaintext=b"b")["CiphertextBlob"]
    assert as_("bob").decrypt(CiphertextBlob=blob)["Plaintext"] == b"b"
    denied(as_("bob").describe_key, KeyId=key_id)  # not in the statement
    # ...and bob cannot create keys: CreateKey is for IAM policies alone.
    denied(as_("bob").create_key)


def test_an_iam_deny_beats_every_allow(as_: Any, key: dict) -> None:
    blob = as_("carol").encrypt(KeyId=key["id"], Plaintext=b"c")["CiphertextBlob"]
    message = denied(as_("carol").decrypt, CiphertextBlob=blob)
    assert message.endswith("with an explicit deny in an identity-based policy")


def test_a_key_policy_deny_with_a_condition(as_: Any) -> None:
    text = policy(
        {
            "Sid": "only for the billing app",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:Encrypt",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"kms:EncryptionContext:app": "billing"}},
        }
    )
    key_id = as_("admin").create_key(Policy=text)["KeyMetadata"]["KeyId"]
    alice = as_("alice")
    alice.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"app": "billing"})
    message = denied(
        alice.encrypt, KeyId=key_id, Plaintext=b"x", EncryptionContext={"app": "hr"}
    )
    assert message.endswith("with an explicit deny in a resource-based policy")
    denied(alice.encrypt, KeyId=key_id, Plaintext=b"x")


def test_put_get_and_list_key_policies(as_: Any, key: dict) -> None:
    admin = as_("admin")
    assert admin.list_key_policies(KeyId=key["id"])["PolicyNames"] == ["default"]
    default = json.loads(admin.get_key_policy(KeyId=key["id"])["Policy"])
    assert default["Statement"][0]["Principal"] == {
        "AWS": f"arn:aws:iam::{ACCOUNT}:root"
    }
    text = policy(
        {
            "Sid": "bob encrypts",
            "Effect": "Allow",
            "Principal": {"AWS": arn("bob")},
            "Action": "kms:Encrypt",
            "Resource": "*",
        }
    )
    denied(as_("bob").encrypt, KeyId=key["id"], Plaintext=b"x")
    admin.put_key_policy(KeyId=key["id"], PolicyName="default", Policy=text)
    # The new policy takes effect at once, and reads back exactly as written.
    as_("bob").encrypt(KeyId=key["id"], Plaintext=b"x")
    assert admin.get_key_policy(KeyId=key["id"])["Policy"] == text
    with pytest.raises(ClientError) as exc:
        admin.get_key_policy(KeyId=key["id"], PolicyName="other")
    assert error(exc)[0] == "NotFoundException"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"Version": "2012-10-17"}),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Perhaps", "Principal": "*", "Action": "*"}],
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::12:user/x"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            }
        ),
    ],
)
def test_malformed_policies_are_refused(as_: Any, key: dict, text: str) -> None:
    with pytest.raises(ClientError) as exc:
        as_("admin").put_key_policy(KeyId=key["id"], PolicyName="default", Policy=text)
    assert error(exc)[0] == "MalformedPolicyDocumentException"
    # Nothing changed.
    assert (
        "Enable IAM User Permissions"
        in as_("admin").get_key_policy(KeyId=key["id"])["Policy"]
    )


def test_the_lockout_safety_check(as_: Any, key: dict) -> None:
    locked = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": arn("bob")},
                    "Action": "kms:Encrypt",
                    "Resource": "*",
                }
            ],
        }
    )
    admin = as_("admin")
    with pytest.raises(ClientError) as exc:
        admin.put_key_policy(KeyId=key["id"], PolicyName="default", Policy=locked)
    assert error(exc) == (
        "MalformedPolicyDocumentException",
        "The new key policy will not allow you to update the key policy in the future.",
    )
    with pytest.raises(ClientError) as exc:
        admin.create_key(Policy=locked)
    assert error(exc)[0] == "MalformedPolicyDocumentException"
    admin.put_key_policy(
        KeyId=key["id"],
        PolicyName="default",
        Policy=locked,
        BypassPolicyLockoutSafetyCheck=True,
    )
    # As promised: admin can no longer change it, or even describe the key.
    denied(admin.put_key_policy, KeyId=key["id"], PolicyName="default", Policy=locked)
    denied(admin.describe_key, KeyId=key["id"])


# --- cross-account --------------------------------------------------------------------


@pytest.fixture
def shared_key(as_: Any) -> dict[str, str]:
    text = policy(
        {
            "Sid": "Allow the other account",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": [
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:DisableKey",
                "kms:CreateGrant",
            ],
            "Resource": "*",
        }
    )
    meta = as_("admin").create_key(Policy=text)["KeyMetadata"]
    return {"id": meta["KeyId"], "arn": meta["Arn"]}


def test_cross_account_use_by_arn(as_: Any, shared_key: dict) -> None:
    eve = as_("eve")
    blob = eve.encrypt(KeyId=shared_key["arn"], Plaintext=b"e")["CiphertextBlob"]
    out = eve.decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == b"e" and out["KeyId"] == shared_key["arn"]
    # The owner decrypts what the other account sealed, and the other way round.
    assert as_("admin").decrypt(CiphertextBlob=blob)["Plaintext"] == b"e"
    # The other account's root needs no IAM policy.
    as_("otherroot").describe_key(KeyId=shared_key["arn"])


def test_cross_account_only_by_arn(as_: Any, shared_key: dict) -> None:
    with pytest.raises(ClientError) as exc:
        as_("eve").encrypt(KeyId=shared_key["id"], Plaintext=b"e")
    assert error(exc)[0] == "NotFoundException"


def test_cross_account_needs_the_callers_iam_policy(as_: Any, shared_key: dict) -> None:
    denied(as_("mallory").encrypt, KeyId=shared_key["arn"], Plaintext=b"m")


def test_cross_account_only_for_operations_that_allow_it(
    as_: Any, shared_key: dict
) -> None:
    # Both policies allow DisableKey, but it is not a cross-account operation.
    denied(as_("eve").disable_key, KeyId=shared_key["arn"])
    assert as_("admin").describe_key(KeyId=shared_key["id"])["KeyMetadata"]["Enabled"]


def test_accounts_see_only_their_own_keys(as_: Any, shared_key: dict) -> None:
    own = as_("eve").create_key()["KeyMetadata"]
    assert own["AWSAccountId"] == OTHER
    listed = {k["KeyId"] for k in as_("eve").list_keys(Limit=1000)["Keys"]}
    assert own["KeyId"] in listed and shared_key["id"] not in listed


# --- grants ---------------------------------------------------------------------------


def test_a_grant_given_used_retired(as_: Any, key: dict) -> None:
    admin, bob, alice = as_("admin"), as_("bob"), as_("alice")
    denied(bob.encrypt, KeyId=key["id"], Plaintext=b"g")
    made = admin.create_grant(
        KeyId=key["id"],
        GranteePrincipal=arn("bob"),
        RetiringPrincipal=arn("alice"),
        Operations=["Encrypt", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"app": "billing"}},
    )
    context = {"app": "billing", "extra": "1"}
    # The token authorizes at once (as it does on AWS before the grant propagates).
    blob = bob.encrypt(
        KeyId=key["id"],
        Plaintext=b"g",
        EncryptionContext=context,
        GrantTokens=[made["GrantToken"]],
    )["CiphertextBlob"]
    assert bob.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
    # The constraint holds: without the pair, no grant applies.
    denied(bob.encrypt, KeyId=key["id"], Plaintext=b"g")
    denied(bob.describe_key, KeyId=key["id"])  # not a granted operation
    listed = admin.list_grants(KeyId=key["id"])["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"]) for g in listed] == [
        (made["GrantId"], arn("bob"))
    ]
    assert listed[0]["Constraints"] == {"EncryptionContextSubset": {"app": "billing"}}
    retirable = admin.list_retirable_grants(RetiringPrincipal=arn("alice"))["Grants"]
    assert made["GrantId"] in {g["GrantId"] for g in retirable}
    # bob is the grantee, but the grant does not include RetireGrant.
    denied(bob.retire_grant, GrantToken=made["GrantToken"])
    alice.retire_grant(GrantToken=made["GrantToken"])
    denied(bob.encrypt, KeyId=key["id"], Plaintext=b"g", EncryptionContext=context)
    assert admin.list_grants(KeyId=key["id"])["Grants"] == []


def test_a_grant_revoked(as_: Any, key: dict) -> None:
    admin, bob = as_("admin"), as_("bob")
    made = admin.create_grant(
        KeyId=key["id"], GranteePrincipal=arn("bob"), Operations=["DescribeKey"]
    )
    bob.describe_key(KeyId=key["id"])
    denied(bob.revoke_grant, KeyId=key["id"], GrantId=made["GrantId"])
    admin.revoke_grant(KeyId=key["id"], GrantId=made["GrantId"])
    denied(bob.describe_key, KeyId=key["id"])
    with pytest.raises(ClientError) as exc:
        admin.revoke_grant(KeyId=key["id"], GrantId=made["GrantId"])
    assert error(exc)[0] == "NotFoundException"


def test_grant_names_make_create_grant_idempotent(as_: Any, key: dict) -> None:
    admin = as_("admin")
    args = {
        "KeyId": key["id"],
        "GranteePrincipal": arn("bob"),
        "Operations": ["Encrypt"],
        "Name": "bob-encrypts",
    }
    first, again = admin.create_grant(**args), admin.create_grant(**args)
    assert first["GrantId"] == again["GrantId"]
    assert first["GrantToken"] != again["GrantToken"]
    other = admin.create_grant(**{**args, "Operations": ["Decrypt"]})
    assert other["GrantId"] != first["GrantId"]


def test_grant_names_are_per_issuing_account(as_: Any, shared_key: dict) -> None:
    args = {
        "KeyId": shared_key["arn"],
        "GranteePrincipal": arn("mallory", OTHER),
        "Operations": ["Encrypt"],
        "Name": "same-name",
    }
    ours, theirs = as_("admin").create_grant(**args), as_("eve").create_grant(**args)
    assert ours["GrantId"] != theirs["GrantId"]


def _forged(token: str, **change: int) -> str:
    """``token`` with one byte changed (by default in its HMAC tag)."""
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[change.get("at", -1)] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_only_issued_grant_tokens_are_accepted(as_: Any, key: dict) -> None:
    admin = as_("admin")
    made = admin.create_grant(
        KeyId=key["id"], GranteePrincipal=arn("bob"), Operations=["Encrypt"]
    )
    admin.encrypt(KeyId=key["id"], Plaintext=b"x", GrantTokens=[made["GrantToken"]])
    for bad in (
        "nope",
        _forged(made["GrantToken"]),
        _forged(made["GrantToken"], at=20),
    ):
        with pytest.raises(ClientError) as exc:
            admin.encrypt(KeyId=key["id"], Plaintext=b"x", GrantTokens=[bad])
        assert error(exc) == (
            "InvalidGrantTokenException",
            "The grant token is not valid.",
        )
        with pytest.raises(ClientError) as exc:
            as_("bob").retire_grant(GrantToken=bad)
        assert error(exc)[0] == "InvalidGrantTokenException"
    # A token does not outlive its grant.
    admin.revoke_grant(KeyId=key["id"], GrantId=made["GrantId"])
    with pytest.raises(ClientError) as exc:
        admin.encrypt(KeyId=key["id"], Plaintext=b"x", GrantTokens=[made["GrantToken"]])
    assert error(exc)[0] == "InvalidGrantTokenException"


def test_an_explicit_deny_stops_the_retiring_principal(as_: Any, key: dict) -> None:
    made = as_("admin").create_grant(
        KeyId=key["id"],
        GranteePrincipal=arn("bob"),
        RetiringPrincipal=arn("carol"),
        Operations=["Encrypt"],
    )
    denied(as_("carol").retire_grant, GrantToken=made["GrantToken"])
    as_("admin").retire_grant(KeyId=key["id"], GrantId=made["GrantId"])


def test_grant_operations_take_no_alias(as_: Any, key: dict) -> None:
    admin = as_("admin")
    admin.create_alias(AliasName=f"alias/grants-{key['id'][:8]}", TargetKeyId=key["id"])
    for call, args in (
        (
            admin.create_grant,
            {"GranteePrincipal": arn("bob"), "Operations": ["Encrypt"]},
        ),
        (admin.list_grants, {}),
    ):
        with pytest.raises(ClientError) as exc:
            call(KeyId=f"alias/grants-{key['id'][:8]}", **args)
        assert error(exc)[0] == "NotFoundException"


def test_a_cross_account_grant(as_: Any, shared_key: dict) -> None:
    # eve (account B) may CreateGrant on A's key by the key policy; her grant lets
    # mallory, who has no IAM policy, encrypt with it.
    made = as_("eve").create_grant(
        KeyId=shared_key["arn"],
        GranteePrincipal=arn("mallory", OTHER),
        Operations=["Encrypt"],
    )
    as_("mallory").encrypt(KeyId=shared_key["arn"], Plaintext=b"m")
    denied(
        as_("mallory").decrypt,
        CiphertextBlob=as_("admin").encrypt(KeyId=shared_key["id"], Plaintext=b"m")[
            "CiphertextBlob"
        ],
    )
    grants = as_("admin").list_grants(KeyId=shared_key["id"])["Grants"]
    issued = {g["GrantId"]: g["IssuingAccount"] for g in grants}
    assert issued[made["GrantId"]] == f"arn:aws:iam::{OTHER}:root"
    # The key's own account may retire a grant another account created on its key.
    as_("admin").retire_grant(KeyId=shared_key["id"], GrantId=made["GrantId"])
    denied(as_("mallory").encrypt, KeyId=shared_key["arn"], Plaintext=b"m")


def test_retirable_grants_of_a_principal_on_any_accounts_keys(
    as_: Any, shared_key: dict
) -> None:
    made = as_("admin").create_grant(
        KeyId=shared_key["id"],
        GranteePrincipal=arn("mallory", OTHER),
        RetiringPrincipal=arn("eve", OTHER),
        Operations=["Encrypt"],
    )
    listed = as_("eve").list_retirable_grants(RetiringPrincipal=arn("eve", OTHER))
    assert made["GrantId"] in {g["GrantId"] for g in listed["Grants"]}
    # Only for principals of one's own account.
    denied(as_("admin").list_retirable_grants, RetiringPrincipal=arn("eve", OTHER))
    as_("eve").retire_grant(GrantToken=made["GrantToken"])


def test_list_aliases_is_not_cross_account(as_: Any, shared_key: dict) -> None:
    with pytest.raises(ClientError) as exc:
        as_("eve").list_aliases(KeyId=shared_key["arn"])
    assert error(exc)[0] == "NotFoundException"


def test_request_alias_and_algorithm_conditions(
    server: ServerProcess, as_: Any
) -> None:
    text = policy(
        {
            "Sid": "bob by alias only",
            "Effect": "Allow",
            "Principal": {"AWS": arn("bob")},
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:RequestAlias": "alias/bob-only",
                    "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                }
            },
        }
    )
    key_id = as_("admin").create_key(Policy=text)["KeyMetadata"]["KeyId"]
    as_("admin").create_alias(AliasName="alias/bob-only", TargetKeyId=key_id)
    bob = as_("bob")
    blob = bob.encrypt(KeyId="alias/bob-only", Plaintext=b"a")["CiphertextBlob"]
    denied(bob.encrypt, KeyId=key_id, Plaintext=b"a")
    assert bob.decrypt(CiphertextBlob=blob, KeyId="alias/bob-only")["Plaintext"]
    denied(bob.decrypt, CiphertextBlob=blob)
    with _batch_client(server, "bob") as batch:
        (sealed,) = batch.encrypt("alias/bob-only", [b"b"])
        assert "CiphertextBlob" in sealed


def test_dry_run_checks_authorization(as_: Any, key: dict) -> None:
    with pytest.raises(ClientError) as exc:
        as_("alice").encrypt(KeyId=key["id"], Plaintext=b"x", DryRun=True)
    assert error(exc)[0] == "DryRunOperationException"
    denied(as_("bob").encrypt, KeyId=key["id"], Plaintext=b"x", DryRun=True)


# --- explaining decisions -------------------------------------------------------------


def _batch_client(server: ServerProcess, name: str) -> BatchClient:
    key_id, secret = KEYS[name]
    return BatchClient(server.endpoint, credentials=Credentials(key_id, secret))


def test_explain_access_names_the_deciding_statement(
    server: ServerProcess, as_: Any
) -> None:
    text = policy(
        {
            "Sid": "bob uses the key",
            "Effect": "Allow",
            "Principal": {"AWS": arn("bob")},
            "Action": "kms:Encrypt",
            "Resource": "*",
        }
    )
    key_id = as_("admin").create_key(Policy=text)["KeyMetadata"]["KeyId"]
    with _batch_client(server, "admin") as admin:
        allowed = admin.explain_access(
            "kms:Encrypt", key_id=key_id, principal=arn("bob")
        )
        assert (allowed["Allowed"], allowed["Source"], allowed["Statement"]) == (
            True,
            "key-policy",
            "bob uses the key",
        )
        refused = admin.explain_access(
            "kms:Decrypt", key_id=key_id, principal=arn("bob")
        )
        assert refused["Allowed"] is False and refused["ExplicitDeny"] is False
        assert "kms:Decrypt" in refused["Reason"]
        mine = admin.explain_access("kms:CreateKey")
        assert mine["Allowed"] and mine["Source"] == "identity-policy"
        # Another account's principal's identity policies are not ours to see.
        with pytest.raises(BatchRequestError) as exc:
            admin.explain_access(
                "kms:Encrypt", key_id=key_id, principal=arn("eve", OTHER)
            )
        assert exc.value.code == "AccessDeniedException"
    # Explaining how a key's policy treats someone needs kms:GetKeyPolicy on it.
    with _batch_client(server, "alice") as alice:
        with pytest.raises(BatchRequestError) as exc:
            alice.explain_access("kms:Encrypt", key_id=key_id, principal=arn("bob"))
        assert exc.value.code == "AccessDeniedException"
        # Whether a principal exists is not told to those who may not ask about it.
        for someone in (arn("bob"), arn("nobody"), arn("eve", OTHER)):
            with pytest.raises(BatchRequestError) as exc:
                alice.explain_access("kms:CreateKey", principal=someone)
            assert exc.value.code == "AccessDeniedException"


def _explain(server: ServerProcess, signer: str, *args: str) -> Any:
    """``keyplane explain`` run as a user would, signing as ``signer``."""
    key_id, secret = KEYS[signer]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    command = [sys.executable, "-m", "keyplane", "explain"]
    return subprocess.run(
        [*command, "--endpoint", server.endpoint, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_explain_command(server: ServerProcess, as_: Any, key: dict) -> None:
    question = ("--action", "kms:ScheduleKeyDeletion", "--key", key["id"])
    # alice may not read the key policy, so she may not ask how it treats anyone.
    out = _explain(server, "alice", *question)
    assert out.returncode == 1 and "AccessDeniedException" in out.stderr
    out = _explain(server, "admin", *question, "--principal", arn("alice"))
    assert out.returncode == 3, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["Allowed"], answer["Principal"]) == (False, arn("alice"))
    out = _explain(server, "admin", *question)
    assert out.returncode == 0 and json.loads(out.stdout)["Allowed"] is True


def test_batch_items_are_authorized_one_by_one(
    server: ServerProcess, as_: Any, key: dict
) -> None:
    as_("admin").create_grant(
        KeyId=key["id"],
        GranteePrincipal=arn("bob"),
        Operations=["Encrypt"],
        Constraints={"EncryptionContextEquals": {"tenant": "acme"}},
    )
    acme = {"tenant": "acme"}
    with _batch_client(server, "bob") as bob:
        sealed = bob.encrypt(key["id"], [b"one", b"two"], acme)
        assert all("CiphertextBlob" in r for r in sealed)
        refused = bob.encrypt(key["id"], [b"three"], {"tenant": "other"})
        assert [getattr(r, "code", None) for r in refused] == ["AccessDeniedException"]
        # Decrypt was not granted; the blob bob may not open fails alone beside
        # one that is not a blob at all.
        mixed = bob.decrypt([sealed[0]["CiphertextBlob"], b"not a blob"], acme)
        assert [getattr(r, "code", None) for r in mixed] == [
            "AccessDeniedException",
            "InvalidCiphertextException",
        ]
    with _batch_client(server, "admin") as admin:
        opened = admin.decrypt([r["CiphertextBlob"] for r in sealed], acme)
        assert [r["Plaintext"] for r in opened] == [b"one", b"two"]
