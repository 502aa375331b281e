"""Root key rotation end to end on real files, a real store and a real HSM: a rotation
re-wraps every partition key and nothing else, and a stop at each point of it leaves a
data directory that the next start settles and then decrypts everything in."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keyplane import app, root_rotation
from keyplane import config as config_mod
from keyplane.errors import (
    ConflictError,
    InvalidCiphertextError,
    RootKeyError,
    StoreError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from keyplane.hsm import Hsm, Tenancy
from keyplane.kms import Caller, ClusterSpec, KmsService, RequestContext
from keyplane.kms.ops import crypto, keys
from keyplane.kms.ops import custom_key_stores as cks
from keyplane.storage import (
    ROOT_KEY_ENV,
    PartitionRecord,
    Snapshot,
    SQLiteStore,
    load_root_key,
    lock_key_directory,
    promote_staged_root_key,
    stage_root_key,
    staged_root_key_path,
)

PARTITIONS = (
    ("dedicated:cks-1", Tenancy.DEDICATED),
    ("shared:111122223333", Tenancy.SHARED),
    ("shared:444455556666", Tenancy.SHARED),
)


@dataclass
class Sealed:
    """What one partition holds: a key, as storage keeps it, and a ciphertext."""

    wrapped_slot: bytes
    ciphertext: bytes
    plaintext: bytes


@dataclass
class DataDir:
    """A data directory with a root key file and a store, and the running HSM."""

    path: Path
    store: SQLiteStore
    hsm: Hsm
    sealed: dict[str, Sealed] = field(default_factory=dict)

    @property
    def key_file(self) -> Path:
        return self.path / "root.key"

    @property
    def database(self) -> Path:
        return self.path / "keyplane.db"

    def root_key(self) -> bytes:
        return bytes(load_root_key(self.key_file, create=False, environ={}))

    def files(self) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in sorted(self.path.iterdir())
            if p.name.startswith("root.key")
        }

    def restart(self) -> bytes:
        """Start as a server does, check every ciphertext decrypts, return the key."""
        self.hsm.close()
        snapshot = self.store.load()
        key = root_rotation.settle(
            self.key_file,
            load_root_key(self.key_file, create=False, environ={}),
            snapshot,
        )
        used = bytes(key)
        self.hsm = Hsm(key)
        for record in snapshot.partitions:
            partition = self.hsm.open_partition(
                record.wrapped_key, Tenancy(record.tenancy)
            )
            item = self.sealed[record.name]
            slot = partition.import_key(item.wrapped_slot, b"key/1")
            assert partition.decrypt_batch(slot, [item.ciphertext], b"aad") == [
                item.plaintext
            ]
        assert len(snapshot.partitions) == len(self.sealed)
        return used


@pytest.fixture
def data_dir(tmp_path: Path):
    path = tmp_path / "data"
    key = load_root_key(path / "root.key", create=True, environ={})
    hsm = Hsm(key)
    store = SQLiteStore(path / "keyplane.db")
    world = DataDir(path, store, hsm)
    for name, tenancy in PARTITIONS:
        partition = hsm.create_partition(tenancy)
        store.put_partition(
            PartitionRecord(name, tenancy.value, partition.export(), 1.0)
        )
        slot = partition.generate_key()
        plaintext = f"sealed in {name}".encode()
        [ciphertext] = partition.encrypt_batch(slot, [plaintext], b"aad")
        world.sealed[name] = Sealed(
            partition.export_key(slot, b"key/1"), ciphertext, plaintext
        )
    yield world
    world.hsm.close()
    store.close()


def opens_store(root_key: bytes, data_dir: DataDir) -> bool:
    hsm = Hsm(bytearray(root_key))
    try:
        for record in data_dir.store.load().partitions:
            hsm.open_partition(record.wrapped_key, Tenancy(record.tenancy))
    except InvalidCiphertextError:
        return False
    finally:
        hsm.close()
    return True


def opens_under(root_key: bytes, wrapped: bytes) -> bool:
    """Whether a fresh HSM under ``root_key`` opens a shared partition's key."""
    hsm = Hsm(bytearray(root_key))
    try:
        hsm.open_partition(wrapped)
    except InvalidCiphertextError:
        return False
    finally:
        hsm.close()
    return True


