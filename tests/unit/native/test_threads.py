"""Many threads on one HSM at once: the native calls release the GIL, so these really
run in parallel in C, against shared tables and per-slot context pools."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from keyplane.errors import KeyUnavailableError
from keyplane.native import NativeHsm

THREADS = 8
ROUNDS = 60


def _hammer(hsm: NativeHsm, partition: int, slots: list[int], seed: int) -> int:
    checked = 0
    for round_ in range(ROUNDS):
        n = 1 + (seed * 7 + round_ * 13) % 300
        handles = [slots[(seed + i) % len(slots)] for i in range(n)]
        plaintexts = [os.urandom(1 + (i + seed) % 64) for i in range(n)]
        aads = [b"%d/%d/%d" % (seed, round_, i) for i in range(n)]
        sealed = hsm.encrypt_batch(partition, handles, plaintexts, aads)
        assert hsm.decrypt_batch(partition, handles, sealed, aads) == plaintexts
        keys = hsm.generate_data_key_batch(partition, handles, 32, n, aads)
        opened = hsm.decrypt_batch(partition, handles, [s for _, s in keys], aads)
        assert opened == [k for k, _ in keys]
        checked += 3 * n
    return checked


def test_threads_on_one_partition():
    hsm = NativeHsm(os.urandom(32))
    try:
        partition = hsm.partition_create()
        slots = [hsm.keyslot_generate(partition) for _ in range(3)]
        with ThreadPoolExecutor(THREADS) as pool:
            done = list(
                pool.map(lambda s: _hammer(hsm, partition, slots, s), range(THREADS))
            )
        assert sum(done) > THREADS * ROUNDS
    finally:
        hsm.close()


def test_threads_on_many_partitions_and_hsms():
    shared = NativeHsm(os.urandom(32))
    dedicated = [shared.sibling() for _ in range(2)]
    try:
        targets = []
        for h in [shared, shared, *dedicated]:
            p = h.partition_create()
            targets.append((h, p, [h.keyslot_generate(p) for _ in range(2)]))
        with ThreadPoolExecutor(THREADS) as pool:
            jobs = [
                pool.submit(_hammer, *targets[i % len(targets)], i)
                for i in range(THREADS)
            ]
            assert all(job.result() > 0 for job in jobs)
    finally:
        for h in [*dedicated, shared]:
            h.close()


def test_slots_come_and_go_while_batches_run():
    hsm = NativeHsm(os.urandom(32))
    try:
        partition = hsm.partition_create()
        stable = hsm.keyslot_generate(partition)
        stop = threading.Event()
        churned = []

        def churn() -> None:
            while not stop.is_set():
                handle = hsm.keyslot_generate(partition)
                [sealed] = hsm.encrypt_batch(partition, handle, [b"x"])
                hsm.keyslot_destroy(partition, handle)
                [gone] = hsm.decrypt_batch(partition, handle, [sealed])
                assert isinstance(gone, KeyUnavailableError)
                churned.append(handle)

        churner = threading.Thread(target=churn)
        churner.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                jobs = [
                    pool.submit(_hammer, hsm, partition, [stable], i) for i in range(4)
                ]
                assert all(job.result() > 0 for job in jobs)
        finally:
            stop.set()
            churner.join()
        assert churned
        assert hsm.slot_count() == 1
    finally:
        hsm.close()
