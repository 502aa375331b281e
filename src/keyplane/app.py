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

from keyplane import identities, root_rotation
from keyplane.api.access_log import AccessLog
from keyplane.api.server import Api, Authentication, Limits, Server
from keyplane.api.sigv4 import Verifier
from keyplane.config import AccountConfig, Config
from keyplane.errors import ConflictError
from keyplane.hsm import Hsm
from keyplane.kms import AdjustableClock, ClusterSpec, KmsService
from keyplane.kms._quota import Quotas
from keyplane.kms.ops import imports, rotation
from keyplane.storage import (
    ROOT_KEY_ENV,
    SQLiteStore,
    load_root_key,
    lock_key_directory,
)

_log = logging.getLogger("keyplane")

# How often scheduled deletions are looked for; a key is deleted within this long of
# its deletion date.
SWEEP_SECONDS = 1.0

# How long a start waits for the data directory's lock: an offline root key rotation
# holds it for milliseconds, another server for as long as it runs.
DATA_DIR_WAIT_SECONDS = 10.0

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
    # Holds the data directory's lock: no other server and no offline rotation use it.
    data_dir_lock: int = -1

    async def stop(self) -> None:
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.server.stop()
        self.service.close()
        self.service.store.close()
        self.service.hsm.close()
        if self.data_dir_lock >= 0:
            os.close(self.data_dir_lock)
            self.data_dir_lock = -1


async def start(config: Config, clock: Callable[[], float] = time.time) -> Running:
    """Open the store and the HSM, restore every key, and start listening.

    Raises:
        RootKeyError: no usable root key, or the store was written under another.
        StoreError: the store cannot be opened.
        InvalidCiphertextError: stored key material that does not unwrap (altered).
        ValidationError: a configured identity policy is not a valid policy.
    """
    known = identities.for_config(config)
    quotas = _quotas(config)
    data_dir_lock = await _hold_data_dir(config)
    try:
        from_environment = os.environ.get(ROOT_KEY_ENV) is not None
        root_key = load_root_key(config.root_key_file, create=True)
        store = SQLiteStore(config.database)
        try:
            snapshot = store.load()
            if not from_environment:
                # Finish or undo a root key rotation that a stop cut short.
                root_key = root_rotation.settle(
                    config.root_key_file, root_key, snapshot
                )
            hsm = Hsm(root_key)  # takes the key and zeroes this copy
        except BaseException:
            root_key[:] = bytes(len(root_key))
            store.close()
            raise
    except BaseException:
        os.close(data_dir_lock)
        raise
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
        quotas=quotas,
        custom_key_store_quota=config.custom_key_store_quota,
        custom_key_store_connect_seconds=config.custom_key_store_connect_seconds,
    )
    service.callers = known.callers
    service.root_key_rotation = root_rotation.in_service(
        config.root_key_file, store, hsm, from_environment=from_environment
    )
    try:
        service.restore(snapshot)
        # The configured CloudHSM clusters, then the key stores that were connected.
        service.key_stores.start(_cluster_specs(config))
    except BaseException:
        service.key_stores.close()
        store.close()
        hsm.close()
        os.close(data_dir_lock)
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
    return Running(config, known, service, server, port, sweeper, data_dir_lock)


async def _hold_data_dir(config: Config) -> int:
    """The data directory's lock (the directory created if missing), held by one
    server at a time: two on one directory would each keep the root key they started
    with, and a root key rotation through one would strand the other's partitions.

    Raises:
        ConflictError: another server uses the directory (or an offline rotation held
            it too long).
        RootKeyError: the directory cannot be created or locked.
    """
    directory = config.root_key_file.parent
    deadline = time.monotonic() + DATA_DIR_WAIT_SECONDS
    while (lock := lock_key_directory(directory, create=True)) is None:
        if time.monotonic() > deadline:
            raise ConflictError(
                f"another keyplane server is using the data directory {directory}"
                " (one directory serves one server: stop it, or give this one another"
                " --data-dir), or `keyplane root-key rotate --data-dir` held it for"
                f" over {DATA_DIR_WAIT_SECONDS:.0f} s"
            )
        await asyncio.sleep(0.05)
    return lock


def _quotas(config: Config) -> Quotas:
    """The request quotas ``[quotas]`` asks for: AWS's defaults for the region unless
    set otherwise (docs/configuration.md).

    Raises:
        ValidationError: a quota keyplane does not meter.
    """
    q = config.quotas
    return Quotas.aws_defaults(
        config.region,
        dict(q.rates),
        {account: dict(rates) for account, rates in q.accounts},
        enabled=q.enabled,
    )


def _cluster_specs(config: Config) -> list[ClusterSpec]:
    return [
        ClusterSpec(
            cluster_id=c.id,
            account=c.account or config.account,
            trust_anchor=c.trust_anchor,
            hsm_count=c.hsm_count,
            kmsuser_password=c.kmsuser_password,
            extra_latency_ms=c.extra_latency_ms,
            capacity_per_second=c.capacity_per_second,
            backup_of=c.backup_of,
        )
        for c in config.clusters
    ]


def _access_wanted() -> bool:
    """Access lines are INFO records of ``keyplane.access``: off below that level."""
    return logging.getLogger("keyplane.access").isEnabledFor(logging.INFO)


async def _sweep(service: KmsService) -> None:
    """Carry out what the clock makes due: deletions at the end of their waiting
    period, automatic rotations (one that came due while the server was down
    happens on the first round), and imported material reaching its ValidTo."""
    while True:
        try:
            await service.sweep_deletions()
        except Exception:  # keep sweeping; the next round retries
            _log.exception("deleting keys whose waiting period ended failed")
        try:
            await rotation.sweep_rotations(service)
        except Exception:
            _log.exception("rotating keys whose rotation date came failed")
        try:
            await imports.sweep_expired_material(service)
        except Exception:
            _log.exception("deleting imported key material at its ValidTo failed")
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
