"""Throughput of keyplane's native batch API against two references, in one table.

What it measures, in items per second on one core:

* ``gdk``: generate data key (32-byte keys); ``enc32``/``enc4k``: encrypt of 32 B and
  4096 B plaintexts; ``dec32``/``dec4k``: decrypt of those ciphertexts. Every item has
  its own 64-byte AAD of distinct random bytes.
* batch sizes 1, 16, 256 and 4096, through ``keyplane.hsm.Partition``'s batch calls;
* reference (a): a plain Python loop over ``cryptography``'s ``AESGCM`` doing the same
  work per item, timed over the same items, in rounds interleaved with keyplane's;
* reference (b): ``openssl speed -evp aes-256-gcm`` at 4096 and 32 bytes, run before
  and after the Python measurements (best of the two), as the hardware's rate.

Every output is checked outside the timed region (count, types, lengths, distinct IVs
and keys, round trips, a tampered ciphertext refused), so a broken build posts no
numbers: its rows say INVALID and the exit status is 1. Otherwise the exit status is 0
whether or not the targets printed under the table are met; this is a report.

The figures also go to ``bench/results/native-<UTC timestamp>.json`` with the commit,
host and library versions.

Run::

    make bench-native                        # a little over a minute
    .venv/bin/python bench/native.py --quick # about 20 seconds, fewer rounds
    .venv/bin/python bench/native.py --rounds 21 --json /tmp/native.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# keyplane imports numpy, whose OpenBLAS starts a thread per core that busy-waits after
# each call; on a small machine that spins on the core the measurement or `openssl
# speed` would otherwise have to itself. keyplane never uses BLAS, so one thread is
# free, but the variable is read only when numpy is first imported: set it before.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from _host import _run, cpu_info, git_info  # bench/ runs as scripts
from keyplane.hsm import Hsm, KeySlot, Partition

BATCHES = (1, 16, 256, 4096)
AAD_BYTES = 64
DATA_KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
OVERHEAD = IV_BYTES + TAG_BYTES

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "gdk", "enc" or "dec"
    size: int  # plaintext bytes per item (the data key's size for gdk)


WORKLOADS = (
    Workload("gdk", "gdk", DATA_KEY_BYTES),
    Workload("enc32", "enc", 32),
    Workload("enc4k", "enc", 4096),
    Workload("dec32", "dec", 32),
    Workload("dec4k", "dec", 4096),
)


@dataclass(frozen=True)
class Settings:
    rounds: int
    round_seconds: float
    openssl_seconds: int
    quick: bool


class InvalidResultError(Exception):
    """An output was wrong; the row it belongs to must not report a rate."""


# --- reference (a): cryptography's AESGCM in a Python loop ----------------------------
# Comprehensions with local bindings are the fastest plain-Python form of the loop, so
# the ratios do not flatter keyplane with a slow reference.


def ref_encrypt(
    g: AESGCM, plaintexts: Sequence[bytes], aads: Sequence[bytes]
) -> list[bytes]:
    seal, urandom = g.encrypt, os.urandom
    return [
        (iv := urandom(IV_BYTES)) + seal(iv, pt, aad)
        for pt, aad in zip(plaintexts, aads, strict=True)
    ]


def ref_decrypt(
    g: AESGCM, sealed: Sequence[bytes], aads: Sequence[bytes]
) -> list[bytes]:
    open_ = g.decrypt
    return [
        open_(blob[:IV_BYTES], blob[IV_BYTES:], aad)
        for blob, aad in zip(sealed, aads, strict=True)
    ]


def ref_generate_data_keys(
    g: AESGCM, aads: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    seal, urandom = g.encrypt, os.urandom
    return [
        (dk := urandom(DATA_KEY_BYTES), (iv := urandom(IV_BYTES)) + seal(iv, dk, aad))
        for aad in aads
    ]


# --- checks ---------------------------------------------------------------------------
# Never inside a timed region; explicit raises, since asserts vanish under python -O.


def _fail(what: str) -> None:
    raise InvalidResultError(what)


def _check_items(out: Any, n: int) -> list[Any]:
    if not isinstance(out, list):
        _fail(f"expected a list, got {type(out).__name__}")
    if len(out) != n:
        _fail(f"{len(out)} results for {n} items")
    for i, item in enumerate(out):
        if isinstance(item, BaseException):
            _fail(f"item {i} failed: {item!r}")
    return out  # type: ignore[no-any-return]


def check_sealed(out: Any, n: int, pt_len: int) -> list[bytes]:
    """IV || ct || tag per item, of the right length, with no IV repeated."""
    items = _check_items(out, n)
    size = pt_len + OVERHEAD
    if not all(type(x) is bytes and len(x) == size for x in items):
        _fail(f"a sealed item is not {size} bytes")
    if len({x[:IV_BYTES] for x in items}) != n:
        _fail("an IV repeats within one batch")
    return items


def check_plaintexts(out: Any, expected: list[bytes]) -> None:
    items = _check_items(out, len(expected))
    if items != expected:
        _fail("decryption did not return the original plaintexts")


def check_data_keys(out: Any, n: int) -> tuple[list[bytes], list[bytes]]:
    """(key, sealed key) per item, right sizes, no key or IV repeated."""
    items = _check_items(out, n)
    if not all(type(x) is tuple and len(x) == 2 for x in items):
        _fail("a data key is not a (plaintext, sealed) pair")
    keys = [k for k, _ in items]
    sealed = [s for _, s in items]
    if not all(type(k) is bytes and len(k) == DATA_KEY_BYTES for k in keys):
        _fail(f"a data key is not {DATA_KEY_BYTES} bytes")
    if len(set(keys)) != n:
        _fail("a data key repeats within one batch")
    check_sealed(sealed, n, DATA_KEY_BYTES)
    return keys, sealed


# --- one side of a comparison ---------------------------------------------------------


@dataclass
class Side:
    """A callable with prepared arguments, plus what makes its output trustworthy.

    ``check`` is cheap and runs after every round on the round's last output; ``verify``
    also opens the output again (a round trip) and runs once per measurement.
    """

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    check: Callable[[Any], None]
    verify: Callable[[Any], None]
    rates: list[float] = field(default_factory=list)
    reps: int = 1


def timed(side: Side, reps: int) -> tuple[float, Any]:
    """Seconds for ``reps`` calls, and the last call's output.

    The collector is off while timing, as in timeit: a collection triggered by one
    side's allocations would otherwise land in whichever round happened to be running.
    """
    fn, args = side.fn, side.args
    out: Any = None
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed, out


def calibrate(side: Side, round_seconds: float) -> int:
    """Repetitions for a round of about ``round_seconds``; the calls also warm it up."""
    reps = 1
    while True:
        elapsed, _ = timed(side, reps)
        if elapsed >= round_seconds / 4:
            return max(1, round(reps * round_seconds / elapsed))
        reps *= 2


@dataclass
class Row:
    workload: str
    batch: int
    keyplane: float | None = None
    cryptography: float | None = None
    error: str | None = None
    keyplane_rounds: list[float] = field(default_factory=list)
    cryptography_rounds: list[float] = field(default_factory=list)
    keyplane_reps: int = 0
    cryptography_reps: int = 0

    # The best openssl speed 4 KiB rate of the runs just before and after this row.
    openssl_4k: float | None = None

    @property
    def ratio(self) -> float | None:
        """keyplane / cryptography: the median over adjacent round pairs.

        This machine's speed swings two- to threefold within seconds, so each side's
        best round depends on luck. A pair of adjacent rounds shares the same moment,
        and the median of the pairs' ratios ignores the pairs a swing cut through.
        """
        if self.keyplane is None or not self.cryptography:
            return None
        pairs = list(zip(self.keyplane_rounds, self.cryptography_rounds, strict=False))
        if not pairs:
            return self.keyplane / self.cryptography
        return statistics.median(k / c for k, c in pairs if c)

    @property
    def of_openssl(self) -> float | None:
        """The best keyplane round against the openssl runs around this row."""
        if self.keyplane is None or not self.openssl_4k:
            return None
        return self.keyplane / self.openssl_4k


def measure(kp: Side, ref: Side, batch: int, settings: Settings) -> tuple[float, float]:
    """Best ops/s of each side over interleaved rounds.

    The machine's speed drifts over seconds, so the two sides alternate round by round
    and each keeps its best round: both bests come from the same stretch of time, so
    their ratio depends far less on the drift than two separate runs' would.
    """
    for side in (kp, ref):
        # Verify a fresh output before spending any time on it.
        _, out = timed(side, 1)
        side.verify(out)
        side.reps = calibrate(side, settings.round_seconds)
    for side in (kp, ref):
        timed(side, side.reps)  # one untimed full round each, to settle
    last: dict[str, Any] = {}
    for _ in range(settings.rounds):
        for side in (kp, ref):
            elapsed, out = timed(side, side.reps)
            side.check(out)
            side.rates.append(batch * side.reps / elapsed)
            last[side.name] = out
    for side in (kp, ref):
        side.verify(last[side.name])
    return max(kp.rates), max(ref.rates)


# --- the cells: inputs and checks per (workload, batch) -------------------------------


def random_items(n: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def make_sides(
    w: Workload, n: int, partition: Partition, slot: KeySlot, g: AESGCM
) -> tuple[Side, Side]:
    aads = random_items(n, AAD_BYTES)

    def kp_open(sealed: list[bytes]) -> list[Any]:
        return partition.decrypt_batch(slot, sealed, aads)

    def ref_open(sealed: list[bytes]) -> list[bytes]:
        return ref_decrypt(g, sealed, aads)

    if w.kind == "gdk":

        def gdk_check(out: Any) -> None:
            check_data_keys(out, n)

        def gdk_verifier(
            open_: Callable[[list[bytes]], list[Any]],
        ) -> Callable[[Any], None]:
            def verify(out: Any) -> None:
                keys, sealed = check_data_keys(out, n)
                check_plaintexts(open_(sealed), keys)

            return verify

        return (
            Side(
                "keyplane",
                partition.generate_data_key_batch,
                (slot, DATA_KEY_BYTES, n, aads),
                gdk_check,
                gdk_verifier(kp_open),
            ),
            Side(
                "cryptography",
                ref_generate_data_keys,
                (g, aads),
                gdk_check,
                gdk_verifier(ref_open),
            ),
        )

    plaintexts = random_items(n, w.size)
    if w.kind == "enc":

        def enc_check(out: Any) -> None:
            check_sealed(out, n, w.size)

        def enc_verifier(
            open_: Callable[[list[bytes]], list[Any]],
        ) -> Callable[[Any], None]:
            def verify(out: Any) -> None:
                check_plaintexts(open_(check_sealed(out, n, w.size)), plaintexts)

            return verify

        return (
            Side(
                "keyplane",
                partition.encrypt_batch,
                (slot, plaintexts, aads),
                enc_check,
                enc_verifier(kp_open),
            ),
            Side(
                "cryptography",
                ref_encrypt,
                (g, plaintexts, aads),
                enc_check,
                enc_verifier(ref_open),
            ),
        )

    # Decrypt: each side opens its own ciphertexts (keyplane's key never leaves it).
    kp_sealed = check_sealed(partition.encrypt_batch(slot, plaintexts, aads), n, w.size)
    ref_sealed = check_sealed(ref_encrypt(g, plaintexts, aads), n, w.size)

    def dec_check(out: Any) -> None:
        check_plaintexts(out, plaintexts)

    def kp_verify(out: Any) -> None:
        check_plaintexts(out, plaintexts)
        # A build that skips the tag check must not post decrypt numbers.
        tampered = list(kp_sealed)
        tampered[0] = tampered[0][:-1] + bytes([tampered[0][-1] ^ 1])
        got = kp_open(tampered)
        if len(got) != n or not isinstance(got[0], Exception):
            _fail("a tampered ciphertext was accepted")
        if n > 1:
            check_plaintexts(got[1:], plaintexts[1:])

    return (
        Side(
            "keyplane",
            partition.decrypt_batch,
            (slot, kp_sealed, aads),
            dec_check,
            kp_verify,
        ),
        Side("cryptography", ref_decrypt, (g, ref_sealed, aads), dec_check, dec_check),
    )


# --- reference (b): openssl speed -----------------------------------------------------

_SPEED_LINE = re.compile(r"^aes-256-gcm\s+([0-9.]+)k\s*$", re.IGNORECASE)


@dataclass
class SpeedRun:
    when: str
    bytes: int
    kbytes_per_second: float | None
    ops_per_second: float | None
    error: str | None = None


def openssl_speed(exe: str, size: int, seconds: int, when: str) -> SpeedRun:
    """One `openssl speed` run; its last line's figure is in 1000s of bytes/s."""
    cmd = [
        exe,
        "speed",
        "-evp",
        "aes-256-gcm",
        "-bytes",
        str(size),
        "-seconds",
        str(seconds),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=seconds * 5 + 30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SpeedRun(when, size, None, None, repr(exc))
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    match = _SPEED_LINE.match(lines[-1]) if lines else None
    if proc.returncode != 0 or match is None:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-200:]
        return SpeedRun(
            when, size, None, None, f"exit {proc.returncode}, unparsed output: {tail!r}"
        )
    kbytes = float(match.group(1))
    return SpeedRun(when, size, kbytes, kbytes * 1000 / size)