def commit_rewrap(data_dir: DataDir, new_key: bytearray) -> None:
    data_dir.store.rewrap_partitions(
        lambda old: data_dir.hsm.rewrap_partition_keys(old, new_key)
    )


def forms(key: bytes) -> list[bytes]:
    b64 = base64.b64encode(key)
    return [key, b64, b64.rstrip(b"="), key.hex().encode(), repr(key).encode()]


# --- a whole rotation -----------------------------------------------------------------


def test_a_rotation_rewraps_every_partition_and_switches_the_hsm(data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    old = data_dir.root_key()
    before = data_dir.store.load()
    partition = data_dir.hsm.create_partition()  # open through the rotation
    slot = partition.generate_key()
    [blob] = partition.encrypt_batch(slot, [b"in flight"], b"aad")

    count = root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)

    assert count == len(PARTITIONS)
    new = data_dir.root_key()
    assert new != old
    assert list(data_dir.files()) == ["root.key"]
    assert (data_dir.key_file.stat().st_mode & 0o777) == 0o600
    assert opens_store(new, data_dir) and not opens_store(old, data_dir)
    # Only the wrapped partition keys changed.
    after = data_dir.store.load()
    assert [(p.name, p.tenancy, p.created_at) for p in after.partitions] == [
        (p.name, p.tenancy, p.created_at) for p in before.partitions
    ]
    assert all(
        a.wrapped_key != b.wrapped_key
        for a, b in zip(after.partitions, before.partitions, strict=True)
    )
    # The running HSM carries on, and stores new partitions under the new key.
    assert partition.decrypt_batch(slot, [blob], b"aad") == [b"in flight"]
    assert opens_under(new, data_dir.hsm.create_partition().export())
    assert data_dir.restart() == new
    # Counted in the log, and no key in any form.
    assert f"re-wrapped {len(PARTITIONS)} partition keys" in caplog.text
    logged = caplog.text.encode()
    assert not any(f in logged for k in (old, new) for f in forms(k))


def test_rotations_follow_one_another(data_dir):
    keys = {data_dir.root_key()}
    for _ in range(3):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
        keys.add(data_dir.root_key())
    assert len(keys) == 4
    assert data_dir.restart() == data_dir.root_key()


def test_an_empty_store_rotates_too(tmp_path):
    key_file = tmp_path / "root.key"
    old = bytes(load_root_key(key_file, create=True, environ={}))
    hsm = Hsm(bytearray(old))
    with SQLiteStore(tmp_path / "keyplane.db") as store:
        assert root_rotation.rotate(key_file, store, hsm) == 0
    assert bytes(load_root_key(key_file, create=False, environ={})) != old
    hsm.close()


def test_a_staged_key_in_the_way_stops_the_rotation_before_anything(data_dir):
    stage_root_key(data_dir.key_file)
    files, stored = data_dir.files(), data_dir.store.load()
    with pytest.raises(ConflictError, match="restart the server"):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    assert data_dir.files() == files
    assert data_dir.store.load() == stored


def test_a_partition_key_under_another_root_key_stops_the_rotation(data_dir):
    stranger = Hsm(bytearray(os.urandom(32)))
    data_dir.store.put_partition(
        PartitionRecord(
            "shared:999999999999", "shared", stranger.create_partition().export(), 1.0
        )
    )
    stranger.close()
    files, stored = data_dir.files(), data_dir.store.load()
    with pytest.raises(RootKeyError, match="does not unwrap"):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    # Rolled back whole, the staged key removed, and the HSM on the old key still.
    assert data_dir.files() == files
    assert data_dir.store.load() == stored
    assert opens_under(data_dir.root_key(), data_dir.hsm.create_partition().export())


def test_a_closed_store_stops_the_rotation_and_new_partitions(data_dir):
    old = data_dir.root_key()
    partition = data_dir.hsm.create_partition()  # made before, not yet stored
    data_dir.store.close()
    with pytest.raises(StoreError, match="closed"):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    # The store could not be read back, so which key it is under cannot be told: the
    # staged key is kept for the next start to settle, and until then the HSM
    # refuses to make or seal a partition (under either key it could be lost).
    assert data_dir.root_key() == old
    assert staged_root_key_path(data_dir.key_file).exists()
    for tenancy in Tenancy:
        with pytest.raises(RootKeyError, match="until the server restarts"):
            data_dir.hsm.create_partition(tenancy)
    with pytest.raises(RootKeyError, match="until the server restarts"):
        partition.export()
    data_dir.store = SQLiteStore(data_dir.database)
    assert data_dir.restart() == old
    assert list(data_dir.files()) == ["root.key"]
    assert opens_under(old, data_dir.hsm.create_partition().export())


