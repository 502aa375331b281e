"""Request quotas: the token bucket, the per-account quotas built on it, and the
``[quotas]`` section that configures them."""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane import config
from keyplane.errors import ThrottlingError, ValidationError
from keyplane.hsm import Hsm
from keyplane.kms import Caller, KmsService, RequestContext
from keyplane.kms._quota import (
    AWS_SYMMETRIC_DEFAULT,
    SYMMETRIC,
    Quotas,
    TokenBucket,
    aws_default,
)
from keyplane.kms.ops import batch, crypto, keys
from keyplane.storage import SQLiteStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- TokenBucket ----------------------------------------------------------------------


def test_a_new_bucket_holds_one_seconds_worth():
    clock = FakeClock()
    bucket = TokenBucket(50, clock=clock)
    assert bucket.burst == 50
    assert all(bucket.take() for _ in range(50))
    assert not bucket.take()


def test_the_bucket_refills_at_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(8, clock=clock)
    assert bucket.take(8)
    clock.now += 0.3125  # 2.5 tokens (binary fractions: the sums are exact)
    assert bucket.take(2)
    assert not bucket.take(1)
    clock.now += 0.0625  # 0.5 + 0.5
    assert bucket.take(1)
    assert not bucket.take(1)


def test_refill_stops_at_the_burst():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=4, clock=clock)
    clock.now += 3600
    assert bucket.take(4)
    assert not bucket.take(1)


def test_a_refused_take_consumes_nothing():
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock)
    assert bucket.take(7)
    assert not bucket.take(4)
    assert bucket.take(3)


def test_more_than_the_burst_is_never_granted():
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock)
    clock.now += 1e6
    assert not bucket.take(11)
    assert bucket.take(10)


def test_the_bucket_reads_its_own_clock():
    bucket = TokenBucket(1)  # the monotonic clock
    assert bucket.take()
    assert not bucket.take()


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, None), (-1, None), (math.inf, None), (math.nan, None), (1, 0)],
)
def test_a_bucket_needs_a_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, burst)


@given(
    rate=st.floats(0.5, 1000),
    steps=st.lists(
        st.tuples(st.floats(0, 2), st.integers(1, 50)), min_size=1, max_size=60
    ),
)
def test_no_window_gets_more_than_burst_plus_refill(rate, steps):
    """Whatever the timing, what is taken between two moments is at most the burst
    plus what the rate refills in between, and the bucket never goes negative."""
    clock = FakeClock()
    bucket = TokenBucket(rate, clock=clock)
    start = clock.now
    taken = 0
    for wait, n in steps:
        clock.now += wait
        if bucket.take(n):
            taken += n
        assert bucket._tokens >= 0
        assert taken <= bucket.burst + (clock.now - start) * rate + 1e-6


# --- Quotas ---------------------------------------------------------------------------


def test_past_the_rate_an_account_is_throttled_with_aws_words():
    clock = FakeClock()
    quotas = Quotas({SYMMETRIC: 3}, clock=clock)
    for _ in range(3):
        quotas.charge("111122223333", SYMMETRIC)
    with pytest.raises(ThrottlingError, match=r"^Rate exceeded") as caught:
        quotas.charge("111122223333", SYMMETRIC)
    assert "111122223333" in str(caught.value)
    clock.now += 1 / 3
    quotas.charge("111122223333", SYMMETRIC)


def test_each_account_has_its_own_bucket():
    clock = FakeClock()
    quotas = Quotas({SYMMETRIC: 1}, clock=clock)
    quotas.charge("111111111111", SYMMETRIC)
    quotas.charge("222222222222", SYMMETRIC)
    with pytest.raises(ThrottlingError):
        quotas.charge("111111111111", SYMMETRIC)


