"""A root key rotation's storage side: every partition key replaced in one transaction,
and the staged next root key file beside the key file."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from keyplane.errors import ConflictError, RootKeyError, StoreError, ValidationError
from keyplane.storage import (
    SQLiteStore,
    discard_staged_root_key,
    load_root_key,
    load_staged_root_key,
    lock_key_directory,
    promote_staged_root_key,
    stage_root_key,
    staged_root_key_path,
)

from .factories import SHARED, key, material, partition

OTHER = "dedicated:cks-1"


def wrapped_keys(store: SQLiteStore) -> dict[str, bytes]:
    return {p.name: p.wrapped_key for p in store.load().partitions}


@pytest.fixture
def two(store: SQLiteStore) -> SQLiteStore:
    store.put_partition(partition(OTHER, "dedicated"))
    k = key()
    store.create_key(k, material(k.key_id))
    return store


# --- the transaction ----------------------------------------------------------------


def test_every_partition_key_is_replaced_and_nothing_else(two):
    before = two.load()
    seen: list[list[bytes]] = []

    def rewrap(old: list[bytes]) -> list[bytes]:
        seen.append(old)
        return [b"new:" + w for w in old]

    assert two.rewrap_partitions(rewrap) == 2
    after = two.load()
    # The callback saw every stored key, in name order.
    assert seen == [[p.wrapped_key for p in before.partitions]]
    assert [p.name for p in before.partitions] == [OTHER, SHARED]
    assert wrapped_keys(two) == {
        p.name: b"new:" + p.wrapped_key for p in before.partitions
    }
    # Tenancy, creation time and everything that is not a partition key stay.
    assert [(p.name, p.tenancy, p.created_at) for p in after.partitions] == [
        (p.name, p.tenancy, p.created_at) for p in before.partitions
    ]
    assert (after.keys, after.materials, after.aliases, after.grants) == (
        before.keys,
        before.materials,
        before.aliases,
        before.grants,
    )
    assert two.integrity_check() == []


def test_an_empty_store_rewraps_nothing(db_path):
    with SQLiteStore(db_path) as store:
        assert store.rewrap_partitions(lambda old: old) == 0


def test_a_failing_rewrap_changes_nothing(two):
    before = wrapped_keys(two)

    def rewrap(old: list[bytes]) -> list[bytes]:
        raise RootKeyError("a partition key does not unwrap")

    with pytest.raises(RootKeyError):
        two.rewrap_partitions(rewrap)
    assert wrapped_keys(two) == before


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(lambda old: [b"only one"], id="too-few"),
        pytest.param(lambda old: [b"x"] * (len(old) + 1), id="too-many"),
        pytest.param(lambda old: [b"fine", "not bytes"], id="not-bytes"),
        pytest.param(lambda old: [b"fine", bytearray(b"mutable")], id="bytearray"),
    ],
)
def test_a_malformed_rewrap_is_refused_whole(two, result):
    before = wrapped_keys(two)
    with pytest.raises(ValidationError):
        two.rewrap_partitions(result)
    assert wrapped_keys(two) == before


def test_a_closed_store_refuses(store):
    store.close()
    with pytest.raises(StoreError):
        store.rewrap_partitions(lambda old: old)


def test_the_rewrap_sees_a_partition_added_just_before(two, db_path):
    """The keys are read inside the write transaction: a partition another connection
    committed first is re-wrapped with the rest."""
    with SQLiteStore(db_path) as other:
        other.put_partition(partition("shared:444455556666"))
    assert two.rewrap_partitions(lambda old: [b"r"] * len(old)) == 3
    assert set(wrapped_keys(two).values()) == {b"r"}


# --- the staged next root key -------------------------------------------------------


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_staged_key_is_private_durable_and_loads_back(tmp_path):
    key_file = tmp_path / "root.key"
    old = load_root_key(key_file, create=True, environ={})
    assert load_staged_root_key(key_file) is None

    new = stage_root_key(key_file)

    staged = staged_root_key_path(key_file)
    assert staged == tmp_path / "root.key.next"
    assert _mode(staged) == 0o600
    assert len(new) == 32 and new != old
    assert load_staged_root_key(key_file) == new
    assert load_root_key(key_file, create=False, environ={}) == old


def test_a_second_stage_is_a_conflict_and_keeps_the_first(tmp_path):
    key_file = tmp_path / "root.key"
    first = stage_root_key(key_file)
    with pytest.raises(ConflictError, match="did not finish"):
        stage_root_key(key_file)
    assert load_staged_root_key(key_file) == first


def test_promote_replaces_the_key_file(tmp_path):
    key_file = tmp_path / "root.key"
    load_root_key(key_file, create=True, environ={})
    new = stage_root_key(key_file)
    promote_staged_root_key(key_file)
    assert load_root_key(key_file, create=False, environ={}) == new
    assert _mode(key_file) == 0o600
    assert not staged_root_key_path(key_file).exists()
    assert sorted(os.listdir(tmp_path)) == ["root.key"]


def test_discard_removes_only_the_staged_key(tmp_path):
    key_file = tmp_path / "root.key"
    old = load_root_key(key_file, create=True, environ={})
    stage_root_key(key_file)
    discard_staged_root_key(key_file)
    discard_staged_root_key(key_file)  # nothing there: fine
    assert load_staged_root_key(key_file) is None
    assert load_root_key(key_file, create=False, environ={}) == old


def test_a_staged_key_is_checked_like_the_key_file(tmp_path):
    key_file = tmp_path / "root.key"
    staged = staged_root_key_path(key_file)
    staged.write_text(base64.b64encode(os.urandom(32)).decode())
    staged.chmod(0o644)
    with pytest.raises(RootKeyError, match="open to group or others"):
        load_staged_root_key(key_file)
    staged.chmod(0o600)
    staged.write_text("")  # a stop before the key was written
    with pytest.raises(RootKeyError, match="empty"):
        load_staged_root_key(key_file)


def test_a_failed_promote_is_a_root_key_error(tmp_path):
    with pytest.raises(RootKeyError, match="cannot rename"):
        promote_staged_root_key(tmp_path / "root.key")  # nothing staged


# --- the data directory lock ----------------------------------------------------------


def test_one_holder_of_the_directory_at_a_time(tmp_path):
    # Two descriptors conflict even in one process (flock locks open files), so two
    # servers in one process are kept apart as two processes are.
    first = lock_key_directory(tmp_path)
    assert first is not None
    assert lock_key_directory(tmp_path) is None
    os.close(first)
    second = lock_key_directory(tmp_path)
    assert second is not None
    os.close(second)


def test_the_lock_can_create_its_directory(tmp_path):
    directory = tmp_path / "new" / "data"
    with pytest.raises(RootKeyError):
        lock_key_directory(directory)
    fd = lock_key_directory(directory, create=True)
    assert fd is not None
    os.close(fd)
    assert _mode(directory) == 0o700
