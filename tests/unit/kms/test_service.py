"""The service in-process, with a clock the test moves: deletion at the end of the
waiting period, and everything restored from the store."""

from __future__ import annotations

import asyncio
import os

import pytest

from keyplane.errors import NotFoundError
from keyplane.hsm import Hsm
from keyplane.kms import Caller, KeyState, KmsService, RequestContext
from keyplane.kms.ops import aliases, crypto, keys
from keyplane.storage import SQLiteStore

CTX = RequestContext(
    Caller("arn:aws:iam::111122223333:root", "111122223333"), "us-east-1", "r"
)
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def service(path, root: bytes, clock: Clock, loop) -> KmsService:
    store = SQLiteStore(path)
    svc = KmsService(Hsm(bytearray(root)), store, clock, "us-east-1", loop)
    svc.restore(store.load())
    return svc


def close(svc: KmsService) -> None:
    svc.close()
    svc.store.close()
    svc.hsm.close()


def test_key_and_aliases_are_deleted_when_the_window_ends(tmp_path):
    root, clock = os.urandom(32), Clock()

    async def main():
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = await keys.create_key(svc, CTX)
            kept = await keys.create_key(svc, CTX)
            await aliases.create_alias(svc, CTX, "alias/doomed", key.key_id)
            await keys.schedule_key_deletion(svc, CTX, key.key_id, 7)
            clock.now += 7 * DAY - 1
            assert await svc.sweep_deletions() == 0
            assert svc.keys[key.key_id].state is KeyState.PENDING_DELETION
            clock.now += 1
            assert await svc.sweep_deletions() == 1
            with pytest.raises(NotFoundError):
                keys.describe_key(svc, CTX, key.key_id)
            with pytest.raises(NotFoundError):
                keys.describe_key(svc, CTX, "alias/doomed")
            assert keys.describe_key(svc, CTX, kept.key_id) is kept
            snapshot = svc.store.load()
            assert [k.key_id for k in snapshot.keys] == [kept.key_id]
            assert snapshot.aliases == []
            assert svc.store.integrity_check() == []
        finally:
            close(svc)

    asyncio.run(main())


def test_restore_brings_back_every_key(tmp_path):
    root, clock = os.urandom(32), Clock()

    async def first():
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = await keys.create_key(svc, CTX, description="kept")
            sealed = await crypto.encrypt(
                svc,
                CTX,
                key_id=key.key_id,
                plaintext=b"x",
                encryption_context={"a": "b"},
            )
            return key.key_id, sealed.ciphertext_blob
        finally:
            close(svc)

    async def second(key_id, blob):
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            assert svc.keys[key_id].description == "kept"
            opened = await crypto.decrypt(
                svc, CTX, ciphertext_blob=blob, encryption_context={"a": "b"}
            )
            assert opened.plaintext == b"x"
        finally:
            close(svc)

    key_id, blob = asyncio.run(first())
    asyncio.run(second(key_id, blob))


def test_a_cancel_that_wins_the_lock_keeps_the_key(tmp_path):
    root, clock = os.urandom(32), Clock()

    async def main():
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = await keys.create_key(svc, CTX)
            blob = (
                await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"keep")
            ).ciphertext_blob
            await keys.schedule_key_deletion(svc, CTX, key.key_id, 7)
            clock.now += 8 * DAY
            # The cancel holds the lock first; the sweep, already started, must see
            # that the key is no longer pending deletion.
            async with svc.control:
                sweep = asyncio.ensure_future(svc.sweep_deletions())
                await asyncio.sleep(0)
                record = key.record(
                    state=KeyState.DISABLED,
                    deletion_date=None,
                    pending_window_days=None,
                )
                await svc.write(svc.store.update_key, record)
                key.apply(record)
            assert await sweep == 0
            await keys.enable_key(svc, CTX, key.key_id)
            opened = await crypto.decrypt(svc, CTX, ciphertext_blob=blob)
            assert opened.plaintext == b"keep"
        finally:
            close(svc)

    asyncio.run(main())
