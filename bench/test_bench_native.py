"""pytest-benchmark timings of keyplane's batch API, for tracking one call over time.

Not part of the unit suite (``testpaths`` names only ``tests/``, and the project's
``addopts`` disable benchmarking, which runs each test's call once as a plain test).
Every test checks the output it timed, so a broken build fails rather than posting a
number. The comparison with references lives in ``bench/native.py``.

Run::

    .venv/bin/python -m pytest bench/test_bench_native.py --benchmark-enable
    .venv/bin/python -m pytest bench/test_bench_native.py   # correctness only, fast
"""

from __future__ import annotations

import os

# keyplane imports numpy, whose OpenBLAS threads busy-wait on the other cores between
# calls; the variable is read only when numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from keyplane.hsm import Hsm, KeySlot, Partition
from keyplane.native._pack import SMALL_BATCH

AAD_BYTES = 64
IV_BYTES = 12
OVERHEAD = 12 + 16  # IV and tag around every sealed item


class Key(NamedTuple):
    partition: Partition
    slot: KeySlot


@pytest.fixture(scope="module")
def key() -> Iterator[Key]:
    hsm = Hsm(bytearray(os.urandom(32)))
    partition = hsm.create_partition()
    yield Key(partition, partition.generate_key())
    hsm.close()


def _items(n: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def _assert_sealed(out: list[Any], n: int, pt_len: int) -> None:
    assert len(out) == n
    assert all(type(x) is bytes and len(x) == pt_len + OVERHEAD for x in out), out[:3]
    assert len({x[:IV_BYTES] for x in out}) == n  # no IV repeats within a batch


# 256 is a typical server batch; SMALL_BATCH and one past it straddle the switch from
# per-thread scratch descriptors to numpy ones, where a regression would hide.
@pytest.mark.parametrize("n", [256, SMALL_BATCH, SMALL_BATCH + 1])
def test_encrypt_32b(benchmark: Any, key: Key, n: int) -> None:
    plaintexts, aads = _items(n, 32), _items(n, AAD_BYTES)
    out = benchmark(key.partition.encrypt_batch, key.slot, plaintexts, aads)
    _assert_sealed(out, n, 32)
    assert key.partition.decrypt_batch(key.slot, out, aads) == plaintexts


def test_encrypt_batch_of_one(benchmark: Any, key: Key) -> None:
    plaintexts, aads = _items(1, 32), _items(1, AAD_BYTES)
    out = benchmark(key.partition.encrypt_batch, key.slot, plaintexts, aads)
    _assert_sealed(out, 1, 32)
    assert key.partition.decrypt_batch(key.slot, out, aads) == plaintexts


def test_generate_data_key_256(benchmark: Any, key: Key) -> None:
    n = 256
    aads = _items(n, AAD_BYTES)
    out = benchmark(key.partition.generate_data_key_batch, key.slot, 32, n, aads)
    assert len(out) == n
    assert all(type(x) is tuple for x in out), out[:3]
    keys = [k for k, _ in out]
    sealed = [s for _, s in out]
    assert all(type(k) is bytes and len(k) == 32 for k in keys)
    assert len(set(keys)) == n
    _assert_sealed(sealed, n, 32)
    # The sealed key opens, under the same slot and AAD, to the plaintext key.
    assert key.partition.decrypt_batch(key.slot, sealed, aads) == keys