def test_a_charge_of_many_is_all_or_nothing():
    clock = FakeClock()
    quotas = Quotas({SYMMETRIC: 10}, clock=clock)
    quotas.charge("111111111111", SYMMETRIC, 8)
    with pytest.raises(ThrottlingError, match="counts 3"):
        quotas.charge("111111111111", SYMMETRIC, 3)
    quotas.charge("111111111111", SYMMETRIC, 2)


def test_account_overrides_and_unlimited():
    clock = FakeClock()
    quotas = Quotas(
        {SYMMETRIC: 1},
        {"222222222222": {SYMMETRIC: 0}, "333333333333": {SYMMETRIC: 2}},
        clock=clock,
    )
    for _ in range(1000):
        quotas.charge("222222222222", SYMMETRIC)
    quotas.charge("333333333333", SYMMETRIC, 2)
    with pytest.raises(ThrottlingError):
        quotas.charge("333333333333", SYMMETRIC)
    assert quotas.rate("222222222222", SYMMETRIC) == 0
    assert quotas.rate("111111111111", SYMMETRIC) == 1


def test_switched_off_quotas_never_throttle():
    quotas = Quotas({SYMMETRIC: 1}, enabled=False)
    for _ in range(100):
        quotas.charge("111111111111", SYMMETRIC, 10_000)
    assert quotas.rate("111111111111", SYMMETRIC) == 0
    Quotas.unlimited().charge("111111111111", SYMMETRIC, 10**9)


def test_aws_defaults_follow_the_region():
    assert aws_default(SYMMETRIC, "us-east-1") == 100_000
    assert aws_default(SYMMETRIC, "eu-central-1") == 20_000
    assert aws_default(SYMMETRIC, "sa-east-1") == AWS_SYMMETRIC_DEFAULT == 10_000
    quotas = Quotas.aws_defaults("ap-south-1", {}, {"111111111111": {SYMMETRIC: 5}})
    assert quotas.rate("222222222222", SYMMETRIC) == 10_000
    assert quotas.rate("111111111111", SYMMETRIC) == 5


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ({"symetric": 10}, "unknown quota 'symetric'"),
        ({SYMMETRIC: -1}, "0 \\(unlimited\\) or a positive"),
        ({SYMMETRIC: math.inf}, "0 \\(unlimited\\) or a positive"),
        ({SYMMETRIC: "10"}, "must be a number"),
        ({SYMMETRIC: True}, "must be a number"),
    ],
)
def test_bad_rates_are_refused(rates, message):
    with pytest.raises(ValidationError, match=message):
        Quotas(rates)
    with pytest.raises(ValidationError, match=message):
        Quotas({}, {"111111111111": rates})


# --- [quotas] in the configuration ----------------------------------------------------


def _load(tmp_path: Path, text: str, **environ: str) -> config.Config:
    path = tmp_path / "keyplane.toml"
    path.write_text(text)
    return config.load(path, environ=environ)


def test_quotas_are_on_at_aws_defaults_unless_configured(tmp_path):
    q = _load(tmp_path, "").quotas
    assert q == config.QuotaConfig(enabled=True, rates=(), accounts=())


def test_the_quotas_section(tmp_path):
    q = _load(
        tmp_path,
        """
[quotas]
enabled = true
symmetric = 50

[quotas.accounts.222222222222]
symmetric = 0

[quotas.accounts.333333333333]
symmetric = 2.5
""",
    ).quotas
    assert q.enabled
    assert q.rates == ((SYMMETRIC, 50.0),)
    assert q.accounts == (
        ("222222222222", ((SYMMETRIC, 0.0),)),
        ("333333333333", ((SYMMETRIC, 2.5),)),
    )