class LandedStore(SQLiteStore):
    """The real store, whose re-wrap commits but then reports a failure (an I/O error
    after the log was written), and whose next read fails too when ``unreadable``."""

    def __init__(self, path: Path, *, unreadable: bool) -> None:
        super().__init__(path)
        self.unreadable = unreadable
        self._fail_next_load = False

    def rewrap_partitions(self, rewrap: Callable[[list[bytes]], Any]) -> int:
        super().rewrap_partitions(rewrap)
        self._fail_next_load = self.unreadable
        raise StoreError("could not re-wrap the partition keys: disk I/O error")

    def load(self) -> Snapshot:
        if self._fail_next_load:
            self._fail_next_load = False
            raise StoreError("could not load the store: disk I/O error")
        return super().load()


def test_a_commit_that_landed_but_failed_finishes_the_rotation(data_dir, caplog):
    old = data_dir.root_key()
    data_dir.store.close()
    data_dir.store = LandedStore(data_dir.database, unreadable=False)
    count = root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    assert count == len(PARTITIONS)
    assert "the re-wrap is there" in caplog.text
    new = data_dir.root_key()
    assert new != old and list(data_dir.files()) == ["root.key"]
    assert opens_under(new, data_dir.hsm.create_partition().export())
    assert data_dir.restart() == new


def test_a_commit_that_landed_unbeknown_stops_new_partitions(data_dir):
    """The commit lands, reports a failure, and the store cannot be read back: the
    store is under the new key while the HSM stays on the old one. A partition stored
    now, under the old key, would not open after the restart that promotes the new."""
    old = data_dir.root_key()
    data_dir.store.close()
    data_dir.store = LandedStore(data_dir.database, unreadable=True)
    with pytest.raises(StoreError, match="disk I/O error"):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    assert data_dir.root_key() == old
    with pytest.raises(RootKeyError, match="until the server restarts"):
        data_dir.hsm.create_partition()
    # A second rotation waits for the restart too.
    with pytest.raises(ConflictError, match="restart the server"):
        root_rotation.rotate(data_dir.key_file, data_dir.store, data_dir.hsm)
    new = data_dir.restart()
    assert new != old and new == data_dir.root_key()
    assert list(data_dir.files()) == ["root.key"]


# --- a stop at each point, then a start -----------------------------------------------


def test_stopped_while_staging_the_new_key(data_dir, caplog):
    old = data_dir.root_key()
    staged = staged_root_key_path(data_dir.key_file)
    staged.touch(mode=0o600)  # created, nothing written yet
    assert data_dir.restart() == old
    assert list(data_dir.files()) == ["root.key"]
    assert "had not committed" in caplog.text


def test_stopped_after_staging_before_the_commit(data_dir, caplog):
    old = data_dir.root_key()
    stage_root_key(data_dir.key_file)
    assert data_dir.restart() == old
    assert list(data_dir.files()) == ["root.key"]
    assert data_dir.root_key() == old
    assert "had not committed" in caplog.text


def test_stopped_after_the_commit_before_the_rename(data_dir, caplog):
    old = data_dir.root_key()
    new = stage_root_key(data_dir.key_file)
    commit_rewrap(data_dir, new)
    assert data_dir.restart() == bytes(new)
    assert list(data_dir.files()) == ["root.key"]
    assert data_dir.root_key() == bytes(new) != old
    assert "finished a root key rotation" in caplog.text
    logged = caplog.text.encode()
    assert not any(f in logged for k in (old, bytes(new)) for f in forms(k))


def test_stopped_after_the_rename(data_dir):
    new = stage_root_key(data_dir.key_file)
    commit_rewrap(data_dir, new)
    promote_staged_root_key(data_dir.key_file)
    assert data_dir.restart() == bytes(new)
    assert list(data_dir.files()) == ["root.key"]


