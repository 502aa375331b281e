"""Rotation in-process with a clock the test moves: the scheduler, the on-demand rules,
the key-state rules, what a failed write leaves, and what a restart brings back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from keyplane.errors import (
    ConflictError,
    DisabledError,
    KeyStateError,
    LimitExceededError,
    StoreError,
    ValidationError,
)
from keyplane.kms import AdjustableClock, KmsService
from keyplane.kms.ops import crypto, keys, rotation
from tests.unit.kms.test_service import CTX, DAY, Clock, close, service


def run(tmp_path: Any, body: Callable[[KmsService, Clock], Awaitable[None]]) -> None:
    root, clock = os.urandom(32), Clock()

    async def main() -> None:
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            await body(svc, clock)
        finally:
            close(svc)

    asyncio.run(main())


def test_the_scheduler_rotates_when_the_date_comes_and_not_before(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"v1")
        await rotation.enable_key_rotation(svc, CTX, key.key_id, 90)
        assert key.next_rotation_date == clock.now + 90 * DAY
        clock.now += 90 * DAY - 1
        assert await rotation.sweep_rotations(svc) == 0
        clock.now += 1
        assert await rotation.sweep_rotations(svc) == 1
        assert key.current_version == 2
        assert key.rotations == [{"version": 2, "date": clock.now, "type": "AUTOMATIC"}]
        assert key.next_rotation_date == clock.now + 90 * DAY
        assert await rotation.sweep_rotations(svc) == 0
        opened = await crypto.decrypt(svc, CTX, ciphertext_blob=sealed.ciphertext_blob)
        assert (opened.plaintext, opened.version) == (b"v1", 1)
        resealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"v2")
        opened = await crypto.decrypt(
            svc, CTX, ciphertext_blob=resealed.ciphertext_blob
        )
        assert opened.version == 2

    run(tmp_path, body)


def test_missed_periods_rotate_once(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        await rotation.enable_key_rotation(svc, CTX, key.key_id, 100)
        start = clock.now
        clock.now += 350 * DAY  # three and a half periods while "down"
        assert await rotation.sweep_rotations(svc) == 1
        assert key.current_version == 2
        assert key.next_rotation_date == start + 400 * DAY

    run(tmp_path, body)


def test_disabled_keys_wait_and_rotate_once_enabled(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        await rotation.enable_key_rotation(svc, CTX, key.key_id, None)
        await keys.disable_key(svc, CTX, key.key_id)
        clock.now += 366 * DAY
        assert await rotation.sweep_rotations(svc) == 0
        with pytest.raises(DisabledError, match="is disabled"):
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        with pytest.raises(DisabledError):
            await rotation.disable_key_rotation(svc, CTX, key.key_id)
        assert rotation.get_key_rotation_status(svc, CTX, key.key_id) is key
        await keys.enable_key(svc, CTX, key.key_id)
        assert await rotation.sweep_rotations(svc) == 1

    run(tmp_path, body)


def test_keys_pending_deletion_refuse_rotation_changes(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        await keys.schedule_key_deletion(svc, CTX, key.key_id, 7)
        with pytest.raises(KeyStateError, match="pending deletion"):
            await rotation.enable_key_rotation(svc, CTX, key.key_id, None)
        with pytest.raises(KeyStateError, match="pending deletion"):
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        entries, _ = rotation.list_key_rotations(svc, CTX, key.key_id, None, None, None)
        assert entries == []

    run(tmp_path, body)


@pytest.mark.parametrize("days", [89, 2561, 0, -1])
def test_periods_outside_the_range_are_refused(tmp_path, days):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        with pytest.raises(ValidationError, match="rotationPeriodInDays"):
            await rotation.enable_key_rotation(svc, CTX, key.key_id, days)
        assert not key.rotation_enabled

    run(tmp_path, body)


def test_on_demand_rotation_limit_and_conflict_window(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        svc.on_demand_rotation_limit = 2
        key = await keys.create_key(svc, CTX)
        await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        with pytest.raises(LimitExceededError):
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        assert key.current_version == 3
        other = await keys.create_key(svc, CTX)
        await rotation.enable_key_rotation(svc, CTX, other.key_id, 90)
        clock.now += 90 * DAY - 20 * 60  # an automatic rotation 20 minutes away
        with pytest.raises(ConflictError, match="20 minutes"):
            await rotation.rotate_key_on_demand(svc, CTX, other.key_id)
        assert other.current_version == 1

    run(tmp_path, body)


def test_a_failed_write_leaves_the_key_as_it_was(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX)
        store = svc.store

        class Failing:
            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            def add_material(self, *args: Any) -> None:
                raise StoreError("disk full")

        svc.store = Failing()  # type: ignore[assignment]
        with pytest.raises(StoreError):
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        svc.store = store
        assert (key.current_version, key.rotations) == (1, [])
        assert len(store.load().materials) == 1

    run(tmp_path, body)


def test_rotations_survive_a_restart(tmp_path):
    root, clock = os.urandom(32), Clock()

    async def before() -> tuple[str, bytes, list[Any]]:
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = await keys.create_key(svc, CTX)
            sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"a")
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
            await rotation.enable_key_rotation(svc, CTX, key.key_id, 90)
            return key.key_id, sealed.ciphertext_blob, list(key.rotations)
        finally:
            close(svc)

    async def after(key_id: str, blob: bytes, rotations: list[Any]) -> None:
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = svc.keys[key_id]
            assert (key.current_version, key.rotations) == (2, rotations)
            assert key.rotation_enabled and key.rotation_period_days == 90
            opened = await crypto.decrypt(svc, CTX, ciphertext_blob=blob)
            assert (opened.plaintext, opened.version) == (b"a", 1)
        finally:
            close(svc)

    asyncio.run(after(*asyncio.run(before())))


def test_the_adjustable_clock_only_moves_forward():
    base = [1000.0]
    clock = AdjustableClock(lambda: base[0])
    assert clock() == 1000.0
    assert clock.advance(86400) == 1000.0 + 86400
    base[0] += 1
    assert clock() == 1001.0 + 86400
    for bad in (0, -5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValidationError):
            clock.advance(bad)  # type: ignore[arg-type]
    assert clock.offset == 86400
