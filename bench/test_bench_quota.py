"""pytest-benchmark timing of the request-quota check that every cryptographic request
makes, for tracking it over time.

The target is well under 1 µs a call on the development machine (a data-plane request
costs about 30 µs end to end); read it from the benchmark's output, it is not asserted
here. Each test checks that the bucket it timed really counted, so a check that does
nothing fails rather than posting a number.

Run::

    .venv/bin/python -m pytest bench/test_bench_quota.py --benchmark-enable
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from keyplane.errors import ThrottlingError
from keyplane.kms._quota import SYMMETRIC, Quotas, TokenBucket

ACCOUNT = "111122223333"
# High enough that no timed call is refused: what is timed is a granted request.
RATE = 1e12


def test_charge_a_request(benchmark: BenchmarkFixture) -> None:
    """The call each Encrypt, Decrypt or GenerateDataKey makes, quotas on."""
    quotas = Quotas({SYMMETRIC: RATE})
    benchmark(quotas.charge, ACCOUNT, SYMMETRIC)
    small = Quotas({SYMMETRIC: 2})
    small.charge(ACCOUNT, SYMMETRIC, 2)
    with pytest.raises(ThrottlingError):
        small.charge(ACCOUNT, SYMMETRIC)


def test_charge_with_quotas_off(benchmark: BenchmarkFixture) -> None:
    quotas = Quotas({SYMMETRIC: 1}, enabled=False)
    benchmark(quotas.charge, ACCOUNT, SYMMETRIC)
    quotas.charge(ACCOUNT, SYMMETRIC, 10**9)  # never refused


def test_token_bucket_take(benchmark: BenchmarkFixture) -> None:
    bucket = TokenBucket(RATE)
    assert benchmark(bucket.take)
    tiny = TokenBucket(1, burst=1)
    assert tiny.take()
    assert not tiny.take()
