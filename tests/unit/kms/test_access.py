"""Authorization in the service, in-process: which decisions are kept on a key, and
that a change of key policy or grants is seen by the very next request."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from keyplane.errors import AccessDeniedError
from keyplane.kms import Caller, KmsService, RequestContext
from keyplane.kms.ops import crypto, grants, keys, policies
from keyplane.policy import parse_policy
from tests.unit.kms.test_service import Clock, close, service

ACCOUNT, OTHER = "111122223333", "444455556666"
ROOT = Caller(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT)
ALLOW_ENCRYPT = parse_policy(
    json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}
            ],
        }
    ),
    kind="identity",
)
ALICE = Caller(f"arn:aws:iam::{ACCOUNT}:user/alice", ACCOUNT, (ALLOW_ENCRYPT,))
BOB = Caller(f"arn:aws:iam::{ACCOUNT}:user/bob", ACCOUNT)
EVE = Caller(f"arn:aws:iam::{OTHER}:user/eve", OTHER, (ALLOW_ENCRYPT,))


def ctx(caller: Caller) -> RequestContext:
    return RequestContext(caller, "us-east-1", "r")


def run(tmp_path: Any, body: Callable[[KmsService], Awaitable[None]]) -> None:
    async def main() -> None:
        svc = service(
            tmp_path / "db", os.urandom(32), Clock(), asyncio.get_running_loop()
        )
        try:
            await body(svc)
        finally:
            close(svc)

    asyncio.run(main())


async def encrypt(svc: KmsService, who: Caller, key_id: str, **kw: Any) -> Any:
    return await crypto.encrypt(svc, ctx(who), key_id=key_id, plaintext=b"x", **kw)


def test_context_free_decisions_are_kept_until_the_policy_changes(tmp_path):
    async def body(svc: KmsService) -> None:
        key = await keys.create_key(svc, ctx(ROOT))
        await encrypt(svc, ALICE, key.key_id)
        assert key.decisions[(ALICE.arn, "kms:Encrypt")].allowed
        # A policy that no longer delegates to IAM: the kept decision must go.
        policy = json.loads(key.policy)
        policy["Statement"][0]["Principal"] = {"AWS": ROOT.arn}
        policy["Statement"].append(
            {
                "Effect": "Deny",
                "Principal": {"AWS": ALICE.arn},
                "Action": "kms:Encrypt",
                "Resource": "*",
            }
        )
        await policies.put_key_policy(svc, ctx(ROOT), key.key_id, json.dumps(policy))
        assert key.decisions == {}
        with pytest.raises(AccessDeniedError, match="explicit deny"):
            await encrypt(svc, ALICE, key.key_id)

    run(tmp_path, body)


def test_grants_are_seen_at_once_when_made_and_removed(tmp_path):
    async def body(svc: KmsService) -> None:
        key = await keys.create_key(svc, ctx(ROOT))
        with pytest.raises(AccessDeniedError):
            await encrypt(svc, BOB, key.key_id)
        grant, _ = await grants.create_grant(
            svc, ctx(ROOT), key_id=key.key_id, grantee=BOB.arn, operations=["Encrypt"]
        )
        await encrypt(svc, BOB, key.key_id)
        await grants.revoke_grant(
            svc, ctx(ROOT), key_id=key.key_id, grant_id=grant.grant_id
        )
        with pytest.raises(AccessDeniedError):
            await encrypt(svc, BOB, key.key_id)

    run(tmp_path, body)


def test_decisions_that_read_the_context_are_not_kept(tmp_path):
    async def body(svc: KmsService) -> None:
        key = await keys.create_key(svc, ctx(ROOT))
        await grants.create_grant(
            svc,
            ctx(ROOT),
            key_id=key.key_id,
            grantee=BOB.arn,
            operations=["Encrypt"],
            constraints={"EncryptionContextEquals": {"app": "a"}},
        )
        await encrypt(svc, BOB, key.key_id, encryption_context={"app": "a"})
        assert (BOB.arn, "kms:Encrypt") not in key.decisions
        with pytest.raises(AccessDeniedError):
            await encrypt(svc, BOB, key.key_id, encryption_context={"app": "b"})

    run(tmp_path, body)


def test_other_accounts_need_an_arn_and_an_allowing_key_policy(tmp_path):
    async def body(svc: KmsService) -> None:
        key = await keys.create_key(svc, ctx(ROOT))
        with pytest.raises(AccessDeniedError, match="no resource-based policy"):
            await encrypt(svc, EVE, key.arn)
        policy = json.loads(key.policy)
        policy["Statement"].append(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                "Action": ["kms:Encrypt", "kms:DisableKey"],
                "Resource": "*",
            }
        )
        await policies.put_key_policy(svc, ctx(ROOT), key.key_id, json.dumps(policy))
        sealed = await encrypt(svc, EVE, key.arn)
        assert sealed.key is key  # sealed in the owner's partition, under its key
        with pytest.raises(AccessDeniedError):
            await keys.disable_key(svc, ctx(EVE), key.arn)
        assert (EVE.arn, "kms:DisableKey") not in key.decisions

    run(tmp_path, body)


def test_authorization_off_allows_everything(tmp_path):
    async def body(svc: KmsService) -> None:
        key = await keys.create_key(svc, ctx(ROOT))
        svc.access.enabled = False
        await encrypt(svc, BOB, key.key_id)
        assert key.decisions == {}

    run(tmp_path, body)
