"""Request quotas: how many cryptographic requests per second each account may make.

AWS KMS meters requests per account and Region, in one-second windows, and answers
ThrottlingException past a quota. Cryptographic operations on symmetric keys share one
quota (Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext,
GenerateRandom here); the caller's account is charged, also when the key belongs to
another account. keyplane's batch extension charges one request per item, as if each
had been sent alone.

Each quota is a token bucket per account: it holds up to ``burst`` tokens (one second's
worth by default), refills at ``rate`` tokens a second, and a request takes one. The
buckets read a monotonic clock, never the service's clock: moving a test clock forward
must not refill them.

The check sits on every data-plane request, so it is kept to a clock read and a few
float operations (``bench/test_bench_quota.py`` measures it). It needs no lock: every
caller runs on the event loop's thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from keyplane.errors import ThrottlingError, ValidationError

Clock = Callable[[], float]

# The quota names keyplane meters, with what AWS calls them.
SYMMETRIC: Final = "symmetric"
QUOTA_TITLES: Final = {
    SYMMETRIC: "Cryptographic operations (symmetric) request rate",
}

# AWS KMS developer guide, "Request quotas" (requests-per-second.html): the default
# symmetric cryptographic quota is 10,000 requests per second, higher in some Regions.
# Kept as data: AWS has raised these tiers several times.
AWS_SYMMETRIC_DEFAULT: Final = 10_000.0
AWS_SYMMETRIC_BY_REGION: Final[Mapping[str, float]] = {
    **dict.fromkeys(("us-east-1", "us-west-2", "eu-west-1"), 100_000.0),
    **dict.fromkeys(
        (
            "us-east-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-northeast-1",
            "eu-central-1",
            "eu-west-2",
        ),
        20_000.0,
    ),
}


def aws_default(name: str, region: str) -> float:
    """AWS's default for quota ``name`` in ``region``, in requests per second.

    Raises:
        ValidationError: a quota keyplane does not meter.
    """
    if name != SYMMETRIC:
        raise ValidationError(
            f"unknown quota {name!r}; known: {', '.join(QUOTA_TITLES)}"
        )
    return AWS_SYMMETRIC_BY_REGION.get(region, AWS_SYMMETRIC_DEFAULT)


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate`` a second; never negative."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(
        self, rate: float, burst: float | None = None, clock: Clock = time.monotonic
    ) -> None:
        """
        Raises:
            ValueError: a rate or burst that is not a positive finite number.
        """
        if burst is None:
            burst = rate
        for what, value in (("rate", rate), ("burst", burst)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"a token bucket's {what} must be positive: {value!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = self._burst
        self._stamp = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def take(self, n: int = 1) -> bool:
        """Take ``n`` tokens if the bucket holds them (True); else take none (False).
        More than ``burst`` tokens can never be taken."""
        now = self._clock()
        tokens = self._tokens + (now - self._stamp) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        if tokens >= n:
            self._tokens = tokens - n
            return True
        self._tokens = tokens
        return False


class _Unlimited:
    """The bucket of a quota that is switched off."""

    __slots__ = ()

    def take(self, n: int = 1) -> bool:
        return True


_UNLIMITED: Final = _Unlimited()


class Quotas:
    """Every account's buckets, one per quota, made when the account first calls.

    ``rates`` gives each quota's requests per second for every account, and
    ``accounts`` overrides them for some; a rate of 0 means unlimited, and so does
    ``enabled=False`` for every quota.
    """

    def __init__(
        self,
        rates: Mapping[str, float],
        accounts: Mapping[str, Mapping[str, float]] | None = None,
        *,
        enabled: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        """
        Raises:
            ValidationError: an unknown quota name or a negative or infinite rate.
        """
        self.enabled = enabled
        self._rates = {name: _rate(name, r) for name, r in rates.items()}
        self._accounts = {
            account: {name: _rate(name, r) for name, r in table.items()}
            for account, table in (accounts or {}).items()
        }
        self._clock = clock
        # Quota name -> account -> bucket: two dict lookups on the hot path. Typed Any:
        # ``charge`` reads a TokenBucket's fields itself, once it is not _UNLIMITED.
        self._buckets: dict[str, dict[str, Any]] = {name: {} for name in QUOTA_TITLES}

    @classmethod
    def unlimited(cls) -> Quotas:
        return cls({}, enabled=False)

    @classmethod
    def aws_defaults(
        cls,
        region: str,
        overrides: Mapping[str, float] | None = None,
        accounts: Mapping[str, Mapping[str, float]] | None = None,
        *,
        enabled: bool = True,
        clock: Clock = time.monotonic,
    ) -> Quotas:
        """AWS's default quotas for ``region``, with ``overrides`` for every account and
        ``accounts`` for some."""
        rates = {name: aws_default(name, region) for name in QUOTA_TITLES}
        rates.update(overrides or {})
        return cls(rates, accounts, enabled=enabled, clock=clock)

    def rate(self, account: str, name: str) -> float:
        """Requests per second ``account`` may make under quota ``name``; 0 for no
        limit."""
        if not self.enabled:
            return 0.0
        table = self._accounts.get(account)
        if table is not None and name in table:
            return table[name]
        return self._rates.get(name, 0.0)

    def charge(self, account: str, name: str, n: int = 1) -> None:
        """Count ``n`` requests of ``account`` against quota ``name``: all of them or,
        when the account is over its rate, none.

        Raises:
            ThrottlingError: the account is over its rate ("Rate exceeded", as AWS
                says it).
        """
        bucket = self._buckets[name].get(account)
        if bucket is None:
            bucket = self._bucket(account, name)
        if bucket is _UNLIMITED:
            return
        # TokenBucket.take, inlined: this runs on every data-plane request.
        now = self._clock()
        tokens = bucket._tokens + (now - bucket._stamp) * bucket._rate
        if tokens > bucket._burst:
            tokens = bucket._burst
        bucket._stamp = now
        if tokens >= n:
            bucket._tokens = tokens - n
            return
        bucket._tokens = tokens
        raise ThrottlingError(
            f"Rate exceeded: {QUOTA_TITLES[name]} quota of "
            f"{self.rate(account, name):g} requests per second for account "
            f"{account}" + (f" (this request counts {n})" if n > 1 else "")
        )

    def _bucket(self, account: str, name: str) -> Any:
        rate = self.rate(account, name)
        bucket: TokenBucket | _Unlimited = (
            TokenBucket(rate, clock=self._clock) if rate > 0 else _UNLIMITED
        )
        self._buckets[name][account] = bucket
        return bucket


def _rate(name: str, value: float) -> float:
    if name not in QUOTA_TITLES:
        raise ValidationError(
            f"unknown quota {name!r}; known: {', '.join(QUOTA_TITLES)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"quota {name} must be a number, not {value!r}")
    if not 0 <= value < math.inf:
        raise ValidationError(
            f"quota {name} must be 0 (unlimited) or a positive number of requests "
            f"per second, not {value!r}"
        )
    return float(value)
