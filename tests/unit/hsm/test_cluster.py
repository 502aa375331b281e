"""The emulated CloudHSM cluster: users and their roles, logins and what refuses them,
key ownership, backups that share a lineage, and the worker that paces a cluster's
batches on threads of its own."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import pytest

from keyplane.errors import (
    ClusterCredentialsError,
    ClusterHsmsUnavailableError,
    ClusterRoleError,
    ClusterUserLockedOutError,
    ClusterUserLoggedInError,
    ClusterUserNotFoundError,
    KeyStateError,
    KeyUnavailableError,
    LimitExceededError,
    ValidationError,
)
from keyplane.hsm import (
    KMS_USER,
    CloudHsmCluster,
    ClusterWorker,
    Hsm,
    Role,
    Tenancy,
    _cluster,
)

ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBtrust\n-----END CERTIFICATE-----\n"
PASSWORD = "kmsuser-password"


@pytest.fixture
def hsm() -> Iterator[Hsm]:
    h = Hsm(bytearray(os.urandom(32)))
    yield h
    h.close()


def make_cluster(
    hsm: Hsm, cluster_id: str = "cluster-abcdefghijk", **settings: object
) -> CloudHsmCluster:
    cluster = CloudHsmCluster(
        cluster_id,
        hsm.create_partition(Tenancy.DEDICATED),
        trust_anchor=ANCHOR,
        salt=os.urandom(16),
        **settings,  # type: ignore[arg-type]
    )
    cluster.set_user(cluster.officer(), KMS_USER, Role.CRYPTO_USER, PASSWORD)
    return cluster


def test_the_partition_is_dedicated_on_a_native_hsm_of_its_own(hsm):
    cluster = make_cluster(hsm)
    assert cluster.partition.tenancy is Tenancy.DEDICATED
    assert cluster.partition.native is not hsm.shared
    other = make_cluster(hsm, "cluster-zyxwvutsrqp")
    assert other.partition.native is not cluster.partition.native


def test_kmsuser_logs_in_with_its_password_only(hsm):
    cluster = make_cluster(hsm)
    with pytest.raises(ClusterCredentialsError):
        cluster.login(KMS_USER, cluster.verifier("another-password"))
    session = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    assert session.role is Role.CRYPTO_USER
    assert cluster.logged_in(KMS_USER)
    # One login at a time: a second one is refused until the first logs out.
    with pytest.raises(ClusterUserLoggedInError):
        cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    cluster.logout(session)
    assert not cluster.logged_in(KMS_USER)
    cluster.logout(session)  # twice is harmless
    cluster.logout(cluster.login(KMS_USER, cluster.verifier(PASSWORD)))


def test_what_refuses_a_login(hsm):
    cluster = make_cluster(hsm)
    good = cluster.verifier(PASSWORD)
    with pytest.raises(ClusterUserNotFoundError):
        cluster.login("nobody", good)
    cluster.set_locked_out(cluster.officer(), KMS_USER, True)
    with pytest.raises(ClusterUserLockedOutError):
        cluster.login(KMS_USER, good)
    cluster.set_locked_out(cluster.officer(), KMS_USER, False)
    cluster.hold_session(cluster.officer(), KMS_USER, True)
    with pytest.raises(ClusterUserLoggedInError):
        cluster.login(KMS_USER, good)
    cluster.hold_session(cluster.officer(), KMS_USER, False)
    cluster.configure(hsm_count=0)
    with pytest.raises(ClusterHsmsUnavailableError):
        cluster.login(KMS_USER, good)
    cluster.configure(hsm_count=1, active=False)
    with pytest.raises(ClusterHsmsUnavailableError):
        cluster.login(KMS_USER, good)
    cluster.configure(active=True)
    cluster.delete_user(cluster.officer(), KMS_USER)
    with pytest.raises(ClusterUserNotFoundError):
        cluster.login(KMS_USER, good)


def test_an_outside_login_never_takes_over_a_held_one(hsm):
    cluster = make_cluster(hsm)
    session = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    with pytest.raises(ClusterUserLoggedInError):
        cluster.hold_session(cluster.officer(), KMS_USER, True)
    # Ending an outside login leaves KMS's own alone.
    cluster.hold_session(cluster.officer(), KMS_USER, False)
    assert cluster.generate_key(session)


def test_a_new_password_replaces_the_old_and_ends_a_lockout(hsm):
    cluster = make_cluster(hsm)
    old = cluster.verifier(PASSWORD)
    cluster.set_locked_out(cluster.officer(), KMS_USER, True)
    cluster.set_user(cluster.officer(), KMS_USER, Role.CRYPTO_USER, "new-password")
    with pytest.raises(ClusterCredentialsError):
        cluster.login(KMS_USER, old)
    cluster.login(KMS_USER, cluster.verifier("new-password"))


def test_roles_decide_who_manages_users_and_who_uses_keys(hsm):
    cluster = make_cluster(hsm)
    officer = cluster.officer()
    user = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    with pytest.raises(ClusterRoleError):
        cluster.generate_key(officer)  # a crypto officer cannot own keys
    with pytest.raises(ClusterRoleError):
        cluster.set_user(user, "other", Role.CRYPTO_USER, PASSWORD)
    with pytest.raises(ClusterRoleError):
        cluster.delete_user(user, KMS_USER)
    # A session of another cluster is no session here.
    other = make_cluster(hsm, "cluster-zyxwvutsrqp")
    with pytest.raises(ClusterRoleError):
        other.generate_key(user)
    with pytest.raises(ClusterRoleError):
        other.set_user(officer, "x", Role.CRYPTO_USER, PASSWORD)


def test_keys_belong_to_the_user_that_made_them(hsm):
    cluster = make_cluster(hsm)
    cluster.set_user(cluster.officer(), "alice", Role.CRYPTO_USER, "alice-password")
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    alice = cluster.login("alice", cluster.verifier("alice-password"))
    slot = cluster.generate_key(kms)
    assert cluster.keys.owner_of(slot) == KMS_USER
    with pytest.raises(ClusterRoleError):
        cluster.destroy_key(alice, slot)
    sealed = cluster.partition.encrypt_batch(slot, [b"still here"])
    cluster.destroy_key(kms, slot)
    assert len(cluster.keys) == 0
    [failed] = cluster.partition.decrypt_batch(slot, sealed)
    assert isinstance(failed, KeyUnavailableError)
    # A logged-out session can do nothing more.
    cluster.logout(kms)
    with pytest.raises(ClusterRoleError):
        cluster.generate_key(kms)


def test_a_cluster_holds_a_limited_number_of_keys(hsm, monkeypatch):
    monkeypatch.setattr(_cluster, "MAX_KEYS", 2)
    cluster = make_cluster(hsm)
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    first = cluster.generate_key(kms)
    cluster.generate_key(kms)
    with pytest.raises(LimitExceededError):
        cluster.generate_key(kms)
    cluster.destroy_key(kms, first)
    cluster.generate_key(kms)


def test_settings_keep_verifiers_never_passwords(hsm):
    cluster = make_cluster(hsm, hsm_count=3, extra_latency_ms=5.0)
    settings = cluster.settings()
    assert PASSWORD not in repr(settings)
    assert PASSWORD.encode().hex() not in repr(settings)
    assert PASSWORD not in repr(cluster)
    copy = CloudHsmCluster.from_settings(
        "cluster-abcdefghijk", cluster.partition, settings
    )
    assert copy.settings() == settings
    copy.login(KMS_USER, copy.verifier(PASSWORD))


def test_a_refused_change_goes_back_with_load_settings(hsm):
    cluster = make_cluster(hsm)
    before = cluster.settings()
    cluster.configure(hsm_count=5, capacity_per_second=100)
    cluster.set_user(cluster.officer(), KMS_USER, Role.CRYPTO_USER, "changed-it")
    cluster.load_settings(before)
    assert cluster.settings() == before
    cluster.login(KMS_USER, cluster.verifier(PASSWORD))


def test_a_cluster_restored_from_a_backup_shares_lineage_users_and_keys(hsm):
    cluster = make_cluster(hsm)
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    slot = cluster.generate_key(kms)
    sealed = cluster.partition.encrypt_batch(slot, [b"before the backup"])
    copy = cluster.restored_copy("cluster-bcdefghijkl")
    assert copy.lineage == cluster.lineage == cluster.cluster_id
    assert copy.trust_anchor == cluster.trust_anchor
    assert copy.partition is cluster.partition
    assert copy.keys is cluster.keys
    assert copy.keys.owner_of(slot) == KMS_USER
    assert copy.partition.decrypt_batch(slot, sealed) == [b"before the backup"]
    # Same users as of the backup, with their own sessions.
    copy.login(KMS_USER, copy.verifier(PASSWORD))


def test_settings_out_of_range_are_refused(hsm):
    cluster = make_cluster(hsm)
    for bad in (
        {"hsm_count": 29},
        {"hsm_count": -1},
        {"extra_latency_ms": -1.0},
        {"capacity_per_second": -5.0},
        # Below one a second, a batch of thousands would pace for hours.
        {"capacity_per_second": 0.5},
    ):
        with pytest.raises(ValidationError):
            cluster.configure(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        CloudHsmCluster(
            "not-a-cluster",
            cluster.partition,
            trust_anchor=ANCHOR,
            salt=os.urandom(16),
        )
    for password in ("short", "x" * 33):
        with pytest.raises(ValidationError):
            cluster.verifier(password)


def test_trust_anchors_compare_without_line_endings(hsm):
    cluster = make_cluster(hsm)
    assert cluster.trust_anchor == _cluster.normalize_certificate(
        "  " + ANCHOR.replace("\n", "\r\n") + "\n\n"
    )


# --- the worker -------------------------------------------------------------------


def test_the_worker_runs_every_batch_on_the_clusters_own_threads(hsm):
    cluster = make_cluster(hsm, hsm_count=3)
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    slot = cluster.generate_key(kms)
    seen: list[str] = []

    async def main() -> None:
        worker = ClusterWorker(cluster, asyncio.get_running_loop())
        try:
            assert worker.threads == 3
            sealed = await asyncio.gather(
                *(worker.batcher.encrypt(slot, b"item %d" % i, b"") for i in range(5))
            )
            opened = await worker.batcher.decrypt(slot, sealed[0], b"")
            assert opened == b"item 0"
            made = await worker.run(
                lambda: seen.append(threading.current_thread().name) or 7, items=1
            )
            assert made == 7
            # One batch of five, however small: it went to the worker, not inline.
            assert worker.batcher.batches == 2
            assert worker.batcher.items == 6
        finally:
            worker.close()

    asyncio.run(main())
    names = set(cluster.pacer.thread_names()) | set(seen)
    assert names
    assert all(n.startswith("keyplane-cluster-abcdefghijk") for n in names), names
    assert threading.current_thread().name not in names


def test_capacity_and_latency_pace_the_cluster(hsm):
    cluster = make_cluster(hsm, capacity_per_second=200.0)
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    slot = cluster.generate_key(kms)

    async def timed(n: int) -> float:
        worker = ClusterWorker(cluster, asyncio.get_running_loop())
        try:
            started = time.perf_counter()
            await asyncio.gather(
                *(worker.batcher.encrypt(slot, b"x", b"") for _ in range(n))
            )
            return time.perf_counter() - started
        finally:
            worker.close()

    # 40 items at 200 a second take at least 0.2 s.
    assert asyncio.run(timed(40)) >= 0.19
    cluster.configure(capacity_per_second=0, extra_latency_ms=150.0)
    assert asyncio.run(timed(1)) >= 0.14
    cluster.configure(extra_latency_ms=0.0)
    assert asyncio.run(timed(40)) < 0.1


def test_a_stopped_worker_fails_what_waits_and_cuts_pacing_short(hsm):
    # One operation a second: twenty items would keep the worker twenty seconds.
    cluster = make_cluster(hsm, capacity_per_second=1.0)
    kms = cluster.login(KMS_USER, cluster.verifier(PASSWORD))
    slot = cluster.generate_key(kms)

    async def main() -> None:
        worker = ClusterWorker(cluster, asyncio.get_running_loop())
        waiting = [worker.batcher.encrypt(slot, b"x", b"") for _ in range(20)]
        running = asyncio.ensure_future(worker.run(lambda: 1, items=5))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        worker.stop(KeyStateError("the store was disconnected"))
        done = await asyncio.gather(*waiting, running, return_exceptions=True)
        worker.join()
        assert time.perf_counter() - started < 1.0
        assert all(isinstance(r, KeyStateError) for r in done), done
        # Later work fails at once, never waits.
        late = worker.batcher.encrypt(slot, b"x", b"")
        assert late.done() and isinstance(late.exception(), KeyStateError)
        with pytest.raises(KeyStateError):
            await worker.run(lambda: 1, items=1)
        await worker.wait_closed()

    asyncio.run(main())


def test_no_batch_is_paced_longer_than_the_cap(hsm, monkeypatch):
    monkeypatch.setattr(_cluster, "MAX_PACING_SECONDS", 0.2)
    cluster = make_cluster(hsm, capacity_per_second=1.0)
    started = time.perf_counter()
    cluster.pacer(4096)
    cluster.pacer(4096)
    assert time.perf_counter() - started < 1.0
    # A stop event ends the wait at once.
    monkeypatch.setattr(_cluster, "MAX_PACING_SECONDS", 60.0)
    stop = threading.Event()
    stop.set()
    started = time.perf_counter()
    cluster.pacer(4096, stop)
    assert time.perf_counter() - started < 0.5
