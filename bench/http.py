"""Requests/s and latency of keyplane over HTTP against moto's server mode, in a table.

What it measures, through the full service path (HTTP parsing, X-Amz-Target routing,
JSON and base64, key lookup, the native HSM, the response):

* ``TrentService.Encrypt`` of a 32-byte plaintext, ``Decrypt`` of a ciphertext made
  beforehand, and ``GenerateDataKey`` (AES_256), at 1 and at 64 connections, first on
  keyplane and then on moto (never both at once): requests/s, p50 and p99 latency,
  errors (any response but 200, and any socket error), the server's CPU use;
* keyplane only: data keys/s through the batch extension
  (``KeyplaneService.GenerateDataKey``, 1000 items per request) at 1 and 4 connections;
* Encrypt again on each server with its request logging on (keyplane's access log at
  INFO, moto's werkzeug request log), the log going to /dev/null;
* keyplane only: what authentication costs. Encrypt at 64 connections on keyplane as
  configured (SigV4 checked, key policies and IAM policies evaluated) and on the same
  server started with ``--auth off``, in alternating rounds (on, off, on, off, ...),
  each on a freshly started server; the figure is the median of the ratios of the
  round pairs, as ``bench/native.py`` pairs its rounds, so that a swing in the
  machine's speed moves both halves of a pair alike.

The load is closed-loop: each connection sends one request, waits for the whole
response, and sends the next. It comes from ``wrk`` (installed with apt-get when it is
missing and this runs as root, saying so) with a generated Lua script, or from
``bench/loadgen.py`` (uvloop) when wrk cannot be had; one cell is measured with both as
a cross-check. On a machine with two or more cores the server and all its threads run
on core 0 and the load generator and this script on core 1.

Every request, from the load generator or from this script, is signed with SigV4 by
the bench's access key, which keyplane learns from a TOML file written into the run's
temporary directory (one account, one IAM user allowed ``kms:*``). A signature is
accepted for five minutes after its X-Amz-Date, so the load replays one signed request
per workload, signed afresh for each run of the generator. keyplane recomputes the
signature of every request it gets (it caches only the derived signing key), so the
replay pays the whole check each time. Both servers get the same request bytes: moto
ignores the signature and routes on its credential scope. moto answers every request
with ``Connection: close``, so its keep-alive runs become reconnects: that is part of
the comparison.

A fresh response of every workload is verified (parsed, and decrypted back through the
same server) before and after each cell, and so are response bodies captured during
the timed run. At set-up each server must refuse a tampered ciphertext, and keyplane
a wrong signature unless it runs with ``--auth off`` (where it must accept one). So a
broken server posts no numbers: its cell says INVALID and the exit status is 1. Missed
targets are reported, not failed.

The figures also go to ``bench/results/http-<UTC timestamp>.json`` with the commit,
host, versions and settings.

Run::

    make bench-http                              # four to five minutes
    .venv/bin/python bench/http.py --quick       # about a minute and a half
    .venv/bin/python bench/http.py --loadgen python --duration 5
    .venv/bin/python bench/http.py --rounds 9    # more auth on/off round pairs
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import functools
import importlib.metadata
import json
import operator
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import loadgen
from _host import _run, cpu_info, git_info  # bench/ runs as scripts

# This file is bench/http.py, and Python puts the script's folder first on sys.path,
# where it would shadow the standard library's ``http`` package that boto3 (through
# urllib3) imports. Nothing above imports ``http``; moving the folder to the end lets
# the standard library win while ``loadgen`` stays importable.
_HERE: Final = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

HOST: Final = "127.0.0.1"
ROOT: Final = _HERE.parent
RESULTS_DIR: Final = ROOT / "bench" / "results"

CONNECTIONS: Final = (1, 64)
BATCH_CONNECTIONS: Final = (1, 4)
BATCH_ITEMS: Final = 1000
CROSS_CHECK_CONNECTIONS: Final = 64
MAX_ATTEMPTS: Final = 3  # per cell, when other work on the machine skews one
PLAINTEXT_BYTES: Final = 32
SERVER_CORE: Final = 0
LOAD_CORE: Final = 1
WRK_TIMEOUT_S: Final = 5
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
AUTH_CONNECTIONS: Final = 64

# The one identity every request is signed as: AWS's documentation example key, given
# to keyplane through BENCH_CONFIG and nowhere else. keyplane accepts only signatures
# for its region and the "kms" service.
REGION: Final = "us-east-1"
ACCOUNT: Final = "111122223333"
ACCESS_KEY: Final = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105  AWS's doc example
# Request quotas off: this measures capacity, and the batch cell alone makes several
# times AWS's us-east-1 quota of 100,000 cryptographic requests a second.
BENCH_CONFIG: Final = f"""\
[quotas]
enabled = false

[[accounts]]
id = "{ACCOUNT}"

[[accounts.principals]]
type = "user"
name = "bench"
access_keys = [{{ id = "{ACCESS_KEY}", secret = "{SECRET_KEY}" }}]
policies = [{{ name = "all", document = {{ Version = "2012-10-17", Statement = [{{ \
Effect = "Allow", Action = "kms:*", Resource = "*" }}] }} }}]
"""

CONTENT_TYPE: Final = "application/x-amz-json-1.1"

# moto's server mode, with werkzeug's per-request log line silenced unless asked for,
# so that by default neither server logs each request. A fixed program, not user input.
_MOTO_BOOT: Final = """\
import logging, sys
from moto.server import main
if sys.argv[1] == "quiet":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
main(sys.argv[2:])
"""


class VerificationError(Exception):
    """A response was wrong: the cell it belongs to must not report numbers."""


class BenchError(Exception):
    """The benchmark could not run a step (a server would not start, a tool failed)."""


def progress(message: str) -> None:
    # Progress goes to stderr so that stdout carries only the table.
    print(message, file=sys.stderr, flush=True)


# --- raw HTTP for set-up and verification ---------------------------------------------
# The same request bytes as the load, over a plain socket: no client library between
# what the benchmark verifies and what it times.


@functools.cache
def _signer() -> Any:
    # Imported here, after the sys.path fix at the top, because botocore imports
    # ``http``.
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    return SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kms", REGION)


def headers_for(port: int, target: str, body: bytes) -> dict[str, str]:
    """The headers of ``POST /`` to ``port``, signed now; good for five minutes.

    Host is signed as ``loadgen.build_request`` and the wrk script send it, with the
    port, but it is not among the headers returned: each sender writes its own.
    """
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}:{port}/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
    )
    _signer().add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def post(
    port: int, target: str, body: bytes, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    """One request on a new connection, signed now: (status, body)."""
    request = loadgen.build_request(HOST, port, body, headers_for(port, target, body))
    return send(port, request, timeout_s)


def send(port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    deadline = time.monotonic() + 30.0
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk or time.monotonic() > deadline:
            raise VerificationError("the connection closed before a response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is None:
        while chunk and time.monotonic() < deadline:  # until the server closes
            chunk = sock.recv(65536)
            body += chunk
        return status, body
    length = int(match.group(1))
    while len(body) < length:
        chunk = sock.recv(max(65536, length - len(body)))
        if not chunk or time.monotonic() > deadline:
            raise VerificationError("the connection closed inside a response body")
        body += chunk
    return status, body[:length]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise VerificationError(f"{what} is not valid base64") from exc


def parse_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise VerificationError(
            f"{what}: the body is not JSON: {body[:120]!r}"
        ) from exc
    if not isinstance(doc, dict):
        raise VerificationError(f"{what}: the body is not a JSON object")
    return doc


def call(port: int, target: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    status, body = post(port, target, json.dumps(payload).encode())
    if status != 200:
        raise VerificationError(f"{target} answered {status}: {body[:200]!r}")
    return parse_json(body, target)


def decrypt_through(port: int, blob: bytes) -> bytes:
    doc = call(port, "TrentService.Decrypt", {"CiphertextBlob": b64(blob)})
    return unb64(doc.get("Plaintext"), "Decrypt Plaintext")


# --- workloads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One request, sent again and again, and how to tell that its answer is right."""

    label: str
    target: str
    body: bytes
    items: int  # data keys (or items) per request
    verify: Callable[[bytes], None]


