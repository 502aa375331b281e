"""The HSM's root key changes in the shared fleet and in every dedicated HSM at once,
and partition keys as storage keeps them re-wrap from the old root key to the new."""

from __future__ import annotations

import os
import threading

import pytest

from keyplane.errors import InvalidCiphertextError, ValidationError
from keyplane.hsm import Hsm, Tenancy


def opens_under(root_key: bytes, wrapped: bytes, tenancy: Tenancy) -> bool:
    fresh = Hsm(bytearray(root_key))
    try:
        fresh.open_partition(wrapped, tenancy)
    except InvalidCiphertextError:
        return False
    finally:
        fresh.close()
    return True


def test_every_hsm_switches_and_every_partition_carries_on():
    old, new = os.urandom(32), os.urandom(32)
    hsm = Hsm(bytearray(old))
    try:
        partitions = [
            hsm.create_partition(Tenancy.SHARED),
            hsm.create_partition(Tenancy.DEDICATED),
            hsm.create_partition(Tenancy.DEDICATED),
        ]
        slots = [p.generate_key() for p in partitions]
        sealed = [
            p.encrypt_batch(s, [b"made before"], b"ctx")
            for p, s in zip(partitions, slots, strict=True)
        ]
        given = bytearray(new)
        hsm.set_root_key(given)
        assert given == bytearray(32)  # taken, not kept
        for p, s, blob in zip(partitions, slots, sealed, strict=True):
            assert p.decrypt_batch(s, blob, b"ctx") == [b"made before"]
            assert opens_under(new, p.export(), p.tenancy)
            assert not opens_under(old, p.export(), p.tenancy)
        # Dedicated partitions made from now on are under the new key too.
        later = hsm.create_partition(Tenancy.DEDICATED)
        assert opens_under(new, later.export(), Tenancy.DEDICATED)
    finally:
        hsm.close()


def test_a_root_key_of_the_wrong_size_changes_nothing():
    old = os.urandom(32)
    hsm = Hsm(bytearray(old))
    try:
        partition = hsm.create_partition(Tenancy.DEDICATED)
        with pytest.raises(ValidationError):
            hsm.set_root_key(bytearray(16))
        assert opens_under(old, partition.export(), Tenancy.DEDICATED)
        assert opens_under(old, hsm.create_partition().export(), Tenancy.SHARED)
    finally:
        hsm.close()


def test_stored_partition_keys_rewrap_to_the_new_root_key():
    old, new = os.urandom(32), os.urandom(32)
    hsm = Hsm(bytearray(old))
    try:
        shared = hsm.create_partition(Tenancy.SHARED)
        dedicated = hsm.create_partition(Tenancy.DEDICATED)
        stored = [shared.export(), dedicated.export()]
        rewrapped = hsm.rewrap_partition_keys(stored, new)
        assert opens_under(new, rewrapped[0], Tenancy.SHARED)
        assert opens_under(new, rewrapped[1], Tenancy.DEDICATED)
        assert not opens_under(old, rewrapped[0], Tenancy.SHARED)
    finally:
        hsm.close()


def test_a_key_not_under_the_root_key_fails_the_whole_rewrap():
    hsm = Hsm(bytearray(os.urandom(32)))
    other = Hsm(bytearray(os.urandom(32)))
    try:
        mine = hsm.create_partition().export()
        foreign = other.create_partition().export()
        with pytest.raises(InvalidCiphertextError):
            hsm.rewrap_partition_keys([mine, foreign], os.urandom(32))
    finally:
        hsm.close()
        other.close()


def test_dedicated_partitions_made_during_changes_all_get_the_last_key():
    """A dedicated HSM copies the root key when it is made: made while the key
    changes, it must still end up under the last key set."""
    last = os.urandom(32)
    hsm = Hsm(bytearray(last))
    made = []

    def create() -> None:
        for _ in range(40):
            made.append(hsm.create_partition(Tenancy.DEDICATED))

    try:
        creator = threading.Thread(target=create)
        creator.start()
        while creator.is_alive():
            last = os.urandom(32)
            hsm.set_root_key(bytearray(last))
        creator.join()
        assert len(made) == 40
        assert all(opens_under(last, p.export(), Tenancy.DEDICATED) for p in made)
    finally:
        hsm.close()