def test_the_environment_switches_quotas_off(tmp_path):
    q = _load(tmp_path, "[quotas]\nsymmetric = 5\n", KEYPLANE_QUOTAS="off").quotas
    assert not q.enabled and q.rates == ((SYMMETRIC, 5.0),)
    assert not _load(tmp_path, "", KEYPLANE_QUOTAS="false").quotas.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[quotas]\nenabled = 'maybe'\n", "quotas.enabled"),
        ("[quotas]\nsymmetric = -5\n", "quotas.symmetric must be 0"),
        ("[quotas]\nsymmetric = 'fast'\n", "quotas.symmetric must be a number"),
        ("[quotas]\nsymmetric = inf\n", "quotas.symmetric must be 0"),
        ("[quotas]\naccounts = 5\n", "quotas.accounts must be tables"),
        ("[quotas.accounts.12345]\nsymmetric = 1\n", "not a 12-digit account id"),
        ("[quotas.accounts]\n111111111111 = 5\n", "must be a table"),
        (
            "[quotas.accounts.111111111111]\nsymmetric = nan\n",
            "quotas.accounts.111111111111.symmetric must be 0",
        ),
    ],
)
def test_bad_quota_settings_are_refused(tmp_path, text, message):
    with pytest.raises(ValidationError, match=message):
        _load(tmp_path, text)


# --- the service: quotas charged per caller, bulk work in turns ---------------------


def _ctx(account: str) -> RequestContext:
    return RequestContext(
        Caller(f"arn:aws:iam::{account}:root", account), "us-east-1", "r"
    )


def _service(tmp_path: Path, loop: asyncio.AbstractEventLoop, quotas: Quotas):
    store = SQLiteStore(tmp_path / "db")
    return KmsService(
        Hsm(bytearray(os.urandom(32))),
        store,
        time.time,
        "us-east-1",
        loop,
        authorize=False,
        quotas=quotas,
    )


def test_a_single_request_is_answered_while_a_large_batch_is_worked_through(tmp_path):
    a, b = _ctx("111111111111"), _ctx("222222222222")

    async def main():
        svc = _service(tmp_path, asyncio.get_running_loop(), Quotas.unlimited())
        try:
            key_a = await keys.create_key(svc, a)
            key_b = await keys.create_key(svc, b)
            items = [batch.EncryptItem(key_a.key_id, b"%d" % i) for i in range(3000)]
            flood = asyncio.ensure_future(batch.batch_encrypt(svc, a, items))
            await asyncio.sleep(0)  # A's batch has started
            sealed = await crypto.encrypt(svc, b, key_id=key_b.key_id, plaintext=b"b")
            # B's answer came between two of A's slices, long before A's last.
            assert not flood.done()
            results = await flood
            opened = await batch.batch_decrypt(
                svc, a, [batch.DecryptItem(r.ciphertext_blob) for r in results]
            )
            assert [o.plaintext for o in opened] == [i.plaintext for i in items]
            back = await crypto.decrypt(svc, b, ciphertext_blob=sealed.ciphertext_blob)
            assert back.plaintext == b"b"
        finally:
            svc.close()
            svc.store.close()
            svc.hsm.close()

    asyncio.run(main())


def test_the_service_charges_the_caller_per_request_and_per_item(tmp_path):
    clock = FakeClock()
    a = _ctx("111111111111")

    async def main():
        quotas = Quotas({SYMMETRIC: 10}, clock=clock)
        svc = _service(tmp_path, asyncio.get_running_loop(), quotas)
        try:
            key = await keys.create_key(svc, a)  # not charged
            items = [batch.EncryptItem(key.key_id, b"x")] * 9
            await batch.batch_encrypt(svc, a, items)
            crypto.generate_random(svc, a, 8)
            with pytest.raises(ThrottlingError):
                await crypto.encrypt(svc, a, key_id=key.key_id, plaintext=b"x")
            with pytest.raises(ThrottlingError):
                await batch.batch_generate_data_keys_alike(
                    svc, a, batch.DataKeyItem(key.key_id, key_spec="AES_256"), 1
                )
            clock.now += 0.1
            await crypto.encrypt(svc, a, key_id=key.key_id, plaintext=b"x")
        finally:
            svc.close()
            svc.store.close()
            svc.hsm.close()

    asyncio.run(main())