def best_speed(runs: Sequence[SpeedRun], size: int) -> float | None:
    rates = [
        r.ops_per_second
        for r in runs
        if r.bytes == size and r.ops_per_second is not None
    ]
    return max(rates) if rates else None


# --- host and versions ----------------------------------------------------------------


def loaded_libcrypto_version() -> str | None:
    """The OpenSSL that keyplane's native module runs on (the libcrypto in this
    process; cryptography's wheel carries its own, reported separately)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted(
        {line.split()[-1] for line in maps.splitlines() if "/libcrypto.so" in line}
    )
    if not paths:
        return None
    try:
        fn = ctypes.CDLL(paths[0]).OpenSSL_version
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_int]
    raw = fn(0)
    return raw.decode() if isinstance(raw, bytes) else None


def versions(openssl_exe: str | None) -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl import backend

    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "keyplane": dist("keyplane"),
        "cryptography": dist("cryptography"),
        "numpy": dist("numpy"),
        "cffi": dist("cffi"),
        "openssl": {
            "keyplane_libcrypto": loaded_libcrypto_version(),
            "cryptography": backend.openssl_version_text(),
            "python_ssl": ssl.OPENSSL_VERSION,
            "cli": _run([openssl_exe, "version"]) if openssl_exe else None,
        },
    }


# --- targets --------------------------------------------------------------------------


@dataclass
class Target:
    workload: str
    batch: int
    goal: str
    threshold: float
    value: float | None
    met: bool | None  # None: could not be judged (no figure)


def evaluate(rows: Sequence[Row], openssl_4k: float | None) -> list[Target]:
    targets: list[Target] = []
    for row in rows:
        checks: list[tuple[str, float, float | None]] = []
        if row.workload == "gdk" and row.batch >= 256:
            checks.append(("x cryptography", 4.0, row.ratio))
        if row.workload == "enc32" and row.batch >= 256:
            checks.append(("x cryptography", 3.5, row.ratio))
        if row.workload == "enc4k" and row.batch >= 256:
            checks.append(("of openssl speed 4 KiB", 0.85, row.of_openssl))
        if row.batch == 1:
            checks.append(("x cryptography", 1.0, row.ratio))
        for goal, threshold, value in checks:
            met = None if value is None else value >= threshold
            targets.append(Target(row.workload, row.batch, goal, threshold, value, met))
    return targets


# --- output ---------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _judged(t: Target) -> str:
    if t.goal.startswith("of"):
        want = f">= {t.threshold:.0%} {t.goal}"
        got = "-" if t.value is None else f"{t.value:.1%}"
    else:
        want = f">= {t.threshold:.2f}{t.goal}"
        got = "-" if t.value is None else f"{t.value:.2f}x"
        if t.value is not None and t.met is False and got == f"{t.threshold:.2f}x":
            got = f"{t.value:.3f}x"  # do not print a miss as the threshold itself
    verdict = {True: "MET", False: "MISSED", None: "n/a"}[t.met]
    return f"  {t.workload:<6} batch {t.batch:>4}  {want:<28} {got:>8}  {verdict}"


def render(
    rows: Sequence[Row],
    targets: Sequence[Target],
    runs: Sequence[SpeedRun],
    openssl_exe: str | None,
    header: Sequence[str],
) -> str:
    openssl_4k, openssl_32 = best_speed(runs, 4096), best_speed(runs, 32)
    out = list(header)
    if openssl_exe is None:
        out.append("openssl: not found; the openssl column is empty")
    else:
        for size, best in ((4096, openssl_4k), (32, openssl_32)):
            if best is None:
                errors = "; ".join(r.error or "" for r in runs if r.bytes == size)
                out.append(
                    f"openssl speed -evp aes-256-gcm -bytes {size}: failed ({errors})"
                )
            else:
                out.append(
                    f"openssl speed -evp aes-256-gcm -bytes {size:<4}: "
                    f"{best:>12,.0f} ops/s  ({best * size / 1e6:,.0f} MB/s, "
                    "best of before/after)"
                )
    out.append("")
    cols = (
        "workload",
        "batch",
        "keyplane ops/s",
        "crypto-loop ops/s",
        "kp/crypto",
        "kp/openssl-4K",
    )
    out.append(
        f"{cols[0]:<8} {cols[1]:>5}  {cols[2]:>14}  {cols[3]:>17}  "
        f"{cols[4]:>9}  {cols[5]:>13}"
    )
    out.append("-" * 75)
    previous = None
    for row in rows:
        if previous is not None and row.workload != previous:
            out.append("")
        previous = row.workload
        if row.error is not None:
            out.append(f"{row.workload:<8} {row.batch:>5}  INVALID: {row.error}")
            continue
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        vs_openssl = ""
        if row.workload in ("enc4k", "dec4k"):
            vs_openssl = "-" if row.of_openssl is None else f"{row.of_openssl:.1%}"
        out.append(
            f"{row.workload:<8} {row.batch:>5}  {_rate(row.keyplane):>14}  "
            f"{_rate(row.cryptography):>17}  {ratio:>9}  {vs_openssl:>13}"
        )
    out.append("")
    out.append("Each rate is the best of interleaved rounds (keyplane, cryptography,")
    out.append("keyplane, ...) over the same items; kp/crypto is the median of the")
    out.append("ratios of adjacent round pairs; kp/openssl-4K compares the best")
    out.append("keyplane round with openssl speed run just before and after the row.")
    out.append("openssl speed streams one context (no per-item IV, tag or AAD) and")
    out.append("times encryption only: dec4k is compared with the same figure.")
    out.append("")
    out.append("targets:")
    out.extend(_judged(t) for t in targets)
    met = sum(t.met is True for t in targets)
    out.append(f"  {met} of {len(targets)} met")
    return "\n".join(line.rstrip() for line in out)


# --- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(
        description="keyplane batch API vs a cryptography loop vs openssl speed"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer and shorter rounds (about 20 s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="timed rounds per side and cell (default 15, quick 5)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the JSON (default bench/results/)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 15)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    settings = Settings(
        rounds=rounds,
        round_seconds=0.05 if args.quick else 0.08,
        openssl_seconds=1 if args.quick else 3,
        quick=args.quick,
    )
    return settings, args.json


def progress(message: str) -> None:
    # Progress goes to stderr so that stdout carries only the table.
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path = parse_args(argv)
    started = time.monotonic()
    created = datetime.now(UTC)
    openssl_exe = shutil.which("openssl")

    runs: list[SpeedRun] = []

    def speed(when: str) -> None:
        if openssl_exe is None:
            return
        for size in (4096, 32):
            progress(f"openssl speed -bytes {size} ({when})")
            runs.append(
                openssl_speed(openssl_exe, size, settings.openssl_seconds, when)
            )

    load_before = os.getloadavg()
    speed("before")

    hsm = Hsm(bytearray(os.urandom(32)))
    rows: list[Row] = []
    try:
        partition = hsm.create_partition()
        slot = partition.generate_key()
        g = AESGCM(AESGCM.generate_key(bit_length=256))
        for w in WORKLOADS:
            for n in BATCHES:
                progress(f"{w.name} batch {n}")
                row = Row(w.name, n)
                rows.append(row)
                around: list[SpeedRun] = []
                if openssl_exe is not None and w.name in ("enc4k", "dec4k"):
                    around.append(
                        openssl_speed(openssl_exe, 4096, 1, f"before {w.name}")
                    )
                try:
                    kp, ref = make_sides(w, n, partition, slot, g)
                    row.keyplane, row.cryptography = measure(kp, ref, n, settings)
                except Exception as exc:
                    # Any failure, a wrong output or a raised fault, voids the row.
                    row.keyplane = row.cryptography = None
                    row.error = f"{type(exc).__name__}: {exc}"
                    continue
                row.keyplane_rounds, row.cryptography_rounds = kp.rates, ref.rates
                row.keyplane_reps, row.cryptography_reps = kp.reps, ref.reps
                if around and openssl_exe is not None:
                    around.append(
                        openssl_speed(openssl_exe, 4096, 1, f"after {w.name}")
                    )
                    runs.extend(around)
                    row.openssl_4k = best_speed(around, 4096)
    finally:
        hsm.close()

    speed("after")
    load_after = os.getloadavg()
    elapsed = time.monotonic() - started

    openssl_4k = best_speed(runs, 4096)
    targets = evaluate(rows, openssl_4k)
    git, host, vers = git_info(), cpu_info(), versions(openssl_exe)

    header = [
        f"keyplane native batch throughput, {created:%Y-%m-%d %H:%M} UTC, "
        f"commit {(git['commit'] or 'unknown')[:12]}"
        f"{' (dirty tree)' if git['dirty'] else ''}",
        f"cpu: {host['model']}, nproc {host['nproc']}, "
        f"aes {'yes' if host['aes'] else 'no' if host['aes'] is False else '?'}",
        f"{vers['python']}, numpy {vers['numpy']}, keyplane on "
        f"{vers['openssl']['keyplane_libcrypto']},",
        f"cryptography {vers['cryptography']} on {vers['openssl']['cryptography']}",
        f"{settings.rounds} rounds per side of ~{settings.round_seconds:.2f} s, "
        f"items with {AAD_BYTES}-byte AADs, run took {elapsed:.0f} s",
    ]
    print(render(rows, targets, runs, openssl_exe, header))

    report = {
        "created_utc": created.isoformat(timespec="seconds"),
        "git": git,
        "host": host,
        "versions": vers,
        "settings": {
            **asdict(settings),
            "batches": list(BATCHES),
            "aad_bytes": AAD_BYTES,
            "data_key_bytes": DATA_KEY_BYTES,
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "load_average": {"before": load_before, "after": load_after},
        "elapsed_seconds": round(elapsed, 1),
        "openssl_speed": {
            "available": openssl_exe is not None,
            "runs": [asdict(r) for r in runs],
            "best_ops_per_second": {"4096": openssl_4k, "32": best_speed(runs, 32)},
        },
        "results": [
            {
                "workload": r.workload,
                "batch": r.batch,
                "keyplane_ops_per_second": r.keyplane,
                "cryptography_ops_per_second": r.cryptography,
                "ratio": r.ratio,
                "openssl_4k_around_row": r.openssl_4k,
                "fraction_of_openssl_4k": r.of_openssl,
                "error": r.error,
                "keyplane_rounds": r.keyplane_rounds,
                "cryptography_rounds": r.cryptography_rounds,
                "keyplane_calls_per_round": r.keyplane_reps,
                "cryptography_calls_per_round": r.cryptography_reps,
            }
            for r in rows
        ],
        "targets": [asdict(t) for t in targets],
    }
    path = json_path or RESULTS_DIR / f"native-{created:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {path}")
    # Missed targets are reported, not failed; only a wrong result fails the run.
    return 1 if any(r.error is not None for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
