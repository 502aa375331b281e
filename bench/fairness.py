"""Fairness of the shared HSM fleet across accounts: one account floods, another's
single requests must still be answered promptly.

Account A (the flooder) keeps the server saturated with one of these loads, through
``bench/loadgen.py`` in a process of its own:

* ``batch-encrypt``: ``KeyplaneService.Encrypt`` requests of 10,000 32-byte items each,
  on 4 connections;
* ``batch-datakeys``: ``KeyplaneService.GenerateDataKey`` requests of 10,000 AES_256
  items each, on 4 connections;
* ``single``: ``TrentService.Encrypt`` of 32 bytes on 256 connections.

Account B (the quiet one) sends one ``TrentService.Encrypt`` every 5 ms on one
keep-alive connection from this process (when an answer takes longer than that, the
next request goes as soon as it arrives: no catch-up burst) and records each latency.
Each load is measured in alternating rounds: B alone, then B beside A's flood, again
and again, so that a swing in the machine's speed moves both sides of a pair alike.
The table shows, for B, the median over rounds of each round's p50, p99 and max, and
A's throughput (items/s) and latency during the flooded rounds. ``--kinds solo`` runs
A's load with no B: what the scheduler costs an account alone (``--loads encrypt-64
datakeys-1000`` are bench/http.py's Encrypt and batch cells). ``--baseline`` names the
``src`` folder of another keyplane tree, measured beside this one in rounds that
alternate between the two, for before/after comparisons.

Both accounts' requests are signed with SigV4 by their own IAM users. Request quotas
are switched off (``[quotas] enabled = false``) so that what is measured is the
scheduler alone: with AWS's default quota A would be throttled long before it
saturated anything. On two or more cores the server runs on core 0 and both load
generators on core 1.

Every B response must be 200 and a sample of them must decrypt back to the
plaintext; A's sampled batch responses must hold 10,000 results and no item error. A
round that fails that is reported INVALID and the exit status is 1.

Run::

    make bench-fairness                              # about three minutes
    .venv/bin/python bench/fairness.py --rounds 2 --duration 3 --loads single
    .venv/bin/python bench/fairness.py --baseline ../before/src --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import loadgen
from _host import cpu_info, git_info  # bench/ runs as scripts

# bench/http.py sits beside this file and would shadow the standard library's
# ``http`` package, which botocore imports: keep this folder last on the path.
_HERE: Final = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

HOST: Final = "127.0.0.1"
ROOT: Final = _HERE.parent
RESULTS_DIR: Final = ROOT / "bench" / "results"
REGION: Final = "us-east-1"
SERVER_CORE: Final = 0
LOAD_CORE: Final = 1
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
PROBE_INTERVAL_S: Final = 0.005
PLAINTEXT: Final = b"fairness probe: thirty-two bytes"
BATCH_ITEMS: Final = 10_000
CONTENT_TYPE: Final = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class Account:
    id: str
    access_key: str
    secret_key: str = field(repr=False)


# Made-up identities for this benchmark alone, given to keyplane through its config.
FLOODER: Final = Account(
    "111111111111", "AKIAFLOODERFLOODER01", "flooder-secret-for-the-fairness-bench"
)
QUIET: Final = Account(
    "222222222222", "AKIAQUIETQUIETQUIET1", "quiet-secret-for-the-fairness-bench"
)


def server_config(accounts: Sequence[Account]) -> str:
    parts = ["[quotas]\nenabled = false\n"]
    for account in accounts:
        parts.append(
            f"""
[[accounts]]
id = "{account.id}"

[[accounts.principals]]
type = "user"
name = "bench"
access_keys = [{{ id = "{account.access_key}", secret = "{account.secret_key}" }}]
policies = [{{ name = "all", document = {{ Version = "2012-10-17", Statement = [{{ \
Effect = "Allow", Action = "kms:*", Resource = "*" }}] }} }}]
"""
        )
    return "".join(parts)


class BenchError(Exception):
    """A step could not run, or a response was wrong."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- signing and raw HTTP -------------------------------------------------------------


