"""The micro-batcher: concurrent requests share one native call, in order, each with
its own outcome."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyplane.errors import InvalidCiphertextError, KeyUnavailableError, ValidationError
from keyplane.hsm import Batcher, Hsm


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


def test_size_cap_flushes_at_once(keyed):
    hsm, _, slot = keyed

    async def main():
        batcher = Batcher(hsm.shared, asyncio.get_running_loop(), max_items=10)
        futures = [batcher.encrypt(slot, b"x", b"") for _ in range(25)]
        # Two full batches went out while the items were being added.
        assert batcher.batches == 2
        await asyncio.gather(*futures)
        assert batcher.batches == 3 and batcher.largest == 10

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
