"""Rotating an HSM's root key: partition keys re-wrapped under a new root key open only
under it, open partitions and their ciphertexts carry on, and batches in flight on
other threads never notice the switch."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyplane import native
from keyplane.errors import (
    InvalidCiphertextError,
    MalformedNativeCallError,
    ValidationError,
)
from keyplane.native import NativeHsm


def opens_under(root_key: bytes, wrapped: bytes) -> bool:
    """Whether a fresh HSM under ``root_key`` opens the wrapped partition key."""
    fresh = NativeHsm(root_key)
    try:
        fresh.partition_open(wrapped)
    except InvalidCiphertextError:
        return False
    finally:
        fresh.close()
    return True


def test_a_rewrapped_partition_key_opens_only_under_the_new_root_key():
    old, new = os.urandom(32), os.urandom(32)
    hsm = NativeHsm(old)
    try:
        partitions = [hsm.partition_create() for _ in range(3)]
        stored = [hsm.partition_export(p) for p in partitions]
        rewrapped = hsm.partition_rewrap_batch(stored, new)
        assert all(isinstance(w, bytes) for w in rewrapped)
        assert all(len(w) == native.WRAPPED_KEY_BYTES for w in rewrapped)
        for before, after in zip(stored, rewrapped, strict=True):
            assert opens_under(new, after) and not opens_under(old, after)
            assert opens_under(old, before) and not opens_under(new, before)
        # Re-wrapping changes nothing in the HSM itself: exports are still under old.
        assert opens_under(old, hsm.partition_export(partitions[0]))
    finally:
        hsm.close()


def test_the_rewrapped_key_is_the_same_partition_key():
    old, new = os.urandom(32), os.urandom(32)
    hsm = NativeHsm(old)
    partition = hsm.partition_create()
    slot = hsm.keyslot_generate(partition)
    sealed = hsm.encrypt_batch(partition, slot, [b"made before"], b"ctx")
    wrapped_slot = hsm.keyslot_export(partition, slot, b"key-1/v1")
    [rewrapped] = hsm.partition_rewrap_batch([hsm.partition_export(partition)], new)
    hsm.close()

    fresh = NativeHsm(new)
    try:
        reopened = fresh.partition_open(rewrapped)
        restored = fresh.keyslot_import(reopened, wrapped_slot, b"key-1/v1")
        assert fresh.decrypt_batch(reopened, restored, sealed, b"ctx") == [
            b"made before"
        ]
    finally:
        fresh.close()


def test_items_that_do_not_rewrap_fail_alone(hsm, partition):
    other = NativeHsm(os.urandom(32))
    foreign = other.partition_export(other.partition_create())
    other.close()
    good = hsm.partition_export(partition)
    altered = bytearray(good)
    altered[30] ^= 1
    results = hsm.partition_rewrap_batch(
        [good, foreign, bytes(altered), good[:-1], bytes(len(good)), good],
        os.urandom(32),
    )
    assert isinstance(results[0], bytes)
    assert isinstance(results[1], InvalidCiphertextError)
    assert isinstance(results[2], InvalidCiphertextError)
    assert isinstance(results[3], MalformedNativeCallError)  # one byte short
    assert isinstance(results[4], MalformedNativeCallError)  # no version byte
    assert isinstance(results[5], bytes)
    assert results[0] != results[5]  # a fresh IV for each


def test_an_empty_rewrap_is_empty(hsm):
    assert hsm.partition_rewrap_batch([], os.urandom(32)) == []


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_root_key_of_the_wrong_size_is_refused(hsm, partition, size):
    wrapped = hsm.partition_export(partition)
    with pytest.raises(ValidationError):
        hsm.partition_rewrap_batch([wrapped], os.urandom(size))
    with pytest.raises(ValidationError):
        hsm.set_root_key(os.urandom(size))
    # Nothing changed: the HSM still exports under the key it started with.
    assert hsm.partition_open(hsm.partition_export(partition))


def test_set_root_key_keeps_partitions_open_and_exports_under_the_new_key():
    old, new = os.urandom(32), os.urandom(32)
    hsm = NativeHsm(old)
    try:
        partition = hsm.partition_create()
        slot = hsm.keyslot_generate(partition)
        sealed = hsm.encrypt_batch(partition, slot, [b"before"], b"a")
        before = hsm.partition_export(partition)

        hsm.set_root_key(new)

        # The partition and its slot carry on: old ciphertexts open, new ones seal.
        assert hsm.decrypt_batch(partition, slot, sealed, b"a") == [b"before"]
        again = hsm.encrypt_batch(partition, slot, [b"after"], b"a")
        assert hsm.decrypt_batch(partition, slot, again, b"a") == [b"after"]
        # Exports are under the new root key now, and only under it.
        after = hsm.partition_export(partition)
        assert opens_under(new, after) and not opens_under(old, after)
        # A key stored under the old root key no longer opens in this HSM...
        with pytest.raises(InvalidCiphertextError):
            hsm.partition_open(before)
        # ... nor in a fresh one under the new key, while the new export does.
        assert not opens_under(new, before)
        assert hsm.partition_open(after) != partition
        # Re-wrapping now starts from the new key.
        [onward] = hsm.partition_rewrap_batch([after], old)
        assert opens_under(old, onward)
    finally:
        hsm.close()


def test_a_sibling_made_after_a_change_has_the_new_root_key():
    old, new = os.urandom(32), os.urandom(32)
    shared = NativeHsm(old)
    before = shared.sibling()
    shared.set_root_key(new)
    after = shared.sibling()
    try:
        assert opens_under(new, after.partition_export(after.partition_create()))
        # A sibling is a copy: a change to its origin does not reach it.
        assert opens_under(old, before.partition_export(before.partition_create()))
    finally:
        for h in (shared, before, after):
            h.close()


def test_batches_on_other_threads_never_notice_the_root_key_change():
    """Encrypt, decrypt and data keys keep working on several threads while the root
    key changes and partition keys are re-wrapped over and over."""
    hsm = NativeHsm(os.urandom(32))
    partitions = [hsm.partition_create() for _ in range(2)]
    slots = [hsm.keyslot_generate(p) for p in partitions]
    made_before = [
        hsm.encrypt_batch(p, s, [b"x" * 40] * 8, b"ctx")
        for p, s in zip(partitions, slots, strict=True)
    ]
    stop = threading.Event()
    changes = 0

    def work(seed: int) -> int:
        done = 0
        while not stop.is_set() or done < 20:
            i = (seed + done) % 2
            p, s = partitions[i], slots[i]
            assert hsm.decrypt_batch(p, s, made_before[i], b"ctx") == [b"x" * 40] * 8
            n = 1 + (seed * 7 + done) % 50
            plaintexts = [os.urandom(1 + j % 64) for j in range(n)]
            sealed = hsm.encrypt_batch(p, s, plaintexts, b"ctx")
            assert hsm.decrypt_batch(p, s, sealed, b"ctx") == plaintexts
            keys = hsm.generate_data_key_batch(p, s, 32, n, b"ctx")
            opened = hsm.decrypt_batch(p, s, [w for _, w in keys], b"ctx")
            assert opened == [k for k, _ in keys]
            done += 1
        return done

    try:
        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(work, seed) for seed in range(4)]
            root = os.urandom(32)
            for _ in range(200):
                stored = [hsm.partition_export(p) for p in partitions]
                new = os.urandom(32)
                rewrapped = hsm.partition_rewrap_batch(stored, new)
                assert all(isinstance(w, bytes) for w in rewrapped)
                hsm.set_root_key(new)
                root = new
                changes += 1
            stop.set()
            assert all(w.result() >= 20 for w in workers)
        assert changes == 200
        assert opens_under(root, hsm.partition_export(partitions[0]))
    finally:
        stop.set()
        hsm.close()