def test_a_staged_key_beside_an_empty_store_is_removed(tmp_path):
    key_file = tmp_path / "root.key"
    old = load_root_key(key_file, create=True, environ={})
    stage_root_key(key_file)
    with SQLiteStore(tmp_path / "keyplane.db") as store:
        assert root_rotation.settle(key_file, old, store.load()) == old
    assert not staged_root_key_path(key_file).exists()


def test_when_neither_key_opens_the_store_both_files_stay(data_dir, caplog):
    stage_root_key(data_dir.key_file)
    stranger = bytearray(os.urandom(32))
    files = data_dir.files()
    assert (
        root_rotation.settle(data_dir.key_file, stranger, data_dir.store.load())
        == stranger
    )
    assert data_dir.files() == files
    assert "neither" in caplog.text


@pytest.mark.parametrize(
    "late_name",
    # Sorted first and sorted last: settle must look past the first partition.
    ["a-before-the-rest:1", "z-after-the-rest:1"],
)
def test_a_store_sealed_under_both_keys_is_refused_untouched(data_dir, late_name):
    """A partition stored under the old key after the re-wrap committed, as a
    partition made during a rotation would be: neither key opens the whole store, and
    either file opens some of it, so neither may be removed or overwritten."""
    new = stage_root_key(data_dir.key_file)
    commit_rewrap(data_dir, new)
    late = data_dir.hsm.create_partition()  # the running HSM is still on the old key
    data_dir.store.put_partition(PartitionRecord(late_name, "shared", late.export(), 2))
    files, stored = data_dir.files(), data_dir.store.load()
    with pytest.raises(RootKeyError, match="partly under") as refused:
        root_rotation.settle(
            data_dir.key_file,
            load_root_key(data_dir.key_file, create=False, environ={}),
            stored,
        )
    assert "3 only under it" in str(refused.value)
    assert data_dir.files() == files
    assert data_dir.store.load() == stored


def test_a_staged_key_that_opens_part_of_the_store_is_kept(data_dir, caplog):
    # The staged key opens every partition but one that opens under no key at all:
    # the key file's key opens nothing, yet nothing is promoted on a guess.
    new = stage_root_key(data_dir.key_file)
    commit_rewrap(data_dir, new)
    stranger = Hsm(bytearray(os.urandom(32)))
    data_dir.store.put_partition(
        PartitionRecord(
            "shared:999999999999", "shared", stranger.create_partition().export(), 2
        )
    )
    stranger.close()
    files = data_dir.files()
    old = load_root_key(data_dir.key_file, create=False, environ={})
    assert root_rotation.settle(data_dir.key_file, old, data_dir.store.load()) == old
    assert data_dir.files() == files
    assert "1 partitions open under neither" in caplog.text


# --- a running server, and offline ----------------------------------------------------


def test_a_server_with_its_key_in_the_environment_refuses(data_dir):
    rotation = root_rotation.in_service(
        data_dir.key_file, data_dir.store, data_dir.hsm, from_environment=True
    )
    files = data_dir.files()
    with pytest.raises(UnsupportedOperationError, match=ROOT_KEY_ENV):
        rotation()
    assert data_dir.files() == files


def test_offline_rotation(data_dir):
    old = data_dir.root_key()
    data_dir.store.close()
    count = root_rotation.rotate_offline(
        data_dir.key_file, data_dir.database, environ={}
    )
    assert count == len(PARTITIONS)
    data_dir.store = SQLiteStore(data_dir.database)
    assert data_dir.restart() == data_dir.root_key() != old


def test_offline_rotation_finishes_a_rotation_cut_short_first(data_dir):
    new = stage_root_key(data_dir.key_file)
    commit_rewrap(data_dir, new)
    data_dir.store.close()
    assert root_rotation.rotate_offline(data_dir.key_file, data_dir.database, {}) == 3
    data_dir.store = SQLiteStore(data_dir.database)
    assert data_dir.restart() == data_dir.root_key() != bytes(new)


def test_offline_rotation_is_refused_while_a_server_holds_the_directory(data_dir):
    server = lock_key_directory(data_dir.path)
    assert server is not None
    files = data_dir.files()
    try:
        with pytest.raises(ConflictError, match="server is running"):
            root_rotation.rotate_offline(data_dir.key_file, data_dir.database, {})
    finally:
        os.close(server)
    assert data_dir.files() == files


