"""The micro-batcher: concurrent requests share one native call, in order, each with
its own outcome."""

from __future__ import annotations

import asyncio
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyplane.errors import InvalidCiphertextError, KeyUnavailableError, ValidationError
from keyplane.hsm import Batcher, Hsm
from keyplane.hsm._batcher import DEFAULT_MAX_ITEMS


@pytest.fixture
def keyed():
    hsm = Hsm(bytearray(os.urandom(32)))
    partition = hsm.create_partition()
    yield hsm, partition, partition.generate_key()
    hsm.close()


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop())
        sealed = await asyncio.gather(
            *(batcher.encrypt(slot, b"m%d" % i, b"ctx") for i in range(100))
        )
        assert batcher.batches == 1 and batcher.largest == 100
        opened = await asyncio.gather(
            *(batcher.decrypt(slot, s, b"ctx") for s in sealed)
        )
        assert opened == [b"m%d" % i for i in range(100)]
        assert batcher.batches == 2

    run(main())


def test_each_item_fails_alone(keyed):
    hsm, partition, slot = keyed
    doomed = partition.generate_key()

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop())
        [good] = await asyncio.gather(batcher.encrypt(slot, b"x", b""))
        partition.destroy_key(doomed)
        results = await asyncio.gather(
            batcher.decrypt(slot, good, b""),
            batcher.decrypt(slot, good, b"other context"),
            batcher.encrypt(slot, b"", b""),
            batcher.encrypt(doomed, b"x", b""),
            batcher.generate_data_key(slot, 32, b""),
            return_exceptions=True,
        )
        assert results[0] == b"x"
        assert isinstance(results[1], InvalidCiphertextError)
        assert isinstance(results[2], ValidationError)
        assert isinstance(results[3], KeyUnavailableError)
        key, sealed = results[4]
        assert await batcher.decrypt(slot, sealed, b"") == key

    run(main())


def test_a_flush_takes_at_most_max_items(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), max_items=10)
        futures = [batcher.encrypt(slot, b"%d" % i, b"") for i in range(25)]
        assert batcher.batches == 0  # nothing runs before the loop turns
        await asyncio.sleep(0)
        # The oldest ten went first; the rest wait for the next loop iterations.
        assert [f.done() for f in futures] == [True] * 10 + [False] * 15
        sealed = await asyncio.gather(*futures)
        assert batcher.batches == 3 and batcher.largest == 10
        opened = await asyncio.gather(*(batcher.decrypt(slot, s, b"") for s in sealed))
        assert opened == [b"%d" % i for i in range(25)]

    run(main())


def test_large_batches_run_on_a_thread(keyed):
    hsm, _, slot = keyed

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(
                hsm.shared, asyncio.get_running_loop(), executor=pool, offload_items=50
            )
            sealed = await asyncio.gather(
                *(batcher.encrypt(slot, b"%d" % i, b"") for i in range(200))
            )
            opened = await asyncio.gather(
                *(batcher.decrypt(slot, s, b"") for s in sealed)
            )
        assert opened == [b"%d" % i for i in range(200)]

    run(main())


def test_cancelled_requests_are_skipped(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop())
        first = batcher.encrypt(slot, b"a", b"")
        second = batcher.encrypt(slot, b"b", b"")
        first.cancel()
        assert len(await second) == 1 + 28

    run(main())


# --- fairness across tenants ----------------------------------------------------------


def test_a_quiet_tenant_is_served_in_the_first_flush(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop())
        burst = [batcher.encrypt(slot, b"a%d" % i, b"", "A") for i in range(10_000)]
        quiet = batcher.generate_data_key(slot, 32, b"", "B")
        await asyncio.sleep(0)  # one loop iteration: the first flush
        assert quiet.done()
        assert sum(f.done() for f in burst) == DEFAULT_MAX_ITEMS - 1
        # The burst is served oldest first, over the following flushes.
        done = [f.done() for f in burst]
        assert done == sorted(done, reverse=True)
        key, sealed_key = quiet.result()
        sealed = await asyncio.gather(*burst)
        assert batcher.largest == DEFAULT_MAX_ITEMS
        opened = await asyncio.gather(
            *(batcher.decrypt(slot, s, b"", "A") for s in sealed)
        )
        assert opened == [b"a%d" % i for i in range(10_000)]
        assert await batcher.decrypt(slot, sealed_key, b"", "B") == key

    run(main())