def signed_request(account: Account, port: int, target: str, body: bytes) -> bytes:
    """The bytes of one ``POST /`` signed now as ``account``'s user; good for five
    minutes, and replayed as is."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}:{port}/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
    )
    credentials = Credentials(account.access_key, account.secret_key)
    SigV4Auth(credentials, "kms", REGION).add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    return loadgen.build_request(HOST, port, body, headers)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is None:
        raise BenchError("a response without Content-Length")
    length = int(match.group(1))
    while len(body) < length:
        chunk = sock.recv(max(65536, length - len(body)))
        if not chunk:
            raise BenchError("the server closed the connection inside a body")
        body += chunk
    return int(head[9:12]), body[:length]


def call(account: Account, port: int, target: str, payload: Mapping[str, Any]) -> Any:
    request = signed_request(account, port, target, json.dumps(payload).encode())
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(request)
        status, body = read_response(sock)
    if status != 200:
        raise BenchError(f"{target} answered {status}: {body[:200]!r}")
    return json.loads(body)


def create_key(account: Account, port: int) -> str:
    doc = call(account, port, "TrentService.CreateKey", {"Description": "fairness"})
    return str(doc["KeyMetadata"]["KeyId"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the server -----------------------------------------------------------------------


def _pin(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def start_server(
    work: Path, core: int | None, source: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """keyplane from this tree, or from the ``src`` folder ``source`` of another."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "keyplane.toml"
    config.write_text(server_config((FLOODER, QUIET)))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    if source is not None:
        env["PYTHONPATH"] = str(source)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyplane",
            "serve",
            "--port",
            "0",
            "--host",
            HOST,
            "--data-dir",
            str(work / "data"),
            "--log-level",
            "WARNING",
            "--config",
            str(config),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(work / "server.err").open("wb"),
        env=env,
        cwd=work,
        preexec_fn=_pin(core),
    )
    assert proc.stdout is not None
    try:
        port = _ready_port(proc.stdout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def _ready_port(stream: IO[bytes]) -> int:
    pattern = re.compile(rb"keyplane listening on http://[0-9.]+:(\d+)")
    buf = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        match = pattern.search(buf)
        if match is not None:
            return int(match.group(1))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"the server was not ready in time: {buf[-300:]!r}")
        ready, _, _ = select.select([stream.fileno()], [], [], remaining)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise BenchError(f"the server exited: {buf[-300:]!r}")
            buf += chunk


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --- A's flood ------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    name: str
    target: str
    connections: int
    items: int  # per request


LOADS: Final = {
    "batch-encrypt": Load("batch-encrypt", "KeyplaneService.Encrypt", 4, BATCH_ITEMS),
    "batch-datakeys": Load(
        "batch-datakeys", "KeyplaneService.GenerateDataKey", 4, BATCH_ITEMS
    ),
    "single": Load("single", "TrentService.Encrypt", 256, 1),
    # What bench/http.py measures, for --kinds solo: the cost of the scheduler to an
    # account that has the server to itself.
    "encrypt-64": Load("encrypt-64", "TrentService.Encrypt", 64, 1),
    "datakeys-1000": Load("datakeys-1000", "KeyplaneService.GenerateDataKey", 4, 1000),
}
FAIRNESS_LOADS: Final = ("batch-encrypt", "batch-datakeys", "single")
KINDS: Final = ("idle", "flood", "solo")


def flood_body(load: Load, key_id: str) -> bytes:
    if load.target == "KeyplaneService.Encrypt":
        item = {"KeyId": key_id, "Plaintext": b64(PLAINTEXT)}
        return json.dumps({"Items": [item] * load.items}).encode()
    if load.target == "KeyplaneService.GenerateDataKey":
        item = {"KeyId": key_id, "KeySpec": "AES_256"}
        return json.dumps({"Items": [item] * load.items}).encode()
    return json.dumps({"KeyId": key_id, "Plaintext": b64(PLAINTEXT)}).encode()


def start_flood(
    work: Path, request: bytes, load: Load, seconds: float, core: int | None
) -> subprocess.Popen[bytes]:
    """A's load in a process of its own, so B's timings never wait on it here."""
    request_file = work / f"{load.name}.request"
    request_file.write_bytes(request)
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--flood-worker",
            str(request_file),
            str(load.connections),
            str(seconds),
            str(load.items),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=_pin(core),
    )


def flood_worker(
    request_file: str, connections: int, seconds: float, items: int
) -> int:
    request = Path(request_file).read_bytes()
    port = int(re.search(rb"Host: [0-9.]+:(\d+)", request).group(1))  # type: ignore[union-attr]
    result = loadgen.run_load(
        HOST, port, request, connections=connections, duration_s=seconds, warmup_s=0.5
    )
    samples_ok = bool(result.samples) and all(
        _response_ok(body, items) for body in result.samples
    )
    p50, p99 = loadgen.percentiles_ms(result.latencies_ns, (50, 99))
    print(
        json.dumps(
            {
                "requests": result.requests,
                "seconds": result.seconds,
                "p50_ms": p50,
                "p99_ms": p99,
                "statuses": {str(k): v for k, v in result.statuses.items()},
                "socket_errors": result.socket_errors,
                "samples_ok": samples_ok,
            }
        )
    )
    return 0