def test_offline_rotation_needs_a_key_file_and_a_store(data_dir, tmp_path):
    with pytest.raises(UnsupportedOperationError, match=ROOT_KEY_ENV):
        root_rotation.rotate_offline(
            data_dir.key_file, data_dir.database, {ROOT_KEY_ENV: "x"}
        )
    with pytest.raises(StoreNotFoundError):
        root_rotation.rotate_offline(tmp_path / "root.key", tmp_path / "none.db", {})


def test_offline_rotation_under_another_root_key_changes_nothing(data_dir):
    data_dir.store.close()
    data_dir.key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    files = data_dir.files()
    with pytest.raises(RootKeyError, match="does not unwrap"):
        root_rotation.rotate_offline(data_dir.key_file, data_dir.database, {})
    assert data_dir.files() == files
    data_dir.store = SQLiteStore(data_dir.database)


# --- in a running service -------------------------------------------------------------
# Partitions are made by requests while a rotation runs on the writer thread: each must
# end up stored under the key the rotation ends with, whatever the timing, and a
# rotation or a partition's store write, once started, runs to its end.

ACCOUNT, NEW_ACCOUNT = "111122223333", "444455556666"


def ctx(account: str) -> RequestContext:
    return RequestContext(
        Caller(f"arn:aws:iam::{account}:root", account), "us-east-1", "r"
    )


