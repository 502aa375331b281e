"""Wiring: configuration in, a running service out. The only module that knows every
layer; it holds no logic of its own beyond start-up and shutdown order."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from keyplane import identities
from keyplane.api.access_log import AccessLog
from keyplane.api.server import Api, Authentication, Limits, Server
from keyplane.api.sigv4 import Verifier
from keyplane.config import AccountConfig, Config
from keyplane.hsm import Hsm
from keyplane.kms import AdjustableClock, KmsService
from keyplane.kms.ops import rotation
from keyplane.storage import SQLiteStore, load_root_key

_log = logging.getLogger("keyplane")

# How often scheduled deletions are looked for; a key is deleted within this long of
# its deletion date.
SWEEP_SECONDS = 1.0

# prctl(2) option number, from <linux/prctl.h>.
_PR_SET_DUMPABLE = 4


@dataclass
class Running:
    """A started service, for tests and for ``serve``."""

    config: Config
    identities: identities.Identities
    service: KmsService
    server: Server
    port: int
    sweeper: asyncio.Task[None]

    async def stop(self) -> None:
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.server.stop()
        self.service.close()
        self.service.store.close()
        self.service.hsm.close()


async def start(config: Config, clock: Callable[[], float] = time.time) -> Running:
    """Open the store and the HSM, restore every key, and start listening.

    Raises:
        RootKeyError: no usable root key, or the store was written under another.
        StoreError: the store cannot be opened.
        InvalidCiphertextError: stored key material that does not unwrap (altered).
        ValidationError: a configured identity policy is not a valid policy.
    """
    known = identities.for_config(config)
    root_key = load_root_key(config.root_key_file, create=True)
    hsm = Hsm(root_key)  # takes the key and zeroes this copy
    store = SQLiteStore(config.database)
    loop = asyncio.get_running_loop()
    auth_on = config.auth != "off"
    # Date rules read the service's clock, which a tester may move; SigV4's skew
    # check keeps the given clock, so clients' signatures stay current after a move.
    service_clock = AdjustableClock(clock) if config.adjustable_clock else clock
    service = KmsService(
        hsm,
        store,
        service_clock,
        config.region,
        loop,
        authorize=auth_on,
        on_demand_rotation_limit=config.on_demand_rotation_limit,
    )
    service.callers = known.callers
    try:
        service.restore(store.load())
    except BaseException:
        store.close()
        hsm.close()
        raise
    verifier = (
        Verifier(known.credentials, region=config.region, clock=clock)
        if auth_on
        else None
    )
    anonymous = identities.build((AccountConfig(config.account),)).root(config.account)
    auth = Authentication(verifier, known.callers, anonymous)
    access_log = AccessLog() if config.access_log and _access_wanted() else None
    limits = Limits(
        max_connections=config.max_connections,
        max_in_flight=config.max_in_flight,
        header_seconds=config.header_timeout,
        request_seconds=config.request_timeout,
        idle_seconds=config.idle_timeout,
    )
    server = Server(Api(service, auth, access_log), limits)
    port = await server.start(config.host, config.port)
    sweeper = asyncio.ensure_future(_sweep(service))
    return Running(config, known, service, server, port, sweeper)


def _access_wanted() -> bool:
    """Access lines are INFO records of ``keyplane.access``: off below that level."""
    return logging.getLogger("keyplane.access").isEnabledFor(logging.INFO)


async def _sweep(service: KmsService) -> None:
    """Carry out what the clock makes due: deletions at the end of their waiting
    period, and automatic rotations (one that came due while the server was down
    happens on the first round)."""
    while True:
        try:
            await service.sweep_deletions()
        except Exception:  # keep sweeping; the next round retries
            _log.exception("deleting keys whose waiting period ended failed")
        try:
            await rotation.sweep_rotations(service)
        except Exception:
            _log.exception("rotating keys whose rotation date came failed")
        await asyncio.sleep(SWEEP_SECONDS)


async def serve(config: Config, ready: Callable[[Running], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then finish in-flight requests and stop."""
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(running)
    try:
        await stop.wait()
    finally:
        _log.info("shutting down")
        await running.stop()


def run(config: Config, ready: Callable[[Running], None] | None = None) -> None:
    """``serve`` on uvloop where it is installed, else on asyncio's own loop."""
    _forbid_core_dumps()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, ready))
        return
    uvloop.run(serve(config, ready))


def _forbid_core_dumps() -> None:
    """Keep this process's memory off the disk and away from other processes.

    Raw key bytes live in locked pages that are left out of core dumps
    (native/src/secmem.c), but the OpenSSL cipher contexts keyed with them (a key
    schedule gives the key back), plaintexts and data keys passing through Python,
    and a root key given in the environment are in ordinary memory, which a core
    dump would write to disk. A zero core limit stops the kernel writing a core file.
    On Linux, clearing the dumpable flag also stops a dump piped to a program, which
    the core limit does not bind (core(5); unless ``fs.suid_dumpable`` is 2, which
    dumps it readable by root only), and leaves ``/proc/<pid>/mem``, ``environ``
    (which may hold ``KEYPLANE_ROOT_KEY``) and ptrace to root (proc(5), ptrace(2)).
    It is done in ``run``, not ``start``, so that a program that embeds the service
    with ``start`` keeps its own process settings.
    """
    # Lowering both limits is always permitted, so this cannot fail.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):  # no libc, or a libc without prctl
        return
    if failed:
        _log.warning(
            "could not mark the process non-dumpable: %s",
            os.strerror(ctypes.get_errno()),
        )