def make_workloads(port: int, key_id: str, plaintext: bytes) -> dict[str, Workload]:
    """The four workloads on one server, with a ciphertext for Decrypt made here."""

    def key_matches(doc: Mapping[str, Any], what: str) -> None:
        arn = doc.get("KeyId")
        if not isinstance(arn, str) or not arn.endswith(key_id):
            raise VerificationError(f"{what}: KeyId {arn!r} is not the key used")

    def verify_encrypt(body: bytes) -> None:
        doc = parse_json(body, "Encrypt")
        key_matches(doc, "Encrypt")
        blob = unb64(doc.get("CiphertextBlob"), "Encrypt CiphertextBlob")
        if plaintext in blob or blob == ciphertext:
            raise VerificationError(
                "Encrypt's ciphertext holds the plaintext or repeats"
            )
        if decrypt_through(port, blob) != plaintext:
            raise VerificationError(
                "Encrypt's ciphertext does not decrypt to the input"
            )

    def verify_decrypt(body: bytes) -> None:
        doc = parse_json(body, "Decrypt")
        key_matches(doc, "Decrypt")
        if unb64(doc.get("Plaintext"), "Decrypt Plaintext") != plaintext:
            raise VerificationError("Decrypt did not return the original plaintext")

    def verify_data_key(doc: Mapping[str, Any], what: str, check_blob: bool) -> bytes:
        key_matches(doc, what)
        key = unb64(doc.get("Plaintext"), f"{what} Plaintext")
        if len(key) != 32:
            raise VerificationError(f"{what}: a {len(key)}-byte AES_256 data key")
        blob = unb64(doc.get("CiphertextBlob"), f"{what} CiphertextBlob")
        if key in blob:
            raise VerificationError(f"{what}: CiphertextBlob holds the data key")
        if check_blob and decrypt_through(port, blob) != key:
            raise VerificationError(
                f"{what}: CiphertextBlob does not open to Plaintext"
            )
        return key

    def verify_generate(body: bytes) -> None:
        verify_data_key(parse_json(body, "GenerateDataKey"), "GenerateDataKey", True)

    def verify_batch(body: bytes) -> None:
        results = parse_json(body, "batch").get("Results")
        if not isinstance(results, list) or len(results) != BATCH_ITEMS:
            raise VerificationError(f"batch: not {BATCH_ITEMS} Results")
        keys = set()
        # Every item is checked for shape; a spread of them is opened again.
        opened = {0, BATCH_ITEMS // 2, BATCH_ITEMS - 1}
        for i, item in enumerate(results):
            if not isinstance(item, dict) or "Error" in item:
                raise VerificationError(f"batch: item {i} failed: {item!r:.200}")
            keys.add(verify_data_key(item, f"batch item {i}", i in opened))
        if len(keys) != BATCH_ITEMS:
            raise VerificationError("batch: a data key repeats within one response")

    encrypt_body = {"KeyId": key_id, "Plaintext": b64(plaintext)}
    doc = call(port, "TrentService.Encrypt", encrypt_body)
    ciphertext = unb64(doc.get("CiphertextBlob"), "Encrypt CiphertextBlob")
    if decrypt_through(port, ciphertext) != plaintext:
        raise VerificationError("the Decrypt workload's ciphertext does not open")
    # A server that does not check the tag must not post numbers.
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    status, _ = post(
        port,
        "TrentService.Decrypt",
        json.dumps({"CiphertextBlob": b64(tampered)}).encode(),
    )
    if status == 200:
        raise VerificationError("Decrypt accepted a tampered ciphertext")
    data_key_body = {"KeyId": key_id, "KeySpec": "AES_256"}

    def compact(payload: Mapping[str, Any]) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    return {
        "Encrypt": Workload(
            "Encrypt", "TrentService.Encrypt", compact(encrypt_body), 1, verify_encrypt
        ),
        "Decrypt": Workload(
            "Decrypt",
            "TrentService.Decrypt",
            compact({"CiphertextBlob": b64(ciphertext)}),
            1,
            verify_decrypt,
        ),
        "GenerateDataKey": Workload(
            "GenerateDataKey",
            "TrentService.GenerateDataKey",
            compact(data_key_body),
            1,
            verify_generate,
        ),
        "batch": Workload(
            f"batch GenerateDataKey x{BATCH_ITEMS}",
            "KeyplaneService.GenerateDataKey",
            compact({"Items": [data_key_body] * BATCH_ITEMS}),
            BATCH_ITEMS,
            verify_batch,
        ),
    }


def verify_signature_handling(port: int, workload: Workload, checked: bool) -> None:
    """keyplane must refuse a wrong signature when it checks them, and accept it with
    --auth off; otherwise the auth on/off rows would not compare what they say.

    The wrong signature is a fresh one with its last hex digit changed.
    """
    headers = headers_for(port, workload.target, workload.body)
    signed = headers["Authorization"]
    headers["Authorization"] = signed[:-1] + ("1" if signed[-1] == "0" else "0")
    status, body = send(port, loadgen.build_request(HOST, port, workload.body, headers))
    if not checked:
        if status != 200:
            raise VerificationError(
                f"with auth off, a wrong signature got {status}: {body[:200]!r}"
            )
        return
    if status == 200:
        raise VerificationError("a request with a wrong signature was accepted")
    if b"InvalidSignatureException" not in body:
        raise VerificationError(
            f"a wrong signature was refused for another reason: {status} {body[:200]!r}"
        )


def verify_fresh(port: int, workload: Workload) -> None:
    status, body = post(port, workload.target, workload.body)
    if status != 200:
        raise VerificationError(f"{workload.label} answered {status}: {body[:200]!r}")
    workload.verify(body)


# --- servers --------------------------------------------------------------------------


def _pin(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of every thread of ``pid`` so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_affinities(pid: int) -> set[frozenset[int]]:
    found: set[frozenset[int]] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.add(frozenset(os.sched_getaffinity(int(task.name))))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process, started pinned, stopped with SIGTERM."""

    name: str  # "keyplane" or "moto"
    variant: str  # "", "logging on", "auth on" or "auth off"
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path | None
    started_s: float
    checks_signatures: bool = False
    exit_code: int | None = None
    stderr_tail: str = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                progress(f"{self.name} did not stop within {STOP_TIMEOUT_S:.0f} s")
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self.exit_code = self.proc.returncode
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.stderr_path is not None:
            with contextlib.suppress(OSError):
                text = self.stderr_path.read_text(errors="replace")
                self.stderr_tail = text[-2000:]


def _read_line_until(
    stream: IO[bytes], pattern: re.Pattern[bytes], timeout_s: float
) -> re.Match[bytes]:
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in buf.split(b"\n"):
            match = pattern.search(line)
            if match is not None:
                return match
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"no ready line within {timeout_s:.0f} s: {buf[-300:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BenchError(
                    f"the server exited before it was ready: {buf[-300:]!r}"
                )
            buf += chunk


def start_keyplane(
    data_dir: Path,
    core: int | None,
    work: Path,
    *,
    log_level: str = "WARNING",
    auth: str = "sigv4",
    variant: str = "",
) -> Server:
    """keyplane with the bench's identities (``BENCH_CONFIG``), ``--auth`` as given."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    config = work / "keyplane.toml"
    config.write_text(BENCH_CONFIG)
    # At INFO every request writes an access-log line to stderr, which goes to
    # /dev/null; at WARNING stderr is kept, to report anything the server complains of.
    stderr_path = None if log_level == "INFO" else work / f"{data_dir.name}.err"
    stderr: IO[bytes] | int
    stderr = subprocess.DEVNULL if stderr_path is None else stderr_path.open("wb")
    started = time.monotonic()
    try:
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
                str(data_dir),
                "--log-level",
                log_level,
                "--config",
                str(config),
                "--auth",
                auth,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=work,
            preexec_fn=_pin(core),  # pins the server; this process has no threads
        )
    finally:
        if not isinstance(stderr, int):
            stderr.close()
    assert proc.stdout is not None
    try:
        match = _read_line_until(
            proc.stdout,
            re.compile(rb"keyplane listening on http://[0-9.]+:(\d+)"),
            START_TIMEOUT_S,
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    port = int(match.group(1))
    return Server("keyplane", variant, proc, port, stderr_path, started, auth != "off")


def start_moto(request_log: bool, core: int | None, work: Path) -> Server:
    port = free_port()
    stderr_path = None if request_log else work / "moto.err"
    stderr: IO[bytes] | int
    stderr = subprocess.DEVNULL if stderr_path is None else stderr_path.open("wb")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _MOTO_BOOT,
                "log" if request_log else "quiet",
                "-H",
                HOST,
                "-p",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=work,
            preexec_fn=_pin(core),  # pins the server; this process has no threads
        )
    finally:
        if not isinstance(stderr, int):
            stderr.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise BenchError(
                f"moto exited with code {proc.returncode} before listening"
            )
        try:
            socket.create_connection((HOST, port), timeout=1.0).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BenchError(
                    f"moto did not listen within {START_TIMEOUT_S:.0f} s"
                ) from None
            time.sleep(0.05)
    variant = "logging on" if request_log else ""
    return Server("moto", variant, proc, port, stderr_path, started)


def create_key(port: int) -> str:
    """A symmetric key made through boto3, as any client would make one."""
    # Imported here, after the sys.path fix at the top, because boto3 imports ``http``.
    import boto3  # type: ignore[import-untyped]  # boto3 ships no type hints

    kms = boto3.client(
        "kms",
        endpoint_url=f"http://{HOST}:{port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    key_id = kms.create_key(Description="bench/http.py")["KeyMetadata"]["KeyId"]
    if not isinstance(key_id, str):
        raise BenchError(f"CreateKey returned {key_id!r}")
    return key_id


# --- load generators ------------------------------------------------------------------


@dataclass
class Measurement:
    """One timed run, as either generator reports it."""

    requests: int
    seconds: float
    p50_ms: float | None
    p75_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    bytes_received: int
    generator_cpu_s: float
    samples: list[bytes]
    bad_sample: bytes | None
    reconnects: int | None = None  # loadgen only; wrk reconnects without counting
    # wrk only: the request rate per 100 ms sample, p10/p50/p90/max, in requests/s.
    rate_per_100ms: dict[str, float] | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def errors(self) -> int:
        return self.non_200 + sum(self.socket_errors.values())


def _lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal, of a level that ``text`` cannot end."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


_WRK_DONE: Final = r"""
threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    last_body = body
  elseif bad_body == nil then
    bad_body = body
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "@@WRK %d %d %d %d %d %d %d %d %.1f %.1f %.1f %.1f %.1f %.3f\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
  -- wrk samples each thread's request rate every 100 ms.
  io.write(string.format("@@RATE %.1f %.1f %.1f %.1f\n", requests:percentile(10),
    requests:percentile(50), requests:percentile(90), requests.max))
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, n in pairs(s) do
        io.write(string.format("@@STATUS %d %d\n", code, n))
      end
    end
    local b = t:get("last_body")
    if b then io.write("@@LAST ", #b, "\n", b, "\n") end
    local bad = t:get("bad_body")
    if bad then io.write("@@BAD ", #bad, "\n", bad, "\n") end
  end
end
"""


def wrk_script(workload: Workload, port: int) -> str:
    """The Lua script for one run: its request is signed now, so a script must not
    outlive the five minutes a signature is accepted for."""
    lines = ['wrk.method = "POST"', 'wrk.path = "/"']
    # Set here rather than left to wrk, so the Host sent is, byte for byte, the one
    # signed (and the one loadgen.build_request sends).
    headers = {"Host": f"{HOST}:{port}"}
    headers.update(headers_for(port, workload.target, workload.body))
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    lines.append(f"wrk.body = {_lua_string(workload.body.decode('ascii'))}")
    return "\n".join(lines) + "\n" + _WRK_DONE


def _take_blob(out: bytes, marker: bytes) -> bytes | None:
    at = out.find(marker)
    if at < 0:
        return None
    at += len(marker)
    newline = out.index(b"\n", at)
    size = int(out[at:newline])
    return out[newline + 1 : newline + 1 + size]


class Wrk:
    name = "wrk"

    def __init__(self, exe: str, core: int | None, work: Path) -> None:
        self.exe = exe
        self.core = core
        self.work = work

    def version(self) -> str | None:
        # wrk -v prints its version, then its usage, and exits with status 1.
        out = _run([self.exe, "-v"], ok_status=(0, 1))
        return out.splitlines()[0].split(" Copyright")[0] if out else None

    def run(
        self, port: int, workload: Workload, connections: int, seconds: int
    ) -> Measurement:
        name = re.sub(r"[^A-Za-z0-9]+", "-", workload.label)
        script = self.work / f"wrk-{name}-{port}.lua"
        script.write_text(wrk_script(workload, port))
        cmd = [
            self.exe,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            f"{WRK_TIMEOUT_S}s",
            "-s",
            str(script),
            f"http://{HOST}:{port}/",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            cmd,
            capture_output=True,
            check=False,
            timeout=seconds + 60,
            preexec_fn=_pin(self.core),  # pins wrk; no threads here
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out = proc.stdout
        match = re.search(rb"^@@WRK ([^\n]*)$", out, re.MULTILINE)
        if proc.returncode != 0 or match is None:
            tail = (proc.stderr or out)[-300:]
            raise BenchError(f"wrk exited {proc.returncode}: {tail!r}")
        f = match.group(1).split()
        requests, duration_us, nbytes = int(f[0]), int(f[1]), int(f[2])
        connect, read, write, _status, timeout = (int(x) for x in f[3:8])
        p50, p75, p90, p99, pmax, mean = (float(x) / 1000 for x in f[8:14])
        statuses = {
            int(code): int(n)
            for code, n in re.findall(rb"^@@STATUS (\d+) (\d+)$", out, re.MULTILINE)
        }
        last = _take_blob(out, b"@@LAST ")
        rate = re.search(rb"^@@RATE ([^\n]*)$", out, re.MULTILINE)
        rates = None
        if rate is not None:
            values = [float(x) for x in rate.group(1).split()]
            rates = dict(zip(("p10", "p50", "p90", "max"), values, strict=True))
        have = requests > 0
        return Measurement(
            requests=requests,
            seconds=duration_us / 1e6,
            p50_ms=p50 if have else None,
            p75_ms=p75 if have else None,
            p90_ms=p90 if have else None,
            p99_ms=p99 if have else None,
            max_ms=pmax if have else None,
            mean_ms=mean if have else None,
            statuses=statuses,
            socket_errors={
                k: v
                for k, v in (
                    ("connect", connect),
                    ("read", read),
                    ("write", write),
                    ("timeout", timeout),
                )
                if v
            },
            bytes_received=nbytes,
            generator_cpu_s=cpu,
            samples=[last] if last is not None else [],
            bad_sample=_take_blob(out, b"@@BAD "),
            rate_per_100ms=rates,
        )


class Loadgen:
    name = "loadgen"

    def version(self) -> str:
        return f"bench/loadgen.py on {loadgen.event_loop_name()}"

    def run(
        self, port: int, workload: Workload, connections: int, seconds: int
    ) -> Measurement:
        request = loadgen.build_request(
            HOST, port, workload.body, headers_for(port, workload.target, workload.body)
        )
        result = loadgen.run_load(
            HOST, port, request, connections=connections, duration_s=seconds, warmup_s=0
        )
        p50, p75, p90, p99, pmax = loadgen.percentiles_ms(
            result.latencies_ns, (50, 75, 90, 99, 100)
        )
        lat = result.latencies_ns
        return Measurement(
            requests=result.requests,
            seconds=result.seconds,
            p50_ms=p50,
            p75_ms=p75,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=pmax,
            mean_ms=sum(lat) / len(lat) / 1e6 if lat else None,
            statuses=result.statuses,
            socket_errors=result.socket_errors,
            bytes_received=result.bytes_received,
            generator_cpu_s=result.cpu_seconds,
            samples=result.samples,
            bad_sample=result.bad_sample,
            reconnects=result.reconnects,
        )


Generator = Wrk | Loadgen


# --- cells ----------------------------------------------------------------------------


@dataclass
class Cell:
    server: str
    variant: str
    operation: str
    connections: int
    generator: str
    items_per_request: int = 1
    measurement: Measurement | None = None
    server_cpu_s: float | None = None
    error: str | None = None
    other_cpu_s: float | None = None
    waited_s: float = 0.0
    quiet: bool = True  # whether the machine was quiet when the cell began
    attempts: int = 1
    # "table"; "cross" for the cross-check's second run; "round" for one round of a
    # comparison measured in alternating rounds, numbered from 1 in ``round``.
    role: str = "table"
    round: int = 0

    @property
    def rps(self) -> float | None:
        m = self.measurement
        return None if m is None or self.error else m.requests_per_second

    @property
    def items_per_second(self) -> float | None:
        rps = self.rps
        return None if rps is None else rps * self.items_per_request

    @property
    def errors(self) -> int | None:
        return None if self.measurement is None else self.measurement.errors

    @property
    def server_cpu_share(self) -> float | None:
        m = self.measurement
        if m is None or self.server_cpu_s is None or m.seconds <= 0:
            return None
        return self.server_cpu_s / m.seconds

    @property
    def generator_cpu_share(self) -> float | None:
        m = self.measurement
        return None if m is None or m.seconds <= 0 else m.generator_cpu_s / m.seconds

    @property
    def other_cpu_share(self) -> float | None:
        m = self.measurement
        if m is None or self.other_cpu_s is None or m.seconds <= 0:
            return None
        return self.other_cpu_s / m.seconds

    @property
    def busy(self) -> bool:
        """Other work took more than a tenth of a core during the timed window."""
        share = self.other_cpu_share
        return share is not None and share > QuietGate.QUIET_CORES

    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.operation, self.connections)


@dataclass(frozen=True)
class Settings:
    seconds: int
    warmup_seconds: int
    quick: bool
    loadgen: str  # "auto", "wrk" or "python"
    install_wrk: bool
    wait_per_cell_s: float
    wait_budget_s: float
    rounds: int  # auth on/off round pairs
    round_seconds: int  # timed seconds of each round


def machine_busy_seconds() -> float | None:
    """CPU time of every process, plus time the hypervisor took, over all cores."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if first[0] != "cpu" or len(first) < 9:
        return None
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, first[1:9])
    # Interrupt time is left out: it is mostly loopback traffic of the run itself.
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and of its finished children (wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class QuietGate:
    """Waits, before each cell, for the machine to be quiet, and pays for cells run
    again because it was not, both out of one budget of seconds.

    Other processes (a test suite, a build) on the same two cores take time from the
    server or the load generator and skew a cell; the ``other`` column says how much
    they took, and ``!`` marks a cell where it was still more than ``QUIET_CORES``.
    """

    SAMPLE_S: Final = 0.5
    QUIET_CORES: Final = 0.10  # other busy CPU allowed, in cores

    def __init__(self, budget_s: float, per_cell_s: float) -> None:
        self.budget_s = budget_s
        self.per_cell_s = per_cell_s
        self.spent_s = 0.0

    def other_cores(self, server: Server) -> float | None:
        busy0, own0, srv0 = (
            machine_busy_seconds(),
            own_cpu_seconds(),
            server.cpu_seconds(),
        )
        time.sleep(self.SAMPLE_S)
        busy1, own1, srv1 = (
            machine_busy_seconds(),
            own_cpu_seconds(),
            server.cpu_seconds(),
        )
        if busy0 is None or busy1 is None or srv0 is None or srv1 is None:
            return None
        return ((busy1 - busy0) - (srv1 - srv0) - (own1 - own0)) / self.SAMPLE_S

    def allow(self, cost_s: float) -> bool:
        """Whether a cell may run again, at about ``cost_s``, within the budget."""
        if self.spent_s + cost_s > self.budget_s:
            return False
        self.spent_s += cost_s
        return True

    def wait(self, server: Server) -> tuple[float, bool]:
        """(seconds waited, whether the machine was quiet at the end)."""
        started = time.monotonic()
        limit = min(self.per_cell_s, max(0.0, self.budget_s - self.spent_s))
        while True:
            other = self.other_cores(server)
            waited = time.monotonic() - started
            if other is None or other <= self.QUIET_CORES:
                quiet = True
                break
            if waited >= limit:
                quiet = False
                break
            if waited < self.SAMPLE_S * 1.5:
                progress(f"  waiting for other work on the machine ({other:.2f} cores)")
        self.spent_s += waited
        return waited, quiet


def measure(
    server: Server,
    generator: Generator,
    workload: Workload,
    connections: int,
    settings: Settings,
    gate: QuietGate,
) -> Cell:
    """One cell of the table: run it again (within the gate's budget) when other work
    took a share of the machine during it, and keep the calmest attempt."""
    progress(
        f"{server.name}{' (' + server.variant + ')' if server.variant else ''} "
        f"{workload.label} x{connections} with {generator.name}"
    )
    kept: Cell | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        cell = _attempt(server, generator, workload, connections, settings, gate)
        cell.attempts = attempt
        if cell.error is not None:
            return cell  # a wrong answer is never hidden behind a retry
        if kept is None or (cell.other_cpu_share or 0.0) < (kept.other_cpu_share or 0):
            kept = cell
        kept.attempts = attempt
        if not cell.busy or attempt == MAX_ATTEMPTS:
            break
        if not gate.allow(time.monotonic() - started):
            break
        progress(
            f"  other work took {cell.other_cpu_share:.0%} of a core: running it again"
        )
    assert kept is not None
    return kept


def _attempt(
    server: Server,
    generator: Generator,
    workload: Workload,
    connections: int,
    settings: Settings,
    gate: QuietGate,
) -> Cell:
    """Wait for quiet, verify, warm up, time, verify again."""
    cell = Cell(
        server.name,
        server.variant,
        workload.label,
        connections,
        generator.name,
        workload.items,
    )
    try:
        if not server.alive():
            raise BenchError(f"the server has exited (code {server.proc.returncode})")
        cell.waited_s, cell.quiet = gate.wait(server)
        verify_fresh(server.port, workload)
        if settings.warmup_seconds:
            generator.run(server.port, workload, connections, settings.warmup_seconds)
        busy_before = machine_busy_seconds()
        own_before = own_cpu_seconds()
        cpu_before = server.cpu_seconds()
        m = generator.run(server.port, workload, connections, settings.seconds)
        cpu_after = server.cpu_seconds()
        own_after = own_cpu_seconds()
        busy_after = machine_busy_seconds()
        cell.measurement = m
        if cpu_before is not None and cpu_after is not None:
            cell.server_cpu_s = cpu_after - cpu_before
            if busy_before is not None and busy_after is not None:
                # Whatever else ran on the machine meanwhile: the load generator and
                # this script are "own" (this process and its waited-for children).
                cell.other_cpu_s = max(
                    0.0,
                    (busy_after - busy_before)
                    - cell.server_cpu_s
                    - (own_after - own_before),
                )
        if not server.alive():
            raise BenchError(
                f"the server exited during the run (code {server.proc.returncode})"
            )
        if m.requests and not m.samples and m.non_200 < m.requests:
            raise VerificationError("no response body was captured to verify")
        for body in m.samples:
            workload.verify(body)
        verify_fresh(server.port, workload)
    except (VerificationError, BenchError, OSError, subprocess.TimeoutExpired) as exc:
        cell.error = f"{type(exc).__name__}: {exc}"
        progress(f"  INVALID: {cell.error[:300]}")
    return cell


# --- host, versions -------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    found: dict[str, str | None] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}"
    }
    for name in (
        "keyplane",
        "moto",
        "werkzeug",
        "flask",
        "boto3",
        "botocore",
        "uvloop",
        "httptools",
        "orjson",
        "cryptography",
    ):
        found[name] = dist(name)
    return found


def ensure_wrk(install: bool) -> tuple[str | None, str]:
    """wrk's path, installing it from Debian when missing and allowed; and a note."""
    exe = shutil.which("wrk")
    if exe is not None:
        return exe, "found on PATH"
    if not install:
        return None, "not found (--no-install)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "not found, and apt-get is unavailable or this is not root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for step in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
    ):
        progress(f"wrk not found: running {' '.join(step)}")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(step, capture_output=True, check=False, timeout=600, env=env)
        if step[1] == "update":
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                progress("running apt-get install -y -q wrk")
                subprocess.run(
                    ["apt-get", "install", "-y", "-q", "wrk"],
                    capture_output=True,
                    check=False,
                    timeout=600,
                    env=env,
                )
        exe = shutil.which("wrk")
        if exe is not None:
            return exe, "installed with apt-get by this run"
    return None, "not found, and apt-get install wrk failed"


# --- targets --------------------------------------------------------------------------


@dataclass
class Target:
    goal: str
    want: str
    got: str
    met: bool


@dataclass(frozen=True)
class Pick:
    """Which cells make up one side of a comparison: one table cell, or the rounds of
    a comparison measured in alternating rounds."""

    server: str
    variant: str = ""
    role: str = "table"


KEYPLANE: Final = Pick("keyplane")
MOTO: Final = Pick("moto")
AUTH_ON: Final = Pick("keyplane", "auth on", "round")
AUTH_OFF: Final = Pick("keyplane", "auth off", "round")
OPERATIONS: Final = ("Encrypt", "Decrypt", "GenerateDataKey")


@dataclass(frozen=True)
class RatioTarget:
    """A target on numerator req/s over denominator req/s, at least ``least``.

    Each side's cells pair up in the order they ran (round 1 with round 1, ...), and
    the figure is the median of the pairs' ratios; a side of one table cell makes one
    pair, so the median is that pair's ratio.
    """

    goal: str
    want: str
    least: float
    fmt: str
    numerator: Pick
    denominator: Pick
    operation: str
    connections: int


RATIO_TARGETS: Final = (
    *(
        RatioTarget(
            f"keyplane/moto {op}, 64 connections",
            ">= 75x",
            75.0,
            "{:.1f}x",
            KEYPLANE,
            MOTO,
            op,
            64,
        )
        for op in OPERATIONS
    ),
    RatioTarget(
        "Encrypt 64 conns, auth on / auth off",
        ">= 0.85",
        0.85,
        "{:.2f}",
        AUTH_ON,
        AUTH_OFF,
        "Encrypt",
        AUTH_CONNECTIONS,
    ),
)


def _picked(
    cells: Sequence[Cell], pick: Pick, operation: str, conns: int
) -> list[Cell]:
    """The cells of one side, in the order they ran."""
    return [
        c
        for c in cells
        if (c.server, c.variant, c.role, c.operation, c.connections)
        == (pick.server, pick.variant, pick.role, operation, conns)
    ]


def _cell(
    cells: Sequence[Cell], server: str, operation: str, conns: int, variant: str = ""
) -> Cell | None:
    found = _picked(cells, Pick(server, variant), operation, conns)
    return found[0] if found else None


def _usable(cell: Cell | None) -> bool:
    return (
        cell is not None
        and cell.error is None
        and cell.errors == 0
        and cell.rps is not None
    )


def _why_not(cell: Cell | None) -> str:
    if cell is None:
        return "not run"
    if cell.error is not None:
        return "invalid"
    return f"{cell.errors} errors"


def pair_ratios(numerator: Sequence[Cell], denominator: Sequence[Cell]) -> list[float]:
    """req/s of each numerator cell over its partner's, pairing in order."""
    return [
        a.rps / b.rps
        for a, b in zip(numerator, denominator, strict=False)
        if a.rps is not None and b.rps
    ]


def paired_ratio(
    numerator: Sequence[Cell], denominator: Sequence[Cell]
) -> float | None:
    """The median of the pairs' ratios, as ``bench/native.py`` judges its rounds.

    This machine's speed swings two- to threefold within seconds. The two cells of a
    pair ran one right after the other, so a swing moves both alike, and the median
    leaves out the pairs a swing cut through.
    """
    ratios = pair_ratios(numerator, denominator)
    return statistics.median(ratios) if ratios else None


def ratio(
    cells: Sequence[Cell], operation: str, conns: int, variant: str = ""
) -> float | None:
    return paired_ratio(
        _picked(cells, Pick("keyplane", variant), operation, conns),
        _picked(cells, Pick("moto", variant), operation, conns),
    )


def evaluate(cells: Sequence[Cell]) -> list[Target]:
    targets: list[Target] = []

    def add(
        goal: str,
        want: str,
        cell: Cell | None,
        value: float | None,
        ok: Callable[[float], bool],
        fmt: str,
    ) -> None:
        if value is None or not _usable(cell):
            got = "-" if value is None else fmt.format(value)
            targets.append(Target(goal, want, f"{got} ({_why_not(cell)})", False))
            return
        targets.append(Target(goal, want, fmt.format(value), ok(value)))

    enc64 = _cell(cells, "keyplane", "Encrypt", 64)
    add(
        "keyplane Encrypt req/s, 64 connections",
        ">= 20,000",
        enc64,
        enc64.rps if enc64 else None,
        lambda v: v >= 20_000,
        "{:,.0f}",
    )
    for t in RATIO_TARGETS:
        sides = (
            _picked(cells, t.numerator, t.operation, t.connections),
            _picked(cells, t.denominator, t.operation, t.connections),
        )
        value, fmt = paired_ratio(*sides), t.fmt
        # Every cell of both sides must be clean, or the ratio means nothing; the
        # first that is not is the one the verdict names.
        both = [*sides[0], *sides[1]]
        judged = next((c for c in both if not _usable(c)), both[0] if both else None)
        if not all(sides) or len(sides[0]) != len(sides[1]):
            judged = None  # a side, or a round of one, never ran
        if value is not None and value < t.least:
            # More decimals, up to four, while a miss would print as the threshold.
            while fmt.format(value) == fmt.format(t.least) and ".4f" not in fmt:
                fmt = re.sub(r"\.(\d)f", lambda m: f".{int(m[1]) + 1}f", fmt)
        ok = functools.partial(operator.le, t.least)  # least <= v
        add(t.goal, t.want, judged, value, ok, fmt)
    # Latency targets: (percentile, connections, bound in ms, format).
    for stat, conns, bound, fmt in (
        ("p99", 64, 10.0, "{:.2f} ms"),
        ("p50", 1, 0.2, "{:.3f} ms"),
    ):
        for op in OPERATIONS:
            kp = _cell(cells, "keyplane", op, conns)
            value = (
                getattr(kp.measurement, f"{stat}_ms") if kp and kp.measurement else None
            )
            add(
                f"keyplane {op} {stat}, {conns} connection{'s' if conns > 1 else ''}",
                f"< {bound:g} ms",
                kp,
                value,
                functools.partial(operator.gt, bound),  # v < bound
                fmt,
            )
    batch = [
        c for c in cells if c.items_per_request > 1 and c.items_per_second is not None
    ]
    best = max(batch, key=lambda c: c.items_per_second or 0.0, default=None)
    label = (
        f"batch data keys/s (best: {best.connections} conn)"
        if best
        else "batch data keys/s"
    )
    add(
        label,
        ">= 500,000",
        best,
        best.items_per_second if best else None,
        lambda v: v >= 500_000,
        "{:,.0f}",
    )
    return targets


# --- output ---------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


_METRIC_HEAD: Final = (
    f"{'req/s':>9}  {'p50 ms':>7}  {'p99 ms':>8}  {'errors':>6}  "
    f"{'srv cpu':>7}  {'gen cpu':>7}  {'other':>6}"
)


def _metrics(cell: Cell) -> str:
    """The figures every row shows, or INVALID and why."""
    m = cell.measurement
    if cell.error is not None or m is None:
        return f"INVALID: {(cell.error or 'no measurement')[:60]}"
    # "!": other work took more than a tenth of a core during the cell.
    other = _pct(cell.other_cpu_share) + ("!" if cell.busy else "")
    return (
        f"{_num(cell.rps, '{:,.0f}'):>9}  {_num(m.p50_ms, '{:.3f}'):>7}  "
        f"{_num(m.p99_ms, '{:.3f}'):>8}  {cell.errors:>6}  "
        f"{_pct(cell.server_cpu_share):>7}  {_pct(cell.generator_cpu_share):>7}  "
        f"{other:>6}"
    )


def median_round(rounds: Sequence[Cell]) -> Cell | None:
    """The round to show for a side: the first invalid one, or else the one whose
    req/s is the median (the lower of the middle two when there are an even number)."""
    bad = [c for c in rounds if c.rps is None]
    if bad:
        return bad[0]
    ordered = sorted(rounds, key=lambda c: c.rps or 0.0)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def render(
    cells: Sequence[Cell],
    cross: tuple[Cell, Cell] | None,
    targets: Sequence[Target],
    header: Sequence[str],
    notes: Sequence[str],
) -> str:
    out = list(header)
    out.append("")
    head = f"{'server / operation':<26} {'conns':>5}  {_METRIC_HEAD}  {'kp/moto':>7}"
    out.append(head)
    out.append("-" * len(head))
    single = [c for c in cells if c.items_per_request == 1 and c.role == "table"]
    for server in ("keyplane", "moto"):
        rows = [c for c in single if c.server == server and not c.variant]
        if rows:
            out.append(server)
        for c in rows:
            r = (
                ratio(cells, c.operation, c.connections)
                if server == "keyplane"
                else None
            )
            out.append(
                f"{'  ' + c.operation:<26} {c.connections:>5}  {_metrics(c)}  "
                f"{_num(r, '{:.1f}x'):>7}"
            )
    logged = [c for c in single if c.variant]
    if logged:
        out.append("with per-request logging on (to /dev/null)")
    for c in logged:
        r = (
            ratio(cells, c.operation, c.connections, c.variant)
            if c.server == "keyplane"
            else None
        )
        out.append(
            f"{'  ' + c.server + ' ' + c.operation:<26} {c.connections:>5}  "
            f"{_metrics(c)}  {_num(r, '{:.1f}x'):>7}"
        )
    on = _picked(cells, AUTH_ON, "Encrypt", AUTH_CONNECTIONS)
    off = _picked(cells, AUTH_OFF, "Encrypt", AUTH_CONNECTIONS)
    if on or off:
        out.append(
            "keyplane Encrypt, auth on (SigV4 and policies) vs --auth off: the median "
            f"of {len(on)} and {len(off)} alternating rounds"
        )
        for label, rounds in (("auth on", on), ("auth off", off)):
            shown = median_round(rounds)
            if shown is not None:
                out.append(
                    f"{'  ' + label:<26} {shown.connections:>5}  {_metrics(shown)}"
                )
        pairs = pair_ratios(on, off)
        if pairs:
            out.append(
                "  auth on / auth off req/s by round pair: "
                + ", ".join(f"{r:.2f}" for r in pairs)
                + f"; median {statistics.median(pairs):.2f}"
            )
    batch = [c for c in cells if c.items_per_request > 1]
    if batch:
        out.append("")
        out.append(
            "batch extension, keyplane only: KeyplaneService.GenerateDataKey, "
            f"{BATCH_ITEMS} AES_256 items per request"
        )
        out.append(f"{'data keys/s':>12} {'conns':>5}  {_METRIC_HEAD}")
    for c in batch:
        out.append(
            f"{_num(c.items_per_second, '{:,.0f}'):>12} {c.connections:>5}  "
            f"{_metrics(c)}"
        )
    if cross is not None:
        first, second = cross
        out.append("")
        out.append(
            f"cross-check: keyplane Encrypt at {first.connections} connections, "
            "the two generators back to back"
        )
        out.append(f"{'generator':<12} {'conns':>5}  {_METRIC_HEAD}")
        for c in cross:
            out.append(f"{c.generator:<12} {c.connections:>5}  {_metrics(c)}")
        if first.rps and second.rps:
            out.append(
                f"{second.generator}/{first.generator} req/s: "
                f"{second.rps / first.rps:.2f}"
            )
    out.append("")
    out.append("targets:")
    for t in targets:
        verdict = "MET" if t.met else "MISSED"
        out.append(f"  {t.goal:<46} {t.want:>10}  {t.got:>20}  {verdict}")
    out.append(f"  {sum(t.met for t in targets)} of {len(targets)} met")
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(f"  - {n}" for n in notes)
    return "\n".join(line.rstrip() for line in out)


def _cell_name(c: Cell) -> str:
    variant = f" ({c.variant})" if c.variant else ""
    round_no = f" round {c.round}" if c.round else ""
    return (
        f"{c.server}{variant} {c.operation} x{c.connections}{round_no} [{c.generator}]"
    )


def cell_notes(cells: Sequence[Cell]) -> list[str]:
    notes: list[str] = []
    for c in cells:
        m = c.measurement
        name = _cell_name(c)
        if c.error is not None:
            notes.append(f"{name}: INVALID, {c.error[:300]}")
        if m is None:
            continue
        if m.non_200:
            bad = {s: n for s, n in m.statuses.items() if s != 200}
            sample = (m.bad_sample or b"")[:160]
            notes.append(f"{name}: non-200 responses {bad}, e.g. {sample!r}")
        if m.socket_errors:
            notes.append(f"{name}: socket errors {m.socket_errors}")
    busy = [c for c in cells if c.busy and c.error is None]
    if busy:
        notes.append(
            f"{len(busy)} cells (marked !) shared the machine with other work that "
            "took over 10% of a core; their figures are suspect; attempts: "
            + ", ".join(f"{_cell_name(c)} {c.attempts}" for c in busy)
        )
    return notes


def swing_note(cells: Sequence[Cell]) -> str | None:
    """How much the request rate moved within keyplane's 64-connection cells."""
    parts = []
    for c in cells:
        m = c.measurement
        if (
            c.server != "keyplane"
            or c.variant
            or c.connections != 64
            or c.role != "table"
            or m is None
            or not m.rate_per_100ms
        ):
            continue
        r = m.rate_per_100ms
        parts.append(f"{c.operation} {r['p10']:,.0f}-{r['p90']:,.0f}")
    if not parts:
        return None
    return (
        "keyplane's request rate per 100 ms inside each 64-connection cell, p10-p90: "
        + "; ".join(parts)
    )


# --- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(
        description="keyplane vs moto over HTTP: requests/s and latency"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 s per cell (about a minute in all)"
    )
    parser.add_argument(
        "--duration",
        type=int,
        metavar="S",
        help="timed seconds per cell (default 8, quick 2)",
    )
    parser.add_argument(
        "--warmup", type=int, metavar="S", help="warm-up seconds per cell (default 1)"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk if it can be had (auto), wrk only, or bench/loadgen.py (python)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="wait up to S seconds before each cell for other work on the machine to "
        "stop; waits and re-runs of cells it skewed share a budget of 5 times S "
        "(default 20, quick 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="rounds of keyplane Encrypt at 64 connections with auth on and with auth "
        "off, alternating, each on a fresh server (default 5, quick 3)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install wrk"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the JSON (default bench/results/)",
    )
    args = parser.parse_args(argv)
    seconds = args.duration if args.duration is not None else (2 if args.quick else 8)
    warmup = args.warmup if args.warmup is not None else 1
    if not 1 <= seconds <= 120:
        parser.error("--duration must be 1 to 120 seconds")
    if not 0 <= warmup <= 30:
        parser.error("--warmup must be 0 to 30 seconds")
    wait = args.wait if args.wait is not None else (5 if args.quick else 20)
    if not 0 <= wait <= 300:
        parser.error("--wait must be 0 to 300 seconds")
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if not 1 <= rounds <= 50:
        parser.error("--rounds must be 1 to 50")
    settings = Settings(
        seconds,
        warmup,
        args.quick,
        args.loadgen,
        not args.no_install,
        wait_per_cell_s=wait,
        wait_budget_s=wait * 5,
        rounds=rounds,
        # Half a cell: a pair's two rounds then run closer together in time, and the
        # run makes room for more pairs.
        round_seconds=min(seconds, max(2, seconds // 2)),
    )
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path = parse_args(argv)
    started = time.monotonic()
    created = datetime.now(UTC)

    host = cpu_info()  # before this process pins itself to one core
    load_before = os.getloadavg()
    cores = sorted(os.sched_getaffinity(0))
    server_core: int | None
    load_core: int | None
    if len(cores) >= 2:
        server_core, load_core = cores[0], cores[1]
        os.sched_setaffinity(0, {load_core})
        pinning = (
            f"server and all its threads on core {server_core}; wrk, bench/loadgen.py "
            f"and this script on core {load_core}"
        )
    else:
        server_core = load_core = None
        pinning = "nothing (fewer than two cores available); server and load share"

    wrk_exe: str | None = None
    wrk_note = "not wanted (--loadgen python)"
    if settings.loadgen != "python":
        wrk_exe, wrk_note = ensure_wrk(settings.install_wrk)
        if wrk_exe is None and settings.loadgen == "wrk":
            progress(f"wrk: {wrk_note}")
            return 2

    with tempfile.TemporaryDirectory(prefix="kp-bench-http-") as tmp:
        work = Path(tmp)
        gate = QuietGate(settings.wait_budget_s, settings.wait_per_cell_s)
        python_gen = Loadgen()
        wrk = Wrk(wrk_exe, load_core, work) if wrk_exe else None
        main_gen: Generator = wrk if wrk is not None else python_gen
        generator_line = (
            f"load generator: {wrk.version()} ({wrk_note}; -t1, closed loop, Lua "
            f"script);\n  bench/loadgen.py on {loadgen.event_loop_name()} cross-checks "
            "one cell"
            if wrk is not None
            else f"load generator: bench/loadgen.py on {loadgen.event_loop_name()} "
            f"(closed loop, depth 1); wrk {wrk_note}"
        )
        cells: list[Cell] = []
        cross: tuple[Cell, Cell] | None = None
        servers: list[dict[str, Any]] = []
        pin_checks: list[str] = []
        failures: list[str] = []
        plaintext = os.urandom(PLAINTEXT_BYTES)

        def check_pinning(server: Server, when: str) -> None:
            if server_core is None:
                return
            found = thread_affinities(server.proc.pid)
            if found and found != {frozenset({server_core})}:
                shown = sorted(sorted(cpus) for cpus in found)
                pin_checks.append(f"{server.name} {when}: thread affinities {shown}")

        def phase(
            label: str,
            start: Callable[[], Server],
            body: Callable[[Server, dict[str, Workload]], None],
        ) -> None:
            """Start a server, make a key and the workloads, run ``body``, stop it."""
            try:
                server = start()
            except (BenchError, OSError) as exc:
                failures.append(f"{label} did not start: {exc}")
                return
            try:
                check_pinning(server, "after start")
                workloads = make_workloads(
                    server.port, create_key(server.port), plaintext
                )
                if server.name == "keyplane":
                    verify_signature_handling(
                        server.port, workloads["Encrypt"], server.checks_signatures
                    )
                body(server, workloads)
                check_pinning(server, "at the end")
            except Exception as exc:  # a failed set-up voids this server's rows only
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
            finally:
                server.stop()
                servers.append(
                    {
                        "name": server.name,
                        "variant": server.variant,
                        "exit_code": server.exit_code,
                        "stderr_tail": server.stderr_tail,
                    }
                )

        ops = ("Encrypt", "Decrypt", "GenerateDataKey")

        def keyplane_body(server: Server, wl: dict[str, Workload]) -> None:
            nonlocal cross
            for op in ops:
                for conns in CONNECTIONS:
                    cells.append(
                        measure(server, main_gen, wl[op], conns, settings, gate)
                    )
                    if op == "Encrypt" and conns == CROSS_CHECK_CONNECTIONS:
                        other: Generator = (
                            python_gen if main_gen is wrk else (wrk or python_gen)
                        )
                        if other is not main_gen:
                            # Back to back with the table's cell, on the same server.
                            second = measure(
                                server, other, wl[op], conns, settings, gate
                            )
                            second.role = "cross"
                            cells.append(second)
                            cross = (cells[-2], second)
            for conns in BATCH_CONNECTIONS:
                cells.append(
                    measure(server, main_gen, wl["batch"], conns, settings, gate)
                )

        def encrypt_only(server: Server, wl: dict[str, Workload]) -> None:
            for conns in CONNECTIONS:
                cells.append(
                    measure(server, main_gen, wl["Encrypt"], conns, settings, gate)
                )

        def moto_body(server: Server, wl: dict[str, Workload]) -> None:
            for op in ops:
                for conns in CONNECTIONS:
                    cells.append(
                        measure(server, main_gen, wl[op], conns, settings, gate)
                    )

        round_settings = replace(settings, seconds=settings.round_seconds)

        def auth_round(number: int) -> Callable[[Server, dict[str, Workload]], None]:
            def body(server: Server, wl: dict[str, Workload]) -> None:
                cell = measure(
                    server,
                    main_gen,
                    wl["Encrypt"],
                    AUTH_CONNECTIONS,
                    round_settings,
                    gate,
                )
                cell.role, cell.round = "round", number
                cells.append(cell)

            return body

        # keyplane without and then with its access log; keyplane with auth on and off
        # in turns; then moto without and with its request log; never two servers at
        # once.
        phase(
            "keyplane",
            functools.partial(start_keyplane, work / "data-quiet", server_core, work),
            keyplane_body,
        )
        phase(
            "keyplane (access log)",
            functools.partial(
                start_keyplane,
                work / "data-info",
                server_core,
                work,
                log_level="INFO",
                variant="logging on",
            ),
            encrypt_only,
        )
        # Each round starts its server afresh, in a data directory kept from round to
        # round, so the two sides differ only in --auth and alternate as closely as one
        # server at a time allows.
        for number in range(1, settings.rounds + 1):
            for variant, auth in (("auth on", "sigv4"), ("auth off", "off")):
                progress(f"auth round {number} of {settings.rounds}, {variant}")
                phase(
                    f"keyplane ({variant}) round {number}",
                    functools.partial(
                        start_keyplane,
                        work / f"data-{variant.replace(' ', '-')}",
                        server_core,
                        work,
                        auth=auth,
                        variant=variant,
                    ),
                    auth_round(number),
                )
        phase("moto", lambda: start_moto(False, server_core, work), moto_body)
        phase(
            "moto (request log)",
            lambda: start_moto(True, server_core, work),
            encrypt_only,
        )

    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    targets = evaluate(cells)
    git, vers = git_info(), versions()
    notes = cell_notes(cells)
    swing = swing_note(cells)
    if swing is not None:
        notes.append(swing)
    notes += failures
    notes += [f"pinning check: {p}" for p in pin_checks]
    for s in servers:
        label = f"{s['name']}{' (' + s['variant'] + ')' if s['variant'] else ''}"
        if s["name"] == "keyplane" and s["exit_code"] != 0:
            notes.append(f"{label} exited with code {s['exit_code']} on SIGTERM")
        if s["stderr_tail"].strip():
            first = s["stderr_tail"].strip().splitlines()[-1][:150]
            notes.append(f"{label} wrote to stderr (last line: {first!r})")
    notes = list(dict.fromkeys(notes))  # the auth rounds' servers repeat their notes

    header = [
        f"keyplane HTTP throughput and latency vs moto, {created:%Y-%m-%d %H:%M} UTC, "
        f"commit {(git['commit'] or 'unknown')[:12]}"
        f"{' (dirty tree)' if git['dirty'] else ''}",
        f"cpu: {host['model']}, nproc {host['nproc']}; {vers['python']}, keyplane "
        f"{vers['keyplane']}, moto {vers['moto']} (werkzeug {vers['werkzeug']})",
        generator_line,
        f"pinned: {pinning}",
        f"each cell: {settings.warmup_seconds} s warm-up, then {settings.seconds} s "
        f"timed; Encrypt of {PLAINTEXT_BYTES} B, Decrypt of its ciphertext, "
        "GenerateDataKey AES_256",
        "keyplane --log-level WARNING (no access log); moto's per-request log "
        "silenced; moto closes every connection",
        "every request SigV4-signed by one IAM user (kms:* allowed), which keyplane "
        "checks, and moto ignores;",
        f"auth on vs off: {settings.rounds} rounds a side, each "
        f"{settings.warmup_seconds} s warm-up and {settings.round_seconds} s timed, "
        "alternating, a fresh server each round",
        "errors: responses other than 200, plus socket errors; srv cpu, gen cpu: the "
        "server's and the load generator's CPU time over the window (100% = one core);",
        "other: CPU time of other processes, and time the hypervisor took, over the "
        "window (! = over 10%, after up to 3 attempts)",
        f"run took {elapsed:.0f} s",
    ]
    print(render(cells, cross, targets, header, notes))

    def cell_json(c: Cell) -> dict[str, Any]:
        m = c.measurement
        data: dict[str, Any] = {
            "server": c.server,
            "variant": c.variant,
            "operation": c.operation,
            "connections": c.connections,
            "generator": c.generator,
            "role": c.role,
            "round": c.round or None,
            "items_per_request": c.items_per_request,
            "requests_per_second": c.rps,
            "items_per_second": c.items_per_second,
            "server_cpu_seconds": c.server_cpu_s,
            "other_cpu_seconds": c.other_cpu_s,
            "waited_for_quiet_seconds": round(c.waited_s, 2),
            "quiet_at_start": c.quiet,
            "attempts": c.attempts,
            "error": c.error,
        }
        if m is not None:
            mj = asdict(m)
            for drop in ("samples", "bad_sample"):
                mj.pop(drop)
            mj["statuses"] = {str(k): v for k, v in m.statuses.items()}
            mj["errors"] = m.errors
            mj["bad_sample"] = (
                None if m.bad_sample is None else m.bad_sample[:500].decode("latin-1")
            )
            data["measurement"] = mj
        return data

    auth_on = _picked(cells, AUTH_ON, "Encrypt", AUTH_CONNECTIONS)
    auth_off = _picked(cells, AUTH_OFF, "Encrypt", AUTH_CONNECTIONS)
    report = {
        "created_utc": created.isoformat(timespec="seconds"),
        "git": git,
        "host": host,
        "versions": {
            **vers,
            "wrk": wrk.version() if wrk else None,
            "loadgen_loop": loadgen.event_loop_name(),
        },
        "settings": {
            **asdict(settings),
            "connections": list(CONNECTIONS),
            "batch_connections": list(BATCH_CONNECTIONS),
            "batch_items": BATCH_ITEMS,
            "plaintext_bytes": PLAINTEXT_BYTES,
            "generator": main_gen.name,
            "wrk": wrk_note,
            "wrk_timeout_seconds": WRK_TIMEOUT_S,
            "pinning": pinning,
            "keyplane_log_level": "WARNING (and INFO for the logging-on rows)",
            "keyplane_auth": "sigv4 (and off for the auth-off rounds)",
            "auth_connections": AUTH_CONNECTIONS,
            "moto_request_log": "off (and on for the logging-on rows)",
        },
        "elapsed_seconds": round(elapsed, 1),
        "load_average": {"before": load_before, "after": load_after},
        "cells": [cell_json(c) for c in cells],
        "ratios_keyplane_over_moto": {
            f"{op} x{n}{' ' + v if v else ''}": ratio(cells, op, n, v)
            for v, op, n in sorted(
                {
                    c.key()
                    for c in cells
                    if c.server == "keyplane"
                    and c.items_per_request == 1
                    and c.role == "table"
                }
            )
        },
        "auth_on_over_auth_off": {
            "operation": "Encrypt",
            "connections": AUTH_CONNECTIONS,
            "auth_on_requests_per_second": [c.rps for c in auth_on],
            "auth_off_requests_per_second": [c.rps for c in auth_off],
            "pair_ratios": pair_ratios(auth_on, auth_off),
            "median_ratio": paired_ratio(auth_on, auth_off),
        },
        "targets": [asdict(t) for t in targets],
        "servers": servers,
        "notes": notes,
    }
    path = json_path or RESULTS_DIR / f"http-{created:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {path}")
    invalid = any(c.error is not None for c in cells) or bool(failures)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
