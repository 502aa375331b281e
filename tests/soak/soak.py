"""Soak: mixed load at 80% of measured capacity for a long time, with the server's RSS
sampled every second. Passes when nothing but throttling fails, RSS grows less than
10% after warm-up, and p99 latency stays steady.

The load is paced: each of the connections sends its next request at its own fixed
interval (waiting for the answer first, so a slow server sees less, not more). The
capacity it is a share of is what these same connections reach unpaced for a few
seconds first: the server's, or this Python client's if that is the lower one (the
report says which rate was measured).

    python -m tests.soak.soak --minutes 10        # what make soak runs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.conftest import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

CONNECTIONS = 16
SHARE = 0.8
WARM_UP_SHARE = 0.2
MAX_RSS_GROWTH = 0.10
# p99 of each window after warm-up may be at most this many times the best window's:
# the machine this runs on is shared, so "steady" has to allow some noise.
MAX_P99_SPREAD = 4.0
WINDOWS = 10
RESIGN_SECONDS = 60.0


@dataclass
class SoakReport:
    capacity_rps: float
    target_rps: float
    achieved_rps: float
    requests: int
    throttled: int
    errors: dict[str, int]
    rss_warm_kib: int
    rss_end_kib: int
    rss_max_kib: int
    window_p99_ms: list[float] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_kib - self.rss_warm_kib) / self.rss_warm_kib

    @property
    def p99_spread(self) -> float:
        return max(self.window_p99_ms) / max(min(self.window_p99_ms), 1e-6)

    def problems(self) -> list[str]:
        found = []
        if self.errors:
            found.append(f"errors other than throttling: {self.errors}")
        if self.rss_growth >= MAX_RSS_GROWTH:
            found.append(f"RSS grew {self.rss_growth:.1%} after warm-up")
        if self.p99_spread > MAX_P99_SPREAD:
            found.append(f"p99 varied {self.p99_spread:.1f}x across windows")
        return found

    def __str__(self) -> str:
        p99 = ", ".join(f"{p:.2f}" for p in self.window_p99_ms)
        return (
            f"capacity {self.capacity_rps:,.0f} req/s (unpaced, {CONNECTIONS} "
            f"connections); paced at {self.target_rps:,.0f}, achieved "
            f"{self.achieved_rps:,.0f} req/s; {self.requests:,} requests, "
            f"{self.throttled} throttled, other errors {self.errors or 'none'}; "
            f"RSS {self.rss_warm_kib:,} KiB after warm-up -> {self.rss_end_kib:,} KiB "
            f"at the end ({self.rss_growth:+.1%}), max {self.rss_max_kib:,} KiB; "
            f"p99 ms by window after warm-up: {p99}"
        )


def _signed(port: int, target: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:{port}/",
        data=body,
        headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kms", REGION).add_auth(request)
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _mix(server: ServerProcess) -> list[bytes]:
    """The requests of the mix, signed now: data-plane calls and reads, none of which
    adds state (state that grows would make RSS grow, rightly)."""
    kms = server.client()
    key_id = kms.create_key(Description="soak")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"s" * 32)["CiphertextBlob"]
    port = server.port
    b64 = base64.b64encode
    return [
        _signed(
            port, "TrentService.Encrypt", {"KeyId": key_id, "Plaintext": "c29haw=="}
        ),
        _signed(
            port, "TrentService.Encrypt", {"KeyId": key_id, "Plaintext": "c29haw=="}
        ),
        _signed(port, "TrentService.Decrypt", {"CiphertextBlob": b64(blob).decode()}),
        _signed(port, "TrentService.Decrypt", {"CiphertextBlob": b64(blob).decode()}),
        _signed(
            port,
            "TrentService.GenerateDataKey",
            {"KeyId": key_id, "KeySpec": "AES_256"},
        ),
        _signed(port, "TrentService.DescribeKey", {"KeyId": key_id}),
        _signed(port, "TrentService.GenerateRandom", {"NumberOfBytes": 32}),
        _signed(port, "TrentService.ListKeys", {"Limit": 10}),
    ]


class _Load:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.mix = _mix(server)
        self.signed_at = time.monotonic()
        self.samples: list[tuple[float, float]] = []  # (when, latency seconds)
        self.throttled = 0
        self.errors: dict[str, int] = {}

    def requests(self) -> list[bytes]:
        if time.monotonic() - self.signed_at > RESIGN_SECONDS:
            self.mix = _mix(self.server)
            self.signed_at = time.monotonic()
        return self.mix

    async def connection(self, index: int, until: float, interval: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        n = index
        next_at = time.monotonic()
        try:
            while (now := time.monotonic()) < until:
                if interval and next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += interval
                mix = self.requests()
                request = mix[n % len(mix)]
                n += 1
                sent = time.monotonic()
                writer.write(request)
                status, body = await _response(reader)
                self.samples.append((sent, time.monotonic() - sent))
                if status != 200:
                    kind = json.loads(body).get("__type", str(status))
                    if kind == "ThrottlingException":
                        self.throttled += 1
                    else:
                        self.errors[kind] = self.errors.get(kind, 0) + 1
        finally:
            writer.close()

    async def run(self, seconds: float, rps: float | None) -> None:
        until = time.monotonic() + seconds
        interval = CONNECTIONS / rps if rps else 0.0
        await asyncio.gather(
            *(self.connection(i, until, interval) for i in range(CONNECTIONS))
        )


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def soak(seconds: float, data_dir: Path) -> SoakReport:
    server = ServerProcess(data_dir)
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        load = _Load(server)
        asyncio.run(load.run(3.0, None))
        capacity = len(load.samples) / 3.0
        target = capacity * SHARE
        load.samples.clear()
        load.throttled = 0
        rss: list[tuple[float, int]] = []

        async def sample(until: float) -> None:
            while time.monotonic() < until:
                rss.append((time.monotonic(), _rss_kib(pid)))
                await asyncio.sleep(1.0)

        async def both() -> None:
            start = time.monotonic()
            await asyncio.gather(load.run(seconds, target), sample(start + seconds))

        started = time.monotonic()
        asyncio.run(both())
        warm_end = started + seconds * WARM_UP_SHARE
        warm_rss = next(r for t, r in rss if t >= warm_end)
        window = seconds * (1 - WARM_UP_SHARE) / WINDOWS
        p99s = []
        for w in range(WINDOWS):
            lo, hi = warm_end + w * window, warm_end + (w + 1) * window
            latencies = sorted(lat for t, lat in load.samples if lo <= t < hi)
            if len(latencies) >= 100:
                p99s.append(latencies[int(len(latencies) * 0.99)] * 1000)
        return SoakReport(
            capacity_rps=capacity,
            target_rps=target,
            achieved_rps=len(load.samples) / seconds,
            requests=len(load.samples),
            throttled=load.throttled,
            errors=load.errors,
            rss_warm_kib=warm_rss,
            rss_end_kib=int(statistics.median(r for _, r in rss[-5:])),
            rss_max_kib=max(r for _, r in rss),
            window_p99_ms=p99s,
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyplane-soak-") as tmp:
        report = soak(args.minutes * 60, Path(tmp) / "data")
    print(report, flush=True)
    problems = report.problems()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