def test_busy_tenants_share_a_flush_equally(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), max_items=100)
        a = [batcher.encrypt(slot, b"a", b"", "A") for _ in range(500)]
        b = [batcher.encrypt(slot, b"b", b"", "B") for _ in range(30)]
        c = [batcher.decrypt(slot, b"\0" * 29, b"", "C") for _ in range(500)]
        d = batcher.encrypt(slot, b"d", b"", "D")
        await asyncio.sleep(0)
        # D takes 1 and B its 30; A and C split the rest of the 100 between them.
        assert d.done() and all(f.done() for f in b)
        assert sum(f.done() for f in a) + sum(f.done() for f in c) == 69
        assert abs(sum(f.done() for f in a) - sum(f.done() for f in c)) <= 1
        await asyncio.gather(*a, *b, return_exceptions=True)
        failed = await asyncio.gather(*c, return_exceptions=True)
        assert all(isinstance(e, InvalidCiphertextError) for e in failed)

    run(main())


def test_every_item_of_every_tenant_arrives_with_its_own_result(keyed):
    hsm, partition, slot = keyed
    other = partition.generate_key()
    rng = random.Random(7)  # noqa: S311  a reproducible plan, not a secret

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), max_items=64)
        tenants = [f"t{i}" for i in range(5)]
        plan = [(rng.choice(tenants), rng.choice((slot, other))) for _ in range(700)]
        sealed = await asyncio.gather(
            *(
                batcher.encrypt(s, b"%d" % i, t.encode(), t)
                for i, (t, s) in enumerate(plan)
            )
        )
        assert batcher.largest <= 64
        # Open each under its own key and AAD, interleaved with bad items of other
        # tenants in the same flushes: each bad item fails alone.
        good = [
            batcher.decrypt(s, blob, t.encode(), t)
            for (t, s), blob in zip(plan, sealed, strict=True)
        ]
        bad = [batcher.decrypt(slot, b"x" * 40, b"", f"bad{i}") for i in range(50)]
        opened = await asyncio.gather(*good)
        assert opened == [b"%d" % i for i in range(700)]
        failed = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(e, InvalidCiphertextError) for e in failed)

    run(main())


def test_a_native_fault_fails_only_its_flush(keyed):
    hsm, _, slot = keyed

    class Faulty:
        """A native HSM whose encrypt raises once, then works."""

        def __init__(self):
            self.faults = 1

        def encrypt_batch(self, *args):
            if self.faults:
                self.faults -= 1
                raise RuntimeError("simulated fault")
            return hsm.shared.encrypt_batch(*args)

    async def main():
        batcher = Batcher(Faulty(), asyncio.get_running_loop(), max_items=2)
        futures = [batcher.encrypt(slot, b"x", b"", t) for t in "ABCD"]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert [isinstance(r, RuntimeError) for r in results] == [
            True,
            True,
            False,
            False,
        ]

    run(main())


def test_turns_alternate_between_tenants(keyed):
    hsm, _, _ = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), turn_items=512)
        flood = [batcher.turn("A", 256) for _ in range(8)]
        quiet = batcher.turn("B", 1)
        await asyncio.sleep(0)
        # Each tenant's share is half the turn budget: one slice of A, and B.
        assert quiet.done()
        assert [f.done() for f in flood] == [True] + [False] * 7
        granted = 1
        while granted < 8:
            await asyncio.sleep(0)
            now = sum(f.done() for f in flood)
            assert now - granted <= 2  # alone, A gets the whole budget a flush
            granted = now

    run(main())


def test_a_large_turn_is_granted_alone(keyed):
    hsm, _, _ = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), turn_items=512)
        big = batcher.turn("A", 10_000)
        after = batcher.turn("A", 1)
        await asyncio.sleep(0)
        assert big.done() and not after.done()
        await after

    run(main())


def test_slices_cover_every_item_once(keyed):
    hsm, _, _ = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), slice_items=256)
        got = [r async for r in batcher.slices("A", 1000)]
        assert got == [(0, 256), (256, 512), (512, 768), (768, 1000)]
        assert [r async for r in batcher.slices("A", 0)] == []

    run(main())


def test_a_cancelled_turn_is_skipped(keyed):
    hsm, _, _ = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), turn_items=2)
        first = batcher.turn("A", 2)
        first.cancel()
        second = batcher.turn("A", 2)
        await asyncio.sleep(0)
        assert second.done()

    run(main())
