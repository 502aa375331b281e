"""The batch calls of the native HSM: round trips, output format, per-item refusals."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane import native
from keyplane.errors import (
    InvalidCiphertextError,
    KeyUnavailableError,
    MalformedNativeCallError,
    PartitionMismatchError,
    ValidationError,
)
from keyplane.native import NativeHsm, hazmat

# Sizes either side of the switch from scratch descriptors to numpy ones.
BATCH_SIZES = [1, 2, 7, 31, 32, 33, 100, 1000]


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_encrypt_decrypt_round_trip_with_per_item_aad(hsm, partition, slot, n):
    plaintexts = [os.urandom(1 + i % 97) for i in range(n)]
    aads = [os.urandom(i % 70) for i in range(n)]
    sealed = hsm.encrypt_batch(partition, slot, plaintexts, aads)
    assert [len(s) for s in sealed] == [
        len(p) + native.SEAL_OVERHEAD for p in plaintexts
    ]
    assert hsm.decrypt_batch(partition, slot, sealed, aads) == plaintexts


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_round_trip_with_shared_and_without_aad(hsm, partition, slot, n):
    plaintexts = [os.urandom(32) for _ in range(n)]
    shared = hsm.encrypt_batch(partition, slot, plaintexts, b"one context")
    assert hsm.decrypt_batch(partition, slot, shared, b"one context") == plaintexts
    bare = hsm.encrypt_batch(partition, slot, plaintexts)
    assert hsm.decrypt_batch(partition, slot, bare) == plaintexts
    assert hsm.decrypt_batch(partition, slot, bare, b"") == plaintexts


def test_output_is_standard_aes_gcm(hsm, partition):
    key = os.urandom(32)
    handle = hazmat.import_raw_key(hsm, partition, bytearray(key))
    [sealed] = hsm.encrypt_batch(partition, handle, [b"attack at dawn"], b"aad")
    iv, body = sealed[: native.IV_BYTES], sealed[native.IV_BYTES :]
    assert AESGCM(key).decrypt(iv, body, b"aad") == b"attack at dawn"


def test_every_iv_is_fresh(hsm, partition, slot):
    sealed = []
    for n in (1, 1, 5, 64, 3000):
        sealed += hsm.encrypt_batch(partition, slot, [b"same"] * n, b"same")
    ivs = {s[: native.IV_BYTES] for s in sealed}
    assert len(ivs) == len(sealed)


def test_items_of_many_slots_in_one_batch(hsm, partition):
    slots = [hsm.keyslot_generate(partition) for _ in range(9)]
    handles = [slots[i % len(slots)] for i in range(200)]
    plaintexts = [os.urandom(16) for _ in handles]
    sealed = hsm.encrypt_batch(partition, handles, plaintexts)
    assert hsm.decrypt_batch(partition, handles, sealed) == plaintexts
    # Each item opens only under its own slot.
    rotated = handles[1:] + handles[:1]
    opened = hsm.decrypt_batch(partition, rotated, sealed)
    for h, r, result in zip(handles, rotated, opened, strict=True):
        if h != r:
            assert isinstance(result, InvalidCiphertextError)


@pytest.mark.parametrize("n", [1, 5, 50])
def test_a_bad_item_fails_alone(hsm, partition, slot, n):
    plaintexts = [os.urandom(8) for _ in range(n)]
    plaintexts[n // 2] = b""
    results = hsm.encrypt_batch(partition, slot, plaintexts)
    for i, result in enumerate(results):
        if i == n // 2:
            assert isinstance(result, ValidationError)
        else:
            assert hsm.decrypt_batch(partition, slot, [result]) == [plaintexts[i]]


def test_length_limits(hsm, partition, slot):
    top = native.MAX_INPUT_BYTES
    results = hsm.encrypt_batch(partition, slot, [b"x" * top, b"x" * (top + 1), b"x"])
    assert len(results[0]) == top + native.SEAL_OVERHEAD
    assert isinstance(results[1], ValidationError)
    assert isinstance(results[2], bytes)
    too_much_aad = b"a" * (native.MAX_AAD_BYTES + 1)
    [result] = hsm.encrypt_batch(partition, slot, [b"x"], too_much_aad)
    assert isinstance(result, ValidationError)


@pytest.mark.parametrize("size", [0, 1, 27, 28])
def test_decrypt_refuses_what_cannot_be_a_sealed_item(hsm, partition, slot, size):
    for n in (1, 3):
        results = hsm.decrypt_batch(partition, slot, [os.urandom(size)] * n)
        assert all(isinstance(r, ValidationError) for r in results)


def test_destroyed_slot_is_refused_per_item(hsm, partition, slot):
    other = hsm.keyslot_generate(partition)
    sealed = hsm.encrypt_batch(partition, slot, [b"kept"])
    hsm.keyslot_destroy(partition, other)
    for n in (1, 4, 40):
        handles = [slot, other] * (n // 2) or [other]
        results = hsm.encrypt_batch(partition, handles, [b"x"] * len(handles))
        for h, r in zip(handles, results, strict=True):
            assert isinstance(r, KeyUnavailableError if h == other else bytes)
    assert hsm.decrypt_batch(partition, slot, sealed) == [b"kept"]
    with pytest.raises(KeyUnavailableError):
        hsm.keyslot_destroy(partition, other)


def test_handle_of_another_partition_is_refused(hsm, partition, slot):
    other_partition = hsm.partition_create()
    foreign = hsm.keyslot_generate(other_partition)
    for n in (1, 3, 40):
        results = hsm.encrypt_batch(partition, [foreign] * n, [b"x"] * n)
        assert all(isinstance(r, PartitionMismatchError) for r in results)
    # Scope 0 means any partition of this HSM: the shared fleet mixes tenants.
    [sealed] = hsm.encrypt_batch(0, foreign, [b"x"])
    assert hsm.decrypt_batch(other_partition, foreign, [sealed]) == [b"x"]
    with pytest.raises(PartitionMismatchError):
        hsm.keyslot_export(partition, foreign)
    with pytest.raises(PartitionMismatchError):
        hsm.keyslot_destroy(partition, foreign)


def test_handle_of_another_hsm_is_refused(hsm, partition):
    elsewhere = NativeHsm(os.urandom(32))
    try:
        foreign = elsewhere.keyslot_generate(elsewhere.partition_create())
        for scope in (0, partition):
            for n in (1, 40):
                results = hsm.encrypt_batch(scope, [foreign] * n, [b"x"] * n)
                assert all(isinstance(r, PartitionMismatchError) for r in results)
    finally:
        elsewhere.close()


def test_handles_are_never_reused(hsm, partition):
    seen = set()
    for _ in range(50):
        handle = hsm.keyslot_generate(partition)
        assert handle not in seen
        seen.add(handle)
        hsm.keyslot_destroy(partition, handle)
    assert hsm.slot_count() == 0


@pytest.mark.parametrize("n", [1, 3, 33, 500])
def test_generate_data_keys(hsm, partition, slot, n):
    aads = [b"ctx-%d" % i for i in range(n)]
    keys = hsm.generate_data_key_batch(partition, slot, 32, n, aads)
    assert len(keys) == n
    plain = [k for k, _ in keys]
    assert all(len(k) == 32 for k in plain)
    assert len(set(plain)) == n
    assert all(len(s) == 32 + native.SEAL_OVERHEAD for _, s in keys)
    assert hsm.decrypt_batch(partition, slot, [s for _, s in keys], aads) == plain


def test_data_key_sizes(hsm, partition, slot):
    sizes = [1, 16, 32, 64, native.MAX_DATA_KEY_BYTES, 0, native.MAX_DATA_KEY_BYTES + 1]
    keys = hsm.generate_data_key_batch(partition, slot, sizes, len(sizes))
    for size, result in zip(sizes, keys, strict=True):
        if 1 <= size <= native.MAX_DATA_KEY_BYTES:
            key, sealed = result
            assert len(key) == size
            assert hsm.decrypt_batch(partition, slot, [sealed]) == [key]
        else:
            assert isinstance(result, ValidationError)
    for bad in (0, -1, native.MAX_DATA_KEY_BYTES + 1):
        [result] = hsm.generate_data_key_batch(partition, slot, bad, 1)
        assert isinstance(result, ValidationError)


def test_columns_must_agree(hsm, partition, slot):
    with pytest.raises(ValidationError):
        hsm.encrypt_batch(partition, [slot, slot], [b"x"] * 3)
    with pytest.raises(ValidationError):
        hsm.encrypt_batch(partition, slot, [b"x"] * 3, [b"a", b"b"])
    with pytest.raises(ValidationError):
        hsm.encrypt_batch(partition, [slot, slot], [b"x"])
    with pytest.raises(ValidationError):
        hsm.generate_data_key_batch(partition, slot, [32, 32], 3)
    with pytest.raises(ValidationError):
        hsm.generate_data_key_batch(partition, slot, 32, -1)
    assert hsm.encrypt_batch(partition, slot, []) == []
    assert hsm.generate_data_key_batch(partition, slot, 32, 0) == []


def test_random_bytes():
    assert native.random_bytes(0) == b""
    draws = [native.random_bytes(n) for n in (1, 12, 32, 4096, 100_000)]
    assert [len(d) for d in draws] == [1, 12, 32, 4096, 100_000]
    assert len({native.random_bytes(16) for _ in range(1000)}) == 1000
    with pytest.raises(ValidationError):
        native.random_bytes(-1)


def test_closed_hsm_refuses_calls():
    h = NativeHsm(os.urandom(32))
    p = h.partition_create()
    h.close()
    h.close()  # idempotent
    with pytest.raises(MalformedNativeCallError):
        h.keyslot_generate(p)
    with pytest.raises(MalformedNativeCallError):
        h.encrypt_batch(p, 1, [b"x"])
    assert "closed" in repr(h)


def test_root_key_must_be_32_bytes():
    for size in (0, 16, 31, 33):
        with pytest.raises(ValidationError):
            NativeHsm(os.urandom(size))
