"""Custom key stores in-process: the connection state machine and each transition it
refuses, keys that live in their cluster's dedicated partition and are served by the
cluster's own batcher and threads, Unavailable while disconnected, the store's request
quota, deletion in the cluster, and everything restored (and reconnected) from the
store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keyplane.errors import (
    CloudHsmClusterInUseError,
    CloudHsmClusterInvalidConfigurationError,
    CloudHsmClusterNotFoundError,
    CloudHsmClusterNotRelatedError,
    CustomKeyStoreHasKeysError,
    CustomKeyStoreInvalidStateError,
    CustomKeyStoreNameInUseError,
    CustomKeyStoreNotFoundError,
    IncorrectTrustAnchorError,
    KeyStateError,
    ThrottlingError,
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.hsm import Hsm, Tenancy
from keyplane.kms import (
    Caller,
    ClusterSpec,
    ConnectionState,
    KeyState,
    KmsService,
    RequestContext,
)
from keyplane.kms.ops import batch, crypto, keys, rotation
from keyplane.kms.ops import custom_key_stores as cks
from keyplane.storage import SQLiteStore

ACCOUNT = "111122223333"
CTX = RequestContext(Caller(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT), "us-east-1", "r")
OTHER = RequestContext(
    Caller("arn:aws:iam::444455556666:root", "444455556666"), "us-east-1", "r"
)
ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBanchor\n-----END CERTIFICATE-----\n"
PASSWORD = "kmsuser-password"
CLUSTER = "cluster-abcdefghijk"
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def spec(cluster_id: str = CLUSTER, **changes: Any) -> ClusterSpec:
    fields: dict[str, Any] = {
        "cluster_id": cluster_id,
        "account": ACCOUNT,
        "trust_anchor": ANCHOR,
        "kmsuser_password": PASSWORD,
    }
    fields.update(changes)
    return ClusterSpec(**fields)


class World:
    """A service over a store file, started the way the app starts it."""

    def __init__(self, path: Path, root: bytes, clock: Clock, **options: Any) -> None:
        self.path, self.root, self.clock, self.options = path, root, clock, options

    def start(self, *specs: ClusterSpec) -> KmsService:
        store = SQLiteStore(self.path)
        options = {"custom_key_store_connect_seconds": 0.0, **self.options}
        svc = KmsService(
            Hsm(bytearray(self.root)),
            store,
            self.clock,
            "us-east-1",
            asyncio.get_running_loop(),
            **options,
        )
        svc.restore(store.load())
        svc.key_stores.start(specs or (spec(),))
        return svc


def close(svc: KmsService) -> None:
    svc.close()
    svc.store.close()
    svc.hsm.close()


def run(
    tmp_path: Path, body: Callable[[World], Awaitable[None]], **options: Any
) -> None:
    world = World(tmp_path / "db", os.urandom(32), Clock(), **options)
    asyncio.run(body(world))


async def settle(svc: KmsService, store_id: str) -> ConnectionState:
    """Wait for a connection attempt (or a disconnection) to finish."""
    store = svc.key_stores.stores[store_id]
    for _ in range(200):
        if store.state not in (
            ConnectionState.CONNECTING,
            ConnectionState.DISCONNECTING,
        ):
            return store.state
        await asyncio.sleep(0.01)
    raise AssertionError(f"{store_id} stayed {store.state}")


async def new_store(svc: KmsService, name: str = "store", **kw: Any) -> str:
    made = await cks.create_custom_key_store(
        svc,
        CTX,
        name=name,
        cluster_id=kw.get("cluster_id", CLUSTER),
        trust_anchor=kw.get("trust_anchor", ANCHOR),
        password=kw.get("password", PASSWORD),
    )
    return made.store_id


async def connected(svc: KmsService, store_id: str) -> None:
    await cks.connect_custom_key_store(svc, CTX, store_id)
    assert await settle(svc, store_id) is ConnectionState.CONNECTED


def entry(svc: KmsService, store_id: str) -> tuple[str, str | None]:
    [store], _ = cks.describe_custom_key_stores(svc, CTX, store_id=store_id)
    return store.state.value, store.error_code


# --- the state machine ------------------------------------------------------------


def test_connect_is_asynchronous_and_every_refused_transition_says_why(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        svc.key_stores.connect_seconds = 0.05
        try:
            sid = await new_store(svc)
            assert entry(svc, sid) == ("DISCONNECTED", None)
            for op in (cks.disconnect_custom_key_store,):
                with pytest.raises(CustomKeyStoreInvalidStateError):
                    await op(svc, CTX, sid)
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert entry(svc, sid) == ("CONNECTING", None)
            # Connecting again while connecting (or connected) changes nothing.
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert await settle(svc, sid) is ConnectionState.CONNECTED
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert entry(svc, sid) == ("CONNECTED", None)
            # Only a rename is allowed while connected; nothing else, and no delete.
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.update_custom_key_store(svc, CTX, sid, password="other-pw1")
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.delete_custom_key_store(svc, CTX, sid)
            await cks.update_custom_key_store(svc, CTX, sid, new_name="renamed")
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            assert entry(svc, sid)[0] in ("DISCONNECTING", "DISCONNECTED")
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.disconnect_custom_key_store(svc, CTX, sid)
            assert await settle(svc, sid) is ConnectionState.DISCONNECTED
            await cks.delete_custom_key_store(svc, CTX, sid)
            with pytest.raises(CustomKeyStoreNotFoundError):
                entry(svc, sid)
            assert svc.store.load().custom_key_stores == []
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_failed_connection_is_disconnected_fixed_and_connected(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc, password="wrong-password")
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert await settle(svc, sid) is ConnectionState.FAILED
            assert entry(svc, sid) == ("FAILED", "INVALID_CREDENTIALS")
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.connect_custom_key_store(svc, CTX, sid)
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.update_custom_key_store(svc, CTX, sid, password=PASSWORD)
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            await settle(svc, sid)
            await cks.update_custom_key_store(svc, CTX, sid, password=PASSWORD)
            await connected(svc, sid)
        finally:
            close(svc)

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            cks.ClusterChanges(kmsuser_password="changed-elsewhere"),
            "INVALID_CREDENTIALS",
        ),
        (cks.ClusterChanges(delete_kmsuser=True), "USER_NOT_FOUND"),
        (cks.ClusterChanges(kmsuser_locked_out=True), "USER_LOCKED_OUT"),
        (cks.ClusterChanges(kmsuser_logged_in=True), "USER_LOGGED_IN"),
        (cks.ClusterChanges(hsm_count=0), "INSUFFICIENT_CLOUDHSM_HSMS"),
    ],
)
def test_each_cluster_problem_has_its_connection_error_code(tmp_path, change, code):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await cks.update_cloudhsm_cluster(svc, CTX, CLUSTER, change)
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert await settle(svc, sid) is ConnectionState.FAILED
            assert entry(svc, sid) == ("FAILED", code)
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_disconnect_while_connecting_wins(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        svc.key_stores.connect_seconds = 0.05
        try:
            sid = await new_store(svc)
            await cks.connect_custom_key_store(svc, CTX, sid)
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            await asyncio.sleep(0.15)
            store = svc.key_stores.stores[sid]
            assert store.state is ConnectionState.DISCONNECTED
            assert store.worker is None
            assert not svc.key_stores.clusters[CLUSTER].cluster.logged_in("kmsuser")
        finally:
            close(svc)

    run(tmp_path, body)


def test_what_creating_a_key_store_refuses(tmp_path):
    async def body(world: World) -> None:
        svc = world.start(
            spec(),
            spec("cluster-bcdefghijkl", backup_of=CLUSTER),
            spec("cluster-cdefghijklm", hsm_count=1),
            spec("cluster-defghijklmn", account="444455556666"),
        )
        try:
            with pytest.raises(CloudHsmClusterNotFoundError):
                await new_store(svc, cluster_id="cluster-zzzzzzzzzzz")
            # Another account's cluster is not found either.
            with pytest.raises(CloudHsmClusterNotFoundError):
                await new_store(svc, cluster_id="cluster-defghijklmn")
            with pytest.raises(IncorrectTrustAnchorError):
                await new_store(svc, trust_anchor="-----BEGIN CERTIFICATE-----\nx\n")
            with pytest.raises(CloudHsmClusterInvalidConfigurationError):
                await new_store(svc, cluster_id="cluster-cdefghijklm")
            with pytest.raises(ValidationError):
                await cks.create_custom_key_store(
                    svc,
                    CTX,
                    name="n",
                    cluster_id=CLUSTER,
                    trust_anchor=None,
                    password=PASSWORD,
                )
            with pytest.raises(UnsupportedOperationError):
                await cks.create_custom_key_store(
                    svc,
                    CTX,
                    name="n",
                    cluster_id=None,
                    trust_anchor=None,
                    password=None,
                    store_type="EXTERNAL_KEY_STORE",
                )
            sid = await new_store(svc)
            with pytest.raises(CustomKeyStoreNameInUseError):
                await new_store(svc, cluster_id="cluster-cdefghijklm")
            # The cluster, and one restored from its backup, are in use now.
            with pytest.raises(CloudHsmClusterInUseError):
                await new_store(svc, name="second")
            with pytest.raises(CloudHsmClusterInUseError):
                await new_store(svc, name="second", cluster_id="cluster-bcdefghijkl")
            # Another account sees no key store of this one.
            with pytest.raises(CustomKeyStoreNotFoundError):
                await cks.connect_custom_key_store(svc, OTHER, sid)
            assert cks.describe_custom_key_stores(svc, OTHER) == ([], None)
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_store_moves_only_to_a_cluster_of_its_backup_history(tmp_path):
    async def body(world: World) -> None:
        svc = world.start(
            spec(),
            spec("cluster-bcdefghijkl", backup_of=CLUSTER),
            spec("cluster-cdefghijklm"),
        )
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            sealed = await crypto.encrypt(
                svc, CTX, key_id=key.key_id, plaintext=b"moves with the backup"
            )
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            await settle(svc, sid)
            with pytest.raises(CloudHsmClusterNotRelatedError):
                await cks.update_custom_key_store(
                    svc, CTX, sid, cluster_id="cluster-cdefghijklm"
                )
            await cks.update_custom_key_store(
                svc, CTX, sid, cluster_id="cluster-bcdefghijkl"
            )
            await connected(svc, sid)
            assert key.cloud_hsm_cluster_id == "cluster-bcdefghijkl"
            opened = await crypto.decrypt(
                svc, CTX, ciphertext_blob=sealed.ciphertext_blob
            )
            assert opened.plaintext == b"moves with the backup"
        finally:
            close(svc)

    run(tmp_path, body)


# --- keys in a key store ----------------------------------------------------------


def test_keys_live_in_the_clusters_partition_and_run_on_its_own_threads(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await keys.create_key(
                    svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
                )
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            plain = await keys.create_key(svc, CTX)
            cluster = svc.key_stores.clusters[CLUSTER].cluster
            assert key.partition is cluster.partition
            assert key.partition.tenancy is Tenancy.DEDICATED
            assert key.partition.native is not svc.hsm.shared
            assert plain.partition.native is svc.hsm.shared
            assert cluster.keys.owner_of(key.versions[0]) == "kmsuser"
            stored = {k.key_id: k.partition for k in svc.store.load().keys}
            assert stored[key.key_id] == f"dedicated:{CLUSTER}"
            assert stored[plain.key_id] != f"dedicated:{CLUSTER}"
            store = svc.key_stores.stores[sid]
            worker = store.worker
            assert worker is not None
            shared_before = svc.batcher.items
            sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"x")
            opened = await crypto.decrypt(
                svc, CTX, ciphertext_blob=sealed.ciphertext_blob
            )
            made = await crypto.generate_data_key(
                svc, CTX, key_id=key.key_id, key_spec="AES_256"
            )
            assert opened.plaintext == b"x" and len(made.plaintext) == 32
            assert svc.batcher.items == shared_before
            assert worker.batcher.items == 3
            names = cluster.pacer.thread_names()
            assert names and all(n.startswith(f"keyplane-{CLUSTER}") for n in names)
            assert threading.current_thread().name not in names
            random = await cks.generate_random(svc, CTX, sid, 24)
            assert len(random) == 24
            # Rotation is refused for a key in a custom key store, as on AWS.
            with pytest.raises(UnsupportedOperationError, match="AWS_CLOUDHSM"):
                await rotation.enable_key_rotation(svc, CTX, key.key_id, None)
            with pytest.raises(UnsupportedOperationError):
                await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        finally:
            close(svc)

    run(tmp_path, body)


def test_what_creating_a_key_in_a_store_refuses(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            with pytest.raises(ValidationError):
                await keys.create_key(svc, CTX, origin="AWS_CLOUDHSM")
            with pytest.raises(UnsupportedOperationError):
                await keys.create_key(
                    svc, CTX, origin="EXTERNAL", custom_key_store_id=sid
                )
            with pytest.raises(UnsupportedOperationError):
                await keys.create_key(svc, CTX, custom_key_store_id=sid)
            with pytest.raises(CustomKeyStoreNotFoundError):
                await keys.create_key(
                    svc,
                    CTX,
                    origin="AWS_CLOUDHSM",
                    custom_key_store_id="cks-00000000000000000",
                )
            await cks.update_cloudhsm_cluster(
                svc, CTX, CLUSTER, cks.ClusterChanges(hsm_count=1)
            )
            with pytest.raises(CloudHsmClusterInvalidConfigurationError):
                await keys.create_key(
                    svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
                )
            assert not svc.keys
        finally:
            close(svc)

    run(tmp_path, body)


def test_keys_are_unavailable_while_disconnected_and_keep_their_own_state(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"k")
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            assert key.effective_state is KeyState.UNAVAILABLE
            with pytest.raises(KeyStateError, match="is unavailable"):
                await crypto.decrypt(svc, CTX, ciphertext_blob=sealed.ciphertext_blob)
            with pytest.raises(CustomKeyStoreInvalidStateError):
                await cks.generate_random(svc, CTX, sid, 8)
            # Disabling succeeds while unavailable; the key comes back disabled.
            await keys.disable_key(svc, CTX, key.key_id)
            assert key.effective_state is KeyState.UNAVAILABLE
            await settle(svc, sid)
            with pytest.raises(CustomKeyStoreHasKeysError):
                await cks.delete_custom_key_store(svc, CTX, sid)
            await connected(svc, sid)
            assert key.effective_state is KeyState.DISABLED
            await keys.enable_key(svc, CTX, key.key_id)
            opened = await crypto.decrypt(
                svc, CTX, ciphertext_blob=sealed.ciphertext_blob
            )
            assert opened.plaintext == b"k"
            # Pending deletion shows through a disconnection.
            await keys.schedule_key_deletion(svc, CTX, key.key_id, 7)
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            assert key.effective_state is KeyState.PENDING_DELETION
            await settle(svc, sid)
            with pytest.raises(CustomKeyStoreHasKeysError):
                await cks.delete_custom_key_store(svc, CTX, sid)
            cluster = svc.key_stores.clusters[CLUSTER].cluster
            assert len(cluster.keys) == 1
            world.clock.now += 7 * DAY
            assert await svc.sweep_deletions() == 1
            # The key's material is gone from the cluster, and the store can go.
            assert len(cluster.keys) == 0
            await cks.delete_custom_key_store(svc, CTX, sid)
        finally:
            close(svc)

    run(tmp_path, body)


def test_the_store_quota_throttles_its_keys_only(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            plain = await keys.create_key(svc, CTX)
            for _ in range(5):
                await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"q")
            with pytest.raises(ThrottlingError, match=sid):
                await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"q")
            with pytest.raises(ThrottlingError):
                await cks.generate_random(svc, CTX, sid, 8)
            await crypto.encrypt(svc, CTX, key_id=plain.key_id, plaintext=b"q")
        finally:
            close(svc)

    # A quota of 5 a second: a sixth request within the second is throttled.
    run(tmp_path, body, custom_key_store_quota=5.0)


# --- restarts ---------------------------------------------------------------------


CLUSTERS = (
    spec(),
    spec("cluster-bcdefghijkl"),
    spec("cluster-cdefghijklm", kmsuser_password="not-what-the-store-has"),
)


async def _key_in(svc: KmsService, store_id: str) -> str:
    await connected(svc, store_id)
    made = await keys.create_key(
        svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=store_id
    )
    return made.key_id


def test_stores_keys_and_connections_survive_a_restart(tmp_path):
    async def body(world: World) -> None:
        svc = world.start(*CLUSTERS)
        try:
            up = await new_store(svc, "up")
            down = await new_store(svc, "down", cluster_id="cluster-bcdefghijkl")
            key = await _key_in(svc, up)
            sealed = await crypto.encrypt(svc, CTX, key_id=key, plaintext=b"kept")
            failed = await new_store(svc, "failed", cluster_id="cluster-cdefghijklm")
            await cks.connect_custom_key_store(svc, CTX, failed)
            await settle(svc, failed)
        finally:
            close(svc)
        svc = world.start(*CLUSTERS)
        try:
            assert entry(svc, up) == ("CONNECTED", None)
            assert entry(svc, down) == ("DISCONNECTED", None)
            assert entry(svc, failed) == ("FAILED", "INVALID_CREDENTIALS")
            opened = await crypto.decrypt(
                svc, CTX, ciphertext_blob=sealed.ciphertext_blob
            )
            assert opened.plaintext == b"kept"
            restored = svc.keys[key]
            assert restored.key_store is svc.key_stores.stores[up]
            assert restored.partition.tenancy is Tenancy.DEDICATED
            assert (
                svc.key_stores.clusters[CLUSTER].cluster.keys.owner_of(
                    restored.versions[0]
                )
                == "kmsuser"
            )
            assert svc.store.integrity_check() == []
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_store_stopped_while_connecting_connects_at_start(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        svc.key_stores.connect_seconds = 60.0
        try:
            sid = await new_store(svc)
            await cks.connect_custom_key_store(svc, CTX, sid)
            assert entry(svc, sid) == ("CONNECTING", None)
        finally:
            close(svc)
        svc = world.start()
        try:
            assert entry(svc, sid) == ("CONNECTED", None)
            assert svc.store.load().custom_key_stores[0].data["connection_state"] == (
                "CONNECTED"
            )
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_connected_store_whose_cluster_changed_fails_at_start(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
        finally:
            close(svc)
        # The configuration now gives kmsuser another password.
        svc = world.start(spec(kmsuser_password="a-new-password"))
        try:
            assert entry(svc, sid) == ("FAILED", "INVALID_CREDENTIALS")
        finally:
            close(svc)

    run(tmp_path, body)


def test_the_configuration_and_the_store_agree_on_a_cluster(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        close(svc)
        with pytest.raises(ValidationError):
            world.start(spec(account="444455556666"))
        svc = world.start(spec(hsm_count=6, extra_latency_ms=2.0))
        try:
            cluster = svc.key_stores.clusters[CLUSTER].cluster
            assert (cluster.hsm_count, cluster.extra_latency_ms) == (6, 2.0)
        finally:
            close(svc)

    run(tmp_path, body)


def test_the_password_is_never_stored(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await cks.update_custom_key_store(svc, CTX, sid, password="second-pass")
        finally:
            close(svc)
        for path in tmp_path.iterdir():
            data = path.read_bytes()
            for secret in (PASSWORD, "second-pass"):
                assert secret.encode() not in data, path
                assert secret.encode().hex().encode() not in data, path

    run(tmp_path, body)


# --- a store that stops serving under work in flight ---------------------------------

SECOND = "cluster-bcdefghijkl"


def test_a_batch_item_whose_cluster_has_no_hsm_fails_alone(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            plain = await keys.create_key(svc, CTX)
            sealed_before = await crypto.encrypt(
                svc, CTX, key_id=key.key_id, plaintext=b"s"
            )
            await cks.update_cloudhsm_cluster(
                svc, CTX, CLUSTER, cks.ClusterChanges(hsm_count=0)
            )
            out = await batch.batch_encrypt(
                svc,
                CTX,
                [batch.EncryptItem(plain.key_id, b"a")] * 2
                + [batch.EncryptItem(key.key_id, b"b")],
            )
            assert [type(r) for r in out[:2]] == [crypto.Sealed] * 2
            assert isinstance(out[2], KeyStateError)
            assert "no active HSM" in str(out[2])
            opened = await batch.batch_decrypt(
                svc,
                CTX,
                [
                    batch.DecryptItem(out[0].ciphertext_blob),  # type: ignore[union-attr]
                    batch.DecryptItem(sealed_before.ciphertext_blob),
                ],
            )
            assert isinstance(opened[0], crypto.Opened)
            assert isinstance(opened[1], KeyStateError)
            made = await batch.batch_generate_data_key(
                svc,
                CTX,
                [
                    batch.DataKeyItem(key.key_id, key_spec="AES_256"),
                    batch.DataKeyItem(plain.key_id, key_spec="AES_256"),
                ],
            )
            assert isinstance(made[0], KeyStateError)
            assert isinstance(made[1], tuple)
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_disconnect_between_two_store_groups_fails_only_that_group(tmp_path):
    async def body(world: World) -> None:
        # The first store's cluster is slow: its group is on the cluster's thread
        # when the second store disconnects.
        svc = world.start(spec(extra_latency_ms=300.0), spec(SECOND))
        try:
            slow = await new_store(svc, "slow")
            other = await new_store(svc, "other", cluster_id=SECOND)
            await connected(svc, slow)
            await connected(svc, other)
            k_slow = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=slow
            )
            k_other = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=other
            )
            task = asyncio.ensure_future(
                batch.batch_encrypt(
                    svc,
                    CTX,
                    [
                        batch.EncryptItem(k_slow.key_id, b"a"),
                        batch.EncryptItem(k_other.key_id, b"b"),
                    ],
                )
            )
            await asyncio.sleep(0.1)
            await cks.disconnect_custom_key_store(svc, CTX, other)
            out = await task
            assert isinstance(out[0], crypto.Sealed)
            assert isinstance(out[1], KeyStateError)
            assert await settle(svc, other) is ConnectionState.DISCONNECTED
            # Data keys of one repeated item, in two slices of the slow cluster's
            # 300 ms each: a disconnect during the second fails its items only.
            n = batch.ALIKE_SLICE_ITEMS + 10
            making = asyncio.ensure_future(
                batch.batch_generate_data_keys_alike(
                    svc, CTX, batch.DataKeyItem(k_slow.key_id, key_spec="AES_256"), n
                )
            )
            await asyncio.sleep(0.45)
            await cks.disconnect_custom_key_store(svc, CTX, slow)
            made = await making
            assert isinstance(made, list)
            first = batch.ALIKE_SLICE_ITEMS
            assert all(isinstance(r, tuple) for r in made[:first])
            assert all(isinstance(r, KeyStateError) for r in made[first:])
            assert len(made) == n
        finally:
            close(svc)

    run(tmp_path, body)


def test_a_disconnect_fails_items_queued_for_later_flushes(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            key = await keys.create_key(
                svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
            )
            store = svc.key_stores.stores[sid]
            # More than one flush takes (4096 items), from two accounts.
            tasks = [
                asyncio.ensure_future(
                    crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"x")
                )
                for _ in range(10_000)
            ]
            await asyncio.sleep(0)
            svc.key_stores.begin_disconnect(store)
            done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            assert not pending
            failed = [t.exception() for t in done if t.exception() is not None]
            assert failed
            assert all(isinstance(e, KeyStateError) for e in failed)
            assert await settle(svc, sid) is ConnectionState.DISCONNECTED
        finally:
            close(svc)

    run(tmp_path, body, custom_key_store_quota=0.0)


def test_closing_does_not_wait_for_a_paced_queue(tmp_path):
    async def body(world: World) -> None:
        svc = world.start(spec(capacity_per_second=2.0))
        sid = await new_store(svc)
        await connected(svc, sid)
        key = await keys.create_key(
            svc, CTX, origin="AWS_CLOUDHSM", custom_key_store_id=sid
        )
        # Ten seconds of work at two operations a second.
        tasks = [
            asyncio.ensure_future(
                crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"x")
            )
            for _ in range(20)
        ]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        close(svc)
        assert time.monotonic() - started < 2.0
        await asyncio.wait(tasks, timeout=5)
        assert all(t.done() for t in tasks)

    run(tmp_path, body)


def test_a_disconnect_needs_no_thread_of_the_default_executor(tmp_path):
    async def body(world: World) -> None:
        loop = asyncio.get_running_loop()
        # A default executor whose only thread is busy (other tenants' scrypt).
        busy = concurrent.futures.ThreadPoolExecutor(1)
        loop.set_default_executor(busy)
        release = threading.Event()
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            blocked = loop.run_in_executor(None, release.wait)
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            assert await settle(svc, sid) is ConnectionState.DISCONNECTED
        finally:
            release.set()
            await blocked
            close(svc)

    run(tmp_path, body)


def test_a_disconnect_logs_out_after_the_calls_running_on_the_cluster(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await connected(svc, sid)
            store = svc.key_stores.stores[sid]
            cluster = svc.key_stores.clusters[CLUSTER].cluster
            worker, session = store.worker, store.session
            assert worker is not None and session is not None
            entered, release = threading.Event(), threading.Event()

            def slow_random() -> bytes:
                entered.set()
                release.wait(10)
                return cluster.random(session, 16)

            running = asyncio.ensure_future(worker.run(slow_random, items=1))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            await cks.disconnect_custom_key_store(svc, CTX, sid)
            await asyncio.sleep(0.05)
            # The running call still holds kmsuser's session.
            assert cluster.logged_in("kmsuser")
            assert store.state is ConnectionState.DISCONNECTING
            release.set()
            assert len(await running) == 16
            assert await settle(svc, sid) is ConnectionState.DISCONNECTED
            assert not cluster.logged_in("kmsuser")
        finally:
            release.set()
            close(svc)

    run(tmp_path, body)


def test_every_update_of_a_store_needs_two_active_hsms(tmp_path):
    async def body(world: World) -> None:
        svc = world.start()
        try:
            sid = await new_store(svc)
            await cks.update_cloudhsm_cluster(
                svc, CTX, CLUSTER, cks.ClusterChanges(hsm_count=1)
            )
            with pytest.raises(CloudHsmClusterInvalidConfigurationError):
                await cks.update_custom_key_store(svc, CTX, sid, new_name="renamed")
            with pytest.raises(CloudHsmClusterInvalidConfigurationError):
                await cks.update_custom_key_store(svc, CTX, sid, password="other-pw1")
            assert svc.key_stores.stores[sid].name == "store"
            await cks.update_cloudhsm_cluster(
                svc, CTX, CLUSTER, cks.ClusterChanges(hsm_count=2)
            )
            await cks.update_custom_key_store(svc, CTX, sid, new_name="renamed")
            assert svc.key_stores.stores[sid].name == "renamed"
        finally:
            close(svc)

    run(tmp_path, body)
