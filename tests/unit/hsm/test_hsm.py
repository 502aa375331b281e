"""The HSM layer: tenancy, partition isolation, and key slots that cannot leak."""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Iterator

import pytest

from keyplane import hsm as hsm_mod
from keyplane.errors import (
    InvalidCiphertextError,
    KeyUnavailableError,
    PartitionMismatchError,
    ValidationError,
)
from keyplane.hsm import Hsm, KeySlot, Tenancy


@pytest.fixture
def hsm() -> Iterator[Hsm]:
    h = Hsm(bytearray(os.urandom(32)))
    yield h
    h.close()


def test_root_key_is_taken_not_kept():
    root = bytearray(os.urandom(32))
    h = Hsm(root)
    assert root == bytearray(32)
    h.close()
    with pytest.raises(ValidationError):
        Hsm(bytearray(16))


def test_key_slot_carries_no_material(hsm):
    slot = hsm.create_partition().generate_key()
    assert not any(
        isinstance(getattr(slot, name, None), bytes | bytearray) for name in dir(slot)
    )
    assert not hasattr(slot, "__dict__")
    assert repr(slot).startswith("KeySlot(partition=")
    with pytest.raises(TypeError):
        pickle.dumps(slot)
    with pytest.raises(TypeError):
        copy.copy(slot)
    with pytest.raises(TypeError):
        copy.deepcopy(slot)
    with pytest.raises(AttributeError):
        slot.key = b"x"  # type: ignore[attr-defined]


def test_partition_round_trip_and_isolation(hsm):
    a = hsm.create_partition()
    b = hsm.create_partition()
    slot_a, slot_b = a.generate_key(), b.generate_key()
    sealed = a.encrypt_batch(slot_a, [b"tenant a"], b"ctx")
    assert a.decrypt_batch(slot_a, sealed, b"ctx") == [b"tenant a"]
    # Partition b refuses a's slot, per item, whatever the batch size.
    for n in (1, 5, 50):
        results = b.encrypt_batch([slot_a] * n, [b"x"] * n)
        assert all(isinstance(r, PartitionMismatchError) for r in results)
    with pytest.raises(PartitionMismatchError):
        b.export_key(slot_a)
    with pytest.raises(PartitionMismatchError):
        b.destroy_key(slot_a)
    assert b.decrypt_batch(slot_b, b.encrypt_batch(slot_b, [b"y"])) == [b"y"]


def test_shared_fleet_batches_mix_tenants(hsm):
    tenants = [hsm.create_partition() for _ in range(3)]
    slots = [p.generate_key() for p in tenants]
    mixed = [slots[i % 3] for i in range(30)]
    plaintexts = [os.urandom(20) for _ in mixed]
    sealed = hsm_mod.encrypt_batch(mixed, plaintexts)
    assert hsm_mod.decrypt_batch(mixed, sealed) == plaintexts
    keys = hsm_mod.generate_data_key_batch(mixed, 32, len(mixed))
    assert hsm_mod.decrypt_batch(mixed, [s for _, s in keys]) == [k for k, _ in keys]


def test_dedicated_partition_has_its_own_hsm(hsm):
    shared = hsm.create_partition()
    dedicated = hsm.create_partition(Tenancy.DEDICATED)
    assert dedicated.native is not hsm.shared
    assert shared.native is hsm.shared
    d_slot, s_slot = dedicated.generate_key(), shared.generate_key()
    assert dedicated.decrypt_batch(d_slot, dedicated.encrypt_batch(d_slot, [b"z"])) == [
        b"z"
    ]
    # A batch never spans the fleet and a dedicated HSM...
    with pytest.raises(PartitionMismatchError):
        hsm_mod.encrypt_batch([d_slot, s_slot], [b"a", b"b"])
    # ...and a dedicated HSM refuses the fleet's slots per item.
    [result] = dedicated.encrypt_batch(s_slot, [b"x"])
    assert isinstance(result, PartitionMismatchError)


@pytest.mark.parametrize("tenancy", list(Tenancy))
def test_partitions_and_keys_survive_a_restart(tenancy):
    root = os.urandom(32)
    first = Hsm(bytearray(root))
    p = first.create_partition(tenancy)
    slot = p.generate_key()
    sealed = p.encrypt_batch(slot, [b"kept"], b"ctx")
    stored_partition, stored_key = p.export(), p.export_key(slot, b"key/1")
    first.close()

    second = Hsm(bytearray(root))
    try:
        p2 = second.open_partition(stored_partition, tenancy)
        slot2 = p2.import_key(stored_key, b"key/1")
        assert p2.decrypt_batch(slot2, sealed, b"ctx") == [b"kept"]
        with pytest.raises(InvalidCiphertextError):
            p2.import_key(stored_key, b"key/2")
    finally:
        second.close()


def test_open_partition_with_wrong_root_key(hsm):
    stored = hsm.create_partition(Tenancy.DEDICATED).export()
    other = Hsm(bytearray(os.urandom(32)))
    try:
        for tenancy in Tenancy:
            with pytest.raises(InvalidCiphertextError):
                other.open_partition(stored, tenancy)
        assert other.partitions() == []
    finally:
        other.close()


def test_destroy_key_and_partition(hsm):
    p = hsm.create_partition(Tenancy.DEDICATED)
    slot = p.generate_key()
    p.destroy_key(slot)
    [result] = p.encrypt_batch(slot, [b"x"])
    assert isinstance(result, KeyUnavailableError)
    assert len(hsm.partitions()) == 1
    p.destroy()
    assert hsm.partitions() == []


def test_context_length_is_checked(hsm):
    p = hsm.create_partition()
    slot = p.generate_key()
    with pytest.raises(ValidationError):
        p.export_key(slot, b"x" * 1025)


def test_mixed_batch_needs_slots(hsm):
    with pytest.raises(ValidationError):
        hsm_mod.encrypt_batch([], [])
    assert isinstance(hsm.create_partition().generate_key(), KeySlot)
