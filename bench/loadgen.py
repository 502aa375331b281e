"""A closed-loop HTTP/1.1 load generator on uvloop, for ``bench/http.py``.

It owns one thing: sending one pre-built request over N loopback connections as fast
as the server answers, and recording each request's latency. Each connection sends its
request, waits for the whole response (status line, ``Content-Length`` body), records
the time with ``time.perf_counter_ns`` into a preallocated array, and sends the next:
pipelining depth 1, so N connections are N requests in flight. A response that says
``Connection: close`` (moto answers every request so) or a connection the server drops
is followed by a new connection, which is how a server without keep-alive is measured.

It must not: aim anywhere but a loopback address, run without a bound (every run stops
at its deadline or when the latency array is full, whichever comes first), parse more
of a response than it needs, or judge bodies (the caller verifies a sample of them).

``bench/http.py`` prefers ``wrk`` and uses this when ``wrk`` is missing, and to
cross-check ``wrk`` on one cell. Standalone::

    .venv/bin/python bench/loadgen.py --port 4599 --target TrentService.Encrypt \\
        --body '{"KeyId": "alias/x", "Plaintext": "AAAA"}' -c 64 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import ipaddress
import json
import sys
import time
from array import array
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# Enough for 8 s at 250,000 requests/s; 8 bytes each, so 16 MB.
DEFAULT_MAX_REQUESTS: Final = 2_000_000
SAMPLE_BODIES: Final = 4
CONNECT_TIMEOUT_S: Final = 5.0
# Connect failures back off for this long before the slot tries again, so a dead server
# is counted, not spun on.
RETRY_PAUSE_S: Final = 0.01

_HEAD_END: Final = b"\r\n\r\n"
_CONTENT_LENGTH: Final = b"\r\ncontent-length:"
_CONNECTION_CLOSE: Final = b"\r\nconnection: close"


class LoadgenError(Exception):
    """A run could not be set up (bad target or arguments)."""


def build_request(
    host: str, port: int, body: bytes, headers: Mapping[str, str]
) -> bytes:
    """The bytes of one ``POST /`` with ``body``, ``headers`` and a Content-Length."""
    lines = ["POST / HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadResult:
    """What one run saw inside its timed window (the warm-up is not counted)."""

    connections: int
    seconds: float
    requests: int
    latencies_ns: array[int]
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    bytes_received: int = 0
    cpu_seconds: float = 0.0
    # Bodies of 200 responses: the first few in the window and the last.
    samples: list[bytes] = field(default_factory=list)
    bad_sample: bytes | None = None
    truncated: bool = False

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def percentile_ms(self, p: float) -> float | None:
        """Nearest-rank percentile of the recorded latencies, in milliseconds."""
        return percentiles_ms(self.latencies_ns, (p,))[0]


def percentiles_ms(
    latencies_ns: array[int], ps: tuple[float, ...]
) -> list[float | None]:
    if not latencies_ns:
        return [None for _ in ps]
    ordered = sorted(latencies_ns)
    n = len(ordered)
    out: list[float | None] = []
    for p in ps:
        rank = min(n - 1, max(0, int(-(-p * n // 100)) - 1))  # ceil(p% of n) - 1
        out.append(ordered[rank] / 1e6)
    return out


class _Run:
    """Shared state of one run: the window, the counters and the latency array."""

    def __init__(
        self,
        request: bytes,
        connections: int,
        warmup_s: float,
        duration_s: float,
        max_requests: int,
    ) -> None:
        self.request = request
        self.connections = connections
        self.latencies: array[int] = array("q", bytes(8 * max_requests))
        self.count = 0
        self.capacity = max_requests
        self.statuses: dict[int, int] = {}
        self.socket_errors: dict[str, int] = {}
        self.reconnects = 0
        self.bytes_received = 0
        self.samples: list[bytes] = []
        self.bad_sample: bytes | None = None
        self.last_ok: bytes | None = None
        now = time.perf_counter_ns()
        self.window_start_ns = now + int(warmup_s * 1e9)
        self.deadline_ns = self.window_start_ns + int(duration_s * 1e9)
        self.stop_ns: int | None = None  # set when the array fills early
        self.stopping = False
        self.open: set[_Connection] = set()

    def record(
        self, started_ns: int, done_ns: int, status: int, body: bytes, size: int
    ) -> bool:
        """Count one response; False once the run is over (send no more)."""
        if done_ns >= self.deadline_ns or self.stopping:
            return False
        if done_ns < self.window_start_ns:
            return True
        if self.count >= self.capacity:
            self.stop_ns = done_ns
            self.stopping = True
            return False
        self.bytes_received += size
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.latencies[self.count] = done_ns - started_ns
        self.count += 1
        if status != 200:
            if self.bad_sample is None:
                self.bad_sample = body
        elif len(self.samples) < SAMPLE_BODIES:
            self.samples.append(body)
        else:
            self.last_ok = body
        return True

    def reconnected(self) -> None:
        if self.window_start_ns <= time.perf_counter_ns() < self.deadline_ns:
            self.reconnects += 1

    def error(self, kind: str) -> None:
        if self.window_start_ns <= time.perf_counter_ns() < self.deadline_ns:
            self.socket_errors[kind] = self.socket_errors.get(kind, 0) + 1


class _Connection(asyncio.Protocol):
    """One connection of one slot: send, read one response, repeat."""

    __slots__ = (
        "_buf",
        "_close",
        "_done",
        "_head_end",
        "_need",
        "_reopen",
        "_run",
        "_sent_ns",
        "_status",
        "_t",
    )

    def __init__(self, run: _Run, reopen: Callable[[], None]) -> None:
        self._run = run
        self._reopen = reopen
        self._t: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = -1  # total bytes of the response in flight, once its head is in
        self._status = 0
        self._close = False
        self._sent_ns = 0
        self._head_end = 0
        self._done = False  # this connection has handed its slot on

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport  # type: ignore[assignment]
        self._run.open.add(self)
        self._send()

    def _send(self) -> None:
        self._buf.clear()
        self._need = -1
        self._sent_ns = time.perf_counter_ns()
        if self._t is not None:
            self._t.write(self._run.request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._need < 0:
            end = buf.find(_HEAD_END)
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            try:
                self._status = int(head[9:12])
                at = head.index(_CONTENT_LENGTH) + len(_CONTENT_LENGTH)
                stop = head.find(b"\r\n", at)
                length = int(head[at : stop if stop >= 0 else len(head)])
            except ValueError:
                self._fail("protocol")
                return
            self._close = _CONNECTION_CLOSE in head
            self._need = end + 4 + length
            self._head_end = end + 4
        if len(buf) < self._need:
            return
        done_ns = time.perf_counter_ns()
        run = self._run
        if len(buf) > self._need:
            # Depth 1: nothing may arrive before the next request is sent.
            self._fail("protocol")
            return
        more = run.record(
            self._sent_ns,
            done_ns,
            self._status,
            bytes(buf[self._head_end :]),
            len(buf),
        )
        if self._close or not more:
            self.hand_on()
            return
        self._send()

    def hand_on(self) -> None:
        """Close this connection and wake its slot, which reconnects if the run goes
        on."""
        if self._done:
            return
        self._done = True
        transport, self._t = self._t, None
        self._run.open.discard(self)
        if transport is not None:
            transport.close()
        self._reopen()

    def _fail(self, kind: str) -> None:
        self._run.error(kind)
        self.hand_on()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done:
            return
        # The server closed while a request was in flight: an error, then a new
        # connection, as wrk does.
        self._t = None
        self._fail("read")


async def _slot(run: _Run, host: str, port: int) -> None:
    """One virtual client: keeps one connection (at a time) busy until the deadline."""
    loop = asyncio.get_running_loop()
    reopen = asyncio.Event()
    first = True
    while not run.stopping and time.perf_counter_ns() < run.deadline_ns:
        reopen.clear()
        if not first:
            run.reconnected()
        first = False
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(run, reopen.set), host, port
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            run.error("connect")
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        remaining = max(0.0, (run.deadline_ns - time.perf_counter_ns()) / 1e9)
        try:
            await asyncio.wait_for(reopen.wait(), remaining + 1.0)
        except TimeoutError:
            break


async def _run_async(
    host: str,
    port: int,
    request: bytes,
    connections: int,
    warmup_s: float,
    duration_s: float,
    max_requests: int,
) -> tuple[_Run, float]:
    run = _Run(request, connections, warmup_s, duration_s, max_requests)
    tasks = [asyncio.ensure_future(_slot(run, host, port)) for _ in range(connections)]
    total_s = warmup_s + duration_s
    try:
        await asyncio.wait_for(
            asyncio.gather(*tasks), total_s + CONNECT_TIMEOUT_S + 5.0
        )
    except TimeoutError:
        run.stopping = True
    finally:
        run.stopping = True
        for conn in list(run.open):
            conn.hand_on()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    end_ns = run.stop_ns if run.stop_ns is not None else run.deadline_ns
    return run, max(0.0, (end_ns - run.window_start_ns) / 1e9)


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    return runner


def event_loop_name() -> str:
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "asyncio"


def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
) -> LoadResult:
    """Drive ``request`` over ``connections`` connections; see the module docstring.

    Args:
        host: a loopback address (anything else is refused).
        port: the server's port.
        request: the complete bytes of one request, sent again and again.
        connections: how many requests are in flight at once.
        duration_s: the timed window, after ``warmup_s`` of untimed load.
        warmup_s: load before the window, not counted.
        max_requests: the latency array's size; the run stops early when it fills.

    Returns:
        What happened inside the window.

    Raises:
        LoadgenError: a non-loopback host, or a bound out of range.
    """
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise LoadgenError(f"refusing to load {host!r}: loopback addresses only")
    if not 1 <= connections <= 4096:
        raise LoadgenError("connections must be 1 to 4096")
    if not 0 < duration_s <= 600 or not 0 <= warmup_s <= 60:
        raise LoadgenError("duration must be in (0, 600] s and warm-up in [0, 60] s")
    if not 1 <= max_requests <= 50_000_000:
        raise LoadgenError("max_requests must be 1 to 50,000,000")
    runner = _event_loop_runner()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection would land in some request's latency
    cpu_before = time.process_time()
    try:
        run, seconds = runner(
            _run_async(
                host,
                port,
                request,
                connections,
                warmup_s,
                duration_s,
                max_requests,
            )
        )
    finally:
        if gc_was_enabled:
            gc.enable()
    cpu = time.process_time() - cpu_before
    return LoadResult(
        connections=connections,
        seconds=seconds,
        requests=run.count,
        latencies_ns=run.latencies[: run.count],
        statuses=run.statuses,
        socket_errors=run.socket_errors,
        reconnects=run.reconnects,
        bytes_received=run.bytes_received,
        cpu_seconds=cpu,
        samples=run.samples + ([run.last_ok] if run.last_ok is not None else []),
        bad_sample=run.bad_sample,
        truncated=run.stop_ns is not None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="the X-Amz-Target header")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("-w", "--warmup", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)
    request = build_request(
        args.host,
        args.port,
        args.body.encode(),
        {
            "X-Amz-Target": args.target,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    try:
        result = run_load(
            args.host,
            args.port,
            request,
            connections=args.connections,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    p50, p99 = percentiles_ms(result.latencies_ns, (50, 99))
    print(
        json.dumps(
            {
                "loop": event_loop_name(),
                "connections": result.connections,
                "seconds": round(result.seconds, 3),
                "requests": result.requests,
                "requests_per_second": round(result.requests_per_second, 1),
                "p50_ms": p50,
                "p99_ms": p99,
                "statuses": result.statuses,
                "socket_errors": result.socket_errors,
                "reconnects": result.reconnects,
                "cpu_seconds": round(result.cpu_seconds, 3),
                "truncated": result.truncated,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