def _response_ok(body: bytes, items: int) -> bool:
    doc = json.loads(body)
    results = doc.get("Results")
    if results is None:  # a single-item response
        return "CiphertextBlob" in doc
    return len(results) == items and not any("Error" in r for r in results)


# --- B's probe ------------------------------------------------------------------------


@dataclass
class Probe:
    latencies_ms: list[float]
    non_200: int
    sample: bytes

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        rank = min(len(ordered) - 1, max(0, -(-len(ordered) * p // 100) - 1))
        return ordered[int(rank)]


def probe(request: bytes, port: int, seconds: float) -> Probe:
    latencies: list[float] = []
    non_200 = 0
    sample = b""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.perf_counter() + seconds
        next_send = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            if next_send > now:
                time.sleep(next_send - now)
            started = time.perf_counter_ns()
            sock.sendall(request)
            status, body = read_response(sock)
            latencies.append((time.perf_counter_ns() - started) / 1e6)
            if status != 200:
                non_200 += 1
            sample = body
            next_send = max(next_send + PROBE_INTERVAL_S, time.perf_counter())
    return Probe(latencies, non_200, sample)


def check_probe(port: int, result: Probe) -> None:
    if result.non_200:
        raise BenchError(f"{result.non_200} of B's requests were not answered 200")
    blob = json.loads(result.sample)["CiphertextBlob"]
    opened = call(QUIET, port, "TrentService.Decrypt", {"CiphertextBlob": blob})
    if base64.b64decode(opened["Plaintext"]) != PLAINTEXT:
        raise BenchError("B's ciphertext did not decrypt to its plaintext")


# --- rounds ---------------------------------------------------------------------------


@dataclass
class Round:
    """One timed round. ``kind`` is "idle" (B alone), "flood" (B beside A's load) or
    "solo" (A's load alone); B's figures are None in a solo round, A's in an idle
    one."""

    tree: str
    load: str
    round: int
    kind: str
    b_p50_ms: float | None = None
    b_p99_ms: float | None = None
    b_max_ms: float | None = None
    probes: int = 0
    a_items_per_s: float | None = None
    a_p50_ms: float | None = None
    a_p99_ms: float | None = None


def run_round(
    tree: str,
    work: Path,
    port: int,
    load: Load,
    flood_request: bytes,
    probe_request: bytes,
    index: int,
    kind: str,
    seconds: float,
    load_core: int | None,
) -> Round:
    flood = None
    if kind != "idle":
        flood = start_flood(work, flood_request, load, seconds + 1.5, load_core)
        time.sleep(1.2)  # interpreter start and the flood's warm-up
    figures = Round(tree, load.name, index, kind)
    result = None
    if kind == "solo":
        time.sleep(seconds)
    else:
        result = probe(probe_request, port, seconds)
        figures.b_p50_ms = result.percentile(50)
        figures.b_p99_ms = result.percentile(99)
        figures.b_max_ms = max(result.latencies_ms)
        figures.probes = len(result.latencies_ms)
    if flood is not None:
        out, _ = flood.communicate(timeout=seconds + 60)
        report = json.loads(out)
        if not report["samples_ok"] or set(report["statuses"]) - {"200"}:
            raise BenchError(f"A's flood saw errors: {report}")
        figures.a_items_per_s = report["requests"] * load.items / report["seconds"]
        figures.a_p50_ms = report["p50_ms"]
        figures.a_p99_ms = report["p99_ms"]
    if result is not None:
        check_probe(port, result)
    return figures


def _median(values: Sequence[float | None], fmt: str) -> str:
    present = [v for v in values if v is not None]
    return format(statistics.median(present), fmt) if present else "-"


def summarize(rounds: Sequence[Round], loads: Sequence[str]) -> str:
    trees = list(dict.fromkeys(r.tree for r in rounds))
    lines = [
        "B: one TrentService.Encrypt every 5 ms; A: the load named; quotas off",
        "each figure is the median over rounds of that round's figure",
        "",
        f"{'tree':<10}{'A load':<16}{'round':<7}{'B p50':>8}{'B p99':>8}{'B max':>8}"
        f"{'A items/s':>12}{'A p50':>8}{'A p99':>8}{'rounds':>8}",
        f"{'':<33}{'ms':>8}{'ms':>8}{'ms':>8}{'':>12}{'ms':>8}{'ms':>8}",
        "-" * 93,
    ]
    for name in loads:
        for tree in trees:
            for kind in KINDS:
                mine = [
                    r
                    for r in rounds
                    if r.load == name and r.kind == kind and r.tree == tree
                ]
                if not mine:
                    continue
                lines.append(
                    f"{tree:<10}{name:<16}{kind:<7}"
                    f"{_median([r.b_p50_ms for r in mine], '.2f'):>8}"
                    f"{_median([r.b_p99_ms for r in mine], '.2f'):>8}"
                    f"{_median([r.b_max_ms for r in mine], '.2f'):>8}"
                    f"{_median([r.a_items_per_s for r in mine], ',.0f'):>12}"
                    f"{_median([r.a_p50_ms for r in mine], '.2f'):>8}"
                    f"{_median([r.a_p99_ms for r in mine], '.2f'):>8}"
                    f"{len(mine):>8}"
                )
    return "\n".join(lines)


@dataclass
class Tree:
    """A server to measure: this tree's, or a baseline's from another source tree."""

    name: str
    source: Path | None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    flood_key: str = ""
    probe_body: bytes = b""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="idle/flood pairs")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a round")
    parser.add_argument(
        "--loads", nargs="+", choices=sorted(LOADS), default=list(FAIRNESS_LOADS)
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        default=["idle", "flood"],
        help="idle: B alone; flood: B beside A's load; solo: A's load alone",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the src folder of another keyplane tree (a git worktree of an older "
        "commit, say) to measure in alternating rounds beside this one",
    )
    parser.add_argument("--json", type=Path, help="where the results go")
    parser.add_argument("--flood-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood_worker:
        request_file, connections, seconds, items = args.flood_worker
        return flood_worker(request_file, int(connections), float(seconds), int(items))
    two_cores = len(os.sched_getaffinity(0)) >= 2
    server_core = SERVER_CORE if two_cores else None
    load_core = LOAD_CORE if two_cores else None
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    trees = [Tree("current", None)]
    if args.baseline is not None:
        trees.insert(0, Tree("baseline", args.baseline.resolve()))
    rounds: list[Round] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="keyplane-fairness-") as tmp:
        work = Path(tmp)
        try:
            for tree in trees:
                tree.proc, tree.port = start_server(
                    work / tree.name, server_core, tree.source
                )
                tree.flood_key = create_key(FLOODER, tree.port)
                quiet_key = create_key(QUIET, tree.port)
                tree.probe_body = json.dumps(
                    {"KeyId": quiet_key, "Plaintext": b64(PLAINTEXT)}
                ).encode()
            for name in args.loads:
                load = LOADS[name]
                for index in range(args.rounds):
                    # Alternate which tree goes first, round by round.
                    order = trees if index % 2 == 0 else trees[::-1]
                    for tree in order:
                        body = flood_body(load, tree.flood_key)
                        for kind in args.kinds:
                            progress(
                                f"{tree.name} {name} round {index + 1}/{args.rounds} "
                                f"{kind}"
                            )
                            try:
                                rounds.append(
                                    run_round(
                                        tree.name,
                                        work / tree.name,
                                        tree.port,
                                        load,
                                        # Signed afresh: a signature lasts 5 minutes.
                                        signed_request(
                                            FLOODER, tree.port, load.target, body
                                        ),
                                        signed_request(
                                            QUIET,
                                            tree.port,
                                            "TrentService.Encrypt",
                                            tree.probe_body,
                                        ),
                                        index,
                                        kind,
                                        args.duration,
                                        load_core,
                                    )
                                )
                            except (BenchError, OSError, ValueError, KeyError) as exc:
                                progress(f"INVALID: {exc}")
                                failed = True
        finally:
            for tree in trees:
                if tree.proc is not None:
                    stop_server(tree.proc)
    table = summarize(rounds, args.loads)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or RESULTS_DIR / f"fairness-{stamp}.json"
    with contextlib.suppress(OSError):
        out.write_text(
            json.dumps(
                {
                    "git": git_info(),
                    "cpu": cpu_info(),
                    "settings": {
                        "rounds": args.rounds,
                        "duration_s": args.duration,
                        "probe_interval_s": PROBE_INTERVAL_S,
                        "baseline": str(args.baseline) if args.baseline else None,
                        "loads": {n: asdict(LOADS[n]) for n in args.loads},
                        "kinds": args.kinds,
                    },
                    "rounds": [asdict(r) for r in rounds],
                    "table": table,
                },
                indent=2,
            )
        )
        progress(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