class GatedStore(SQLiteStore):
    """The real store, whose re-wrap transaction (or partition write) waits inside,
    once armed, until the test lets it go: a big store or a slow disk, on cue."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed: str | None = None
        self.inside = threading.Event()
        self.go = threading.Event()

    def _wait(self, what: str) -> None:
        if self.armed == what:
            self.armed = None
            self.inside.set()
            assert self.go.wait(10)

    def rewrap_partitions(self, rewrap: Callable[[list[bytes]], Any]) -> int:
        def gated(old: list[bytes]) -> Any:
            new = rewrap(old)
            self._wait("rewrap")
            return new

        return super().rewrap_partitions(gated)

    def put_partition(self, record: PartitionRecord) -> None:
        self._wait("put_partition")
        super().put_partition(record)


class Clock:
    def __call__(self) -> float:
        return 1_700_000_000.0


def serve(path: Path, store: SQLiteStore) -> KmsService:
    """A service on the data directory ``path``, started as the app starts one."""
    key_file = path / "root.key"
    snapshot = store.load()
    root_key = load_root_key(key_file, create=True, environ={})
    hsm = Hsm(root_rotation.settle(key_file, root_key, snapshot))
    svc = KmsService(hsm, store, Clock(), "us-east-1", asyncio.get_running_loop())
    svc.restore(snapshot)
    svc.root_key_rotation = root_rotation.in_service(
        key_file, store, hsm, from_environment=False
    )
    return svc


def stop(svc: KmsService) -> None:
    svc.close()
    svc.store.close()
    svc.hsm.close()


async def encrypt(svc: KmsService, account: str) -> tuple[str, bytes]:
    key = await keys.create_key(svc, ctx(account))
    sealed = await crypto.encrypt(
        svc, ctx(account), key_id=key.key_id, plaintext=b"sealed"
    )
    return key.key_id, sealed.ciphertext_blob


async def restart_and_decrypt(path: Path, made: list[tuple[str, bytes]]) -> None:
    """Start again on ``path``: every partition opens and every blob decrypts."""
    svc = serve(path, SQLiteStore(path / "keyplane.db"))
    try:
        assert list(path.glob("root.key*")) == [path / "root.key"]
        for key_id, blob in made:
            account = svc.keys[key_id].account
            opened = await crypto.decrypt(svc, ctx(account), ciphertext_blob=blob)
            assert opened.plaintext == b"sealed"
    finally:
        stop(svc)


def new_account_key(svc: KmsService) -> Awaitable[Any]:
    return keys.create_key(svc, ctx(NEW_ACCOUNT))


def new_cluster(svc: KmsService) -> Awaitable[Any]:
    anchor = "-----BEGIN CERTIFICATE-----\nMIIBanchor\n-----END CERTIFICATE-----\n"
    spec = ClusterSpec(
        cluster_id="cluster-abcdefghijk", account=ACCOUNT, trust_anchor=anchor
    )
    return cks.create_cloudhsm_cluster(svc, ctx(ACCOUNT), spec)


MAKERS = [
    pytest.param(new_account_key, id="account"),
    pytest.param(new_cluster, id="cluster"),
]


@pytest.mark.parametrize("make_partition", MAKERS)
def test_a_partition_made_during_a_rotation_is_sealed_under_the_new_key(
    tmp_path, make_partition
):
    path = tmp_path / "data"

    async def main() -> None:
        store = GatedStore(path / "keyplane.db")
        svc = serve(path, store)
        try:
            made = [await encrypt(svc, ACCOUNT)]
            store.armed = "rewrap"
            rotation = asyncio.ensure_future(svc.rotate_root_key())
            await asyncio.to_thread(store.inside.wait, 10)
            # Now the re-wrap runs on the writer thread; the new partition waits.
            making = asyncio.ensure_future(make_partition(svc))
            await asyncio.sleep(0.05)
            assert not making.done()
            store.go.set()
            assert await rotation == 1
            await making
        finally:
            stop(svc)
        await restart_and_decrypt(path, made)

    asyncio.run(main())


def test_a_cancelled_rotation_holds_partitions_back_until_it_ends(tmp_path):
    path = tmp_path / "data"

    async def main() -> None:
        store = GatedStore(path / "keyplane.db")
        svc = serve(path, store)
        try:
            made = [await encrypt(svc, ACCOUNT)]
            store.armed = "rewrap"
            rotation = asyncio.ensure_future(svc.rotate_root_key())
            await asyncio.to_thread(store.inside.wait, 10)
            rotation.cancel()  # a client gone, a wait_for, a shutdown
            await asyncio.sleep(0)
            assert svc.sealing.locked()
            making = asyncio.ensure_future(encrypt(svc, NEW_ACCOUNT))
            await asyncio.sleep(0.05)
            assert not making.done()
            store.go.set()
            with pytest.raises(asyncio.CancelledError):
                await rotation
            made.append(await making)
        finally:
            stop(svc)
        await restart_and_decrypt(path, made)

    asyncio.run(main())


def test_a_cancelled_partition_write_keeps_the_stored_partition(tmp_path):
    path = tmp_path / "data"

    async def main() -> None:
        store = GatedStore(path / "keyplane.db")
        svc = serve(path, store)
        try:
            store.armed = "put_partition"
            making = asyncio.ensure_future(encrypt(svc, NEW_ACCOUNT))
            await asyncio.to_thread(store.inside.wait, 10)
            making.cancel()
            await asyncio.sleep(0)
            assert svc.sealing.locked()  # the write may yet commit
            store.go.set()
            with pytest.raises(asyncio.CancelledError):
                await making
            # The partition the store took is the one the service keeps using.
            made = [await encrypt(svc, NEW_ACCOUNT)]
            assert await svc.rotate_root_key() == 1
        finally:
            stop(svc)
        await restart_and_decrypt(path, made)

    asyncio.run(main())


def test_a_rotation_of_unknown_outcome_stops_new_partitions_until_a_restart(tmp_path):
    path = tmp_path / "data"

    async def main() -> None:
        svc = serve(path, LandedStore(path / "keyplane.db", unreadable=True))
        try:
            made = [await encrypt(svc, ACCOUNT)]
            with pytest.raises(StoreError, match="disk I/O error"):
                await svc.rotate_root_key()
            for make_partition in (new_account_key, new_cluster):
                with pytest.raises(RootKeyError, match="until the server restarts"):
                    await make_partition(svc)
            # The partitions there keep serving.
            made.append(await encrypt(svc, ACCOUNT))
        finally:
            stop(svc)
        await restart_and_decrypt(path, made)

    asyncio.run(main())


def test_one_server_per_data_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_KEY_ENV, raising=False)
    monkeypatch.setattr(app, "DATA_DIR_WAIT_SECONDS", 0.2)
    path = tmp_path / "data"
    config = config_mod.load(None, environ={}, data_dir=path, port=0, auth="off")

    async def main() -> None:
        first = await app.start(config)
        try:
            with pytest.raises(
                ConflictError, match="another keyplane server"
            ) as refused:
                await app.start(config)
            assert str(path) in str(refused.value)
            with pytest.raises(ConflictError, match="server is running"):
                root_rotation.rotate_offline(path / "root.key", config.database, {})
        finally:
            await first.stop()
        second = await app.start(config)
        await second.stop()

    asyncio.run(main())
