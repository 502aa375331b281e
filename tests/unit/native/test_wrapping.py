"""Key material leaves the HSM only wrapped, and comes back only through an unwrap."""

from __future__ import annotations

import os

import pytest

from keyplane import native
from keyplane.errors import (
    InvalidCiphertextError,
    KeyUnavailableError,
    MalformedNativeCallError,
    PartitionUnavailableError,
)
from keyplane.native import NativeHsm


def test_exported_key_imports_and_decrypts(hsm, partition, slot):
    sealed = hsm.encrypt_batch(partition, slot, [b"secret"], b"ctx")
    wrapped = hsm.keyslot_export(partition, slot, b"key-1/v1")
    assert len(wrapped) == native.WRAPPED_KEY_BYTES
    restored = hsm.keyslot_import(partition, wrapped, b"key-1/v1")
    assert restored != slot
    assert hsm.decrypt_batch(partition, restored, sealed, b"ctx") == [b"secret"]


def test_each_export_is_freshly_wrapped(hsm, partition, slot):
    assert hsm.keyslot_export(partition, slot) != hsm.keyslot_export(partition, slot)


def test_import_needs_the_same_context_and_partition(hsm, partition, slot):
    wrapped = hsm.keyslot_export(partition, slot, b"key-1/v1")
    with pytest.raises(InvalidCiphertextError):
        hsm.keyslot_import(partition, wrapped, b"key-1/v2")
    with pytest.raises(InvalidCiphertextError):
        hsm.keyslot_import(hsm.partition_create(), wrapped, b"key-1/v1")
    tampered = bytearray(wrapped)
    tampered[20] ^= 1
    with pytest.raises(InvalidCiphertextError):
        hsm.keyslot_import(partition, bytes(tampered), b"key-1/v1")
    with pytest.raises(MalformedNativeCallError):
        hsm.keyslot_import(partition, wrapped[:-1], b"key-1/v1")


def test_partition_survives_a_restart_under_the_same_root_key(partition_restart):
    before, after = partition_restart
    assert before == after


@pytest.fixture
def partition_restart():
    root = os.urandom(32)
    first = NativeHsm(root)
    p = first.partition_create()
    slot = first.keyslot_generate(p)
    sealed = first.encrypt_batch(p, slot, [b"survives"], b"ctx")
    wrapped_partition = first.partition_export(p)
    wrapped_slot = first.keyslot_export(p, slot, b"k")
    first.close()

    second = NativeHsm(root)
    try:
        p2 = second.partition_open(wrapped_partition)
        slot2 = second.keyslot_import(p2, wrapped_slot, b"k")
        return [b"survives"], second.decrypt_batch(p2, slot2, sealed, b"ctx")
    finally:
        second.close()


def test_another_root_key_cannot_open_a_partition(hsm, partition):
    wrapped = hsm.partition_export(partition)
    other = NativeHsm(os.urandom(32))
    try:
        with pytest.raises(InvalidCiphertextError):
            other.partition_open(wrapped)
        assert other.partition_count() == 0
    finally:
        other.close()


def test_sibling_shares_the_root_key(hsm, partition):
    wrapped = hsm.partition_export(partition)
    sibling = hsm.sibling()
    try:
        opened = sibling.partition_open(wrapped)
        assert sibling.partition_count() == 1
        assert opened >= 1
    finally:
        sibling.close()


def test_destroying_a_partition_destroys_its_slots(hsm, partition, slot):
    other = hsm.partition_create()
    kept = hsm.keyslot_generate(other)
    hsm.partition_destroy(partition)
    assert hsm.partition_count() == 1
    assert hsm.slot_count() == 1
    [result] = hsm.encrypt_batch(0, slot, [b"x"])
    assert isinstance(result, KeyUnavailableError)
    assert isinstance(hsm.encrypt_batch(other, kept, [b"x"])[0], bytes)
    with pytest.raises(PartitionUnavailableError):
        hsm.keyslot_generate(partition)
    with pytest.raises(PartitionUnavailableError):
        hsm.partition_destroy(partition)
    with pytest.raises(PartitionUnavailableError):
        hsm.partition_export(partition)


def test_many_slots(hsm, partition):
    handles = [hsm.keyslot_generate(partition) for _ in range(3000)]
    assert hsm.slot_count() == 3000
    sealed = hsm.encrypt_batch(partition, handles, [b"x"] * len(handles))
    for h in handles[::2]:
        hsm.keyslot_destroy(partition, h)
    results = hsm.decrypt_batch(partition, handles, sealed)
    assert results[1::2] == [b"x"] * 1500
    assert all(isinstance(r, KeyUnavailableError) for r in results[::2])
