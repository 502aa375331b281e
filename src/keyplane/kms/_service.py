"""The KMS service: keys, aliases and partitions in memory, written through to the
store.

This is the one place where an operation's key meets the HSM and the store. It knows
KMS semantics; it knows nothing of HTTP or wire names. Store writes run on one writer
thread, so SQLite's commits never block the event loop, and an operation awaits its
write before it answers: what a response reports is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from keyplane.errors import (
    InvalidCiphertextError,
    KeyplaneError,
    NotFoundError,
    RootKeyError,
    UnsupportedOperationError,
)
from keyplane.hsm import Batcher, Hsm, Partition, Tenancy
from keyplane.kms._access import Authorizer
from keyplane.kms._arn import KeyRef, key_arn, parse_key_ref
from keyplane.kms._clock import AdjustableClock
from keyplane.kms._key_stores import (
    DEFAULT_CONNECT_SECONDS,
    DEFAULT_REQUEST_QUOTA,
    KeyStores,
)
from keyplane.kms._model import (
    Alias,
    KeyGrant,
    KmsKey,
    material_context,
    partition_name,
)
from keyplane.kms._quota import Quotas
from keyplane.kms._state import KeyState
from keyplane.policy import Caller
from keyplane.storage import PartitionRecord, Snapshot, Store

T = TypeVar("T")
Clock = Callable[[], float]

_log = logging.getLogger(__name__)

# Batches this large run on a worker thread rather than inline on the event loop. A
# native call of a few thousand small items takes about a millisecond; below that, the
# hop to a thread and back costs more than the loop gains (bench/http.py measures it
# with the server pinned to one core, where a thread adds no parallelism at all).
OFFLOAD_ITEMS = 4096


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, from where: filled in by the API layer for every request from
    the credential that signed it."""

    caller: Caller
    region: str
    request_id: str
    source_ip: str = ""

    @property
    def account(self) -> str:
        return self.caller.account

    @property
    def principal(self) -> str:
        return self.caller.arn


class KmsService:
    """The state of one keyplane service and the means to change it."""

    def __init__(
        self,
        hsm: Hsm,
        store: Store,
        clock: Clock,
        region: str,
        loop: asyncio.AbstractEventLoop,
        *,
        authorize: bool = True,
        on_demand_rotation_limit: int = 25,
        quotas: Quotas | None = None,
        custom_key_store_quota: float = DEFAULT_REQUEST_QUOTA,
        custom_key_store_connect_seconds: float = DEFAULT_CONNECT_SECONDS,
    ) -> None:
        self.hsm = hsm
        self.store = store
        self.clock = clock
        self.region = region
        self.loop = loop
        self.keys: dict[str, KmsKey] = {}
        self.aliases: dict[tuple[str, str, str], Alias] = {}
        # Grant id -> key id, for RetireGrant by token (which names no key).
        self.grant_keys: dict[str, str] = {}
        self._partitions: dict[str, Partition] = {}
        self._partition_locks: dict[str, asyncio.Lock] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="keyplane-store")
        self._crypto = ThreadPoolExecutor(1, thread_name_prefix="keyplane-hsm")
        # Slow HSM calls (RSA key generation for imports: up to seconds) get threads
        # of their own, so they neither stall large batches nor outlive the HSM:
        # close() waits for them before the HSM is freed.
        self._slow = ThreadPoolExecutor(2, thread_name_prefix="keyplane-hsm-slow")
        self.batcher = Batcher(
            hsm.shared, loop, executor=self._crypto, offload_items=OFFLOAD_ITEMS
        )
        # Serialises control-plane changes: each reads memory, writes the store, then
        # updates memory, and must not interleave with another at its await.
        self.control = asyncio.Lock()
        self.access = Authorizer(clock, self.aliases_of, enabled=authorize)
        # Every principal that can sign, by ARN (set by whoever starts the service):
        # ExplainAccess judges requests of principals other than the caller.
        self.callers: Mapping[str, Caller] = {}
        # RotateKeyOnDemand's API reference: 25 on-demand rotations per key.
        self.on_demand_rotation_limit = on_demand_rotation_limit
        # Request quotas per account; unlimited unless the caller sets them up.
        self.quotas = quotas if quotas is not None else Quotas.unlimited()
        # How the root key rotates (set by whoever starts the service, which knows where
        # the root key lives): re-wraps every stored partition key under a new root
        # key, durably, switches the HSM, and returns how many it re-wrapped.
        self.root_key_rotation: Callable[[], int] | None = None
        # Held while the root key rotates, and by whatever creates and stores a
        # partition (from creating it to its commit): a partition is then stored
        # wrapped under the root key a rotation ends with, never under the old one
        # after the rotation has re-wrapped the rest.
        self.sealing = asyncio.Lock()
        # Custom key stores and the CloudHSM clusters behind them.
        self.key_stores = KeyStores(
            self,
            request_quota=custom_key_store_quota,
            connect_seconds=custom_key_store_connect_seconds,
        )

    # --- lifecycle --------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Rebuild memory and the HSM's slots from what the store holds."""
        by_name: dict[str, Partition] = {}
        for p in snapshot.partitions:
            try:
                partition = by_name[p.name] = self.hsm.open_partition(
                    p.wrapped_key, Tenancy(p.tenancy)
                )
            except InvalidCiphertextError as exc:
                # Partition keys are the first thing unwrapped under the root key: if
                # one fails, the store was sealed under another root key (or that
                # row was altered), and nothing can be restored.
                raise RootKeyError(
                    f"partition {p.name} does not unwrap under this root key: the "
                    "store was written under another root key (KEYPLANE_ROOT_KEY or "
                    "the root.key file); nothing was changed"
                ) from exc
            # Shared partitions are the accounts'; dedicated ones, the clusters'.
            if partition.tenancy is Tenancy.SHARED:
                self._partitions[p.name.split(":", 1)[1]] = partition
        self.key_stores.restore(snapshot.clusters, snapshot.custom_key_stores, by_name)
        materials: dict[str, list[Any]] = {}
        for m in snapshot.materials:
            materials.setdefault(m.key_id, []).append(m)
        for record in snapshot.keys:
            partition = by_name[record.partition]
            key = KmsKey(
                key_id=record.key_id,
                account=record.account,
                region=record.region,
                arn=key_arn(record.region, record.account, record.key_id),
                partition=partition,
                created_at=record.created_at,
                state=KeyState(record.state),
            )
            key.apply(record)
            key.stored_partition = record.partition
            stored = materials.get(record.key_id, [])
            # Imported material may have been deleted from some versions: those stay
            # empty, in their place, until the same material is imported again.
            count = max([len(key.imported), *(m.version for m in stored)])
            key.versions = [None] * count
            for m in stored:
                key.versions[m.version - 1] = partition.import_key(
                    m.wrapped, material_context(record.key_id, m.version)
                )
            if key.custom_key_store_id is not None:
                for slot in key.versions:
                    if slot is not None:
                        key.key_store = self.key_stores.adopt_key_slot(
                            key.custom_key_store_id, slot
                        )
            self.keys[key.key_id] = key
        for g in snapshot.grants:
            self.keys[g.key_id].grants[g.grant_id] = KeyGrant.from_record(g)
            self.grant_keys[g.grant_id] = g.key_id
        for a in snapshot.aliases:
            self.aliases[(a.account, a.region, a.name)] = Alias(
                a.name, a.account, a.region, a.key_id, a.created_at, a.updated_at
            )
        _log.info(
            "restored %d keys, %d aliases, %d partitions",
            len(self.keys),
            len(self.aliases),
            len(self._partitions),
        )

    def close(self) -> None:
        self.key_stores.close()
        self._writer.shutdown(wait=True)
        self._crypto.shutdown(wait=True)
        self._slow.shutdown(wait=True)

    # --- store writes -----------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the writer thread and wait until it has committed."""
        return await self.loop.run_in_executor(self._writer, fn, *args)

    async def run_slow(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a slow HSM call (key pair generation, RSA decryption) off the loop, on
        a thread the service owns and joins when it closes."""
        return await self.loop.run_in_executor(self._slow, fn, *args)

    async def run_batch(self, fn: Callable[..., T], *args: Any, items: int) -> T:
        """Run one native batch call of ``items`` items: inline when small, on the HSM
        thread when large (the call releases the GIL, so the loop keeps serving)."""
        if items < OFFLOAD_ITEMS:
            return fn(*args)
        return await self.loop.run_in_executor(self._crypto, fn, *args)

    def batcher_for(self, key: KmsKey) -> Batcher:
        """The batcher that serves ``key``: the shared fleet's, or, for a key in a
        custom key store, its cluster's own (charging the store's request quota).

        Raises:
            KeyStateError: the key's store cannot serve it now.
            ThrottlingError: the key's store is over its request quota.
        """
        store = key.key_store
        if store is None:
            return self.batcher
        worker = store.ready_worker(key.arn)
        store.charge()
        return worker.batcher

    def charge_key_store(self, key: KmsKey, n: int = 1) -> None:
        """Check that ``key``'s custom key store can serve it now, and count ``n``
        requests on it against the store's quota, if it is in one (the batch
        extension checks and counts each item as a request).

        Raises:
            KeyStateError: the key's store cannot serve it now (disconnected, or its
                cluster has no active HSM); nothing is counted.
            ThrottlingError: the store is over its request quota.
        """
        store = key.key_store
        if store is not None:
            store.ready_worker(key.arn)
            store.charge(n)

    async def run_batch_for(
        self, key: KmsKey, fn: Callable[..., T], *args: Any, items: int
    ) -> T:
        """``run_batch`` for a batch under ``key``: on its cluster's worker when the
        key is in a custom key store.

        Raises:
            KeyStateError: the key's store cannot serve it now.
        """
        store = key.key_store
        if store is None:
            return await self.run_batch(fn, *args, items=items)
        worker = store.ready_worker(key.arn)
        return await worker.run(fn, *args, items=items)

    def advance_clock(self, seconds: float) -> float:
        """Move the service's clock forward (a testing aid); returns the new now.

        Raises:
            UnsupportedOperationError: the clock is not adjustable.
            ValidationError: not a positive number of seconds.
        """
        if not isinstance(self.clock, AdjustableClock):
            raise UnsupportedOperationError(
                "The clock is not adjustable; start keyplane with [clock] adjustable "
                "= true to advance it."
            )
        return self.clock.advance(seconds)

    async def rotate_root_key(self) -> int:
        """Re-wrap every partition key under a new root key while the service keeps
        serving: keys, slots and ciphertexts do not change. Runs on the writer thread,
        after every store write queued before it.

        Returns:
            How many partition keys were re-wrapped.

        Raises:
            UnsupportedOperationError: this service cannot rotate its root key.
            ConflictError, RootKeyError, StoreError: as the rotation raises them.
        """
        rotation = self.root_key_rotation
        if rotation is None:
            raise UnsupportedOperationError("This service cannot rotate its root key.")
        async with self.sealing:
            # Once started, the rotation runs to its end on the writer thread whatever
            # happens to this task, so ``sealing`` is held until then: a partition
            # made meanwhile would be sealed under the key being retired.
            done = self.loop.run_in_executor(self._writer, rotation)
            cancelled = await _outlast_cancellation(done)
        if cancelled:
            failure = done.exception()
            if failure is not None:
                _log.error("the cancelled root key rotation failed: %s", failure)
            raise asyncio.CancelledError
        return done.result()

    # --- partitions -------------------------------------------------------------------

    async def partition_for(self, account: str) -> Partition:
        """The account's partition of the shared fleet, created and stored when first
        used."""
        partition = self._partitions.get(account)
        if partition is not None:
            return partition
        lock = self._partition_locks.setdefault(account, asyncio.Lock())
        async with lock, self.sealing:
            partition = self._partitions.get(account)
            if partition is None:
                partition = self.hsm.create_partition(Tenancy.SHARED)
                record = PartitionRecord(
                    partition_name(account),
                    Tenancy.SHARED.value,
                    partition.export(),
                    self.clock(),
                )
                # The write runs to its end whatever happens to this task: until the
                # store has answered, the partition may be stored, so it must neither
                # be destroyed nor let ``sealing`` go.
                stored = self.loop.run_in_executor(
                    self._writer, self.store.put_partition, record
                )
                cancelled = await _outlast_cancellation(stored)
                failure = stored.exception()
                if failure is not None:
                    partition.destroy()
                    raise failure
                self._partitions[account] = partition
                if cancelled:
                    raise asyncio.CancelledError
        return partition

    # --- resolving identifiers --------------------------------------------------------

    def resolve(
        self, ctx: RequestContext, key_id: str, *, aliases: bool = True
    ) -> KmsKey:
        """The key a KeyId member names: key id, key ARN, alias name or alias ARN.

        Raises:
            NotFoundError: no such key or alias, with AWS's message.
            InvalidArnError: a malformed ARN.
        """
        # Most requests name a key by its id: one dict lookup settles those.
        key = self.keys.get(key_id)
        if key is not None and key.account == ctx.account:
            return key
        ref = parse_key_ref(key_id, ctx.account, self.region, aliases=aliases)
        return self.key_of(ref, key_id)

    def authorized(
        self,
        ctx: RequestContext,
        action: str,
        key_id: str,
        *,
        aliases: bool = True,
        encryption_context: Mapping[str, str] | None = None,
        values: Mapping[str, object] | None = None,
    ) -> KmsKey:
        """The key a KeyId member names, once the caller may ``action`` on it.

        Raises:
            NotFoundError, InvalidArnError: as ``resolve``.
            AccessDeniedError: no policy or grant allows it, or one denies it.
        """
        key = self.resolve(ctx, key_id, aliases=aliases)
        self.access.check_key(
            ctx,
            action,
            key,
            encryption_context=encryption_context,
            values=with_request_alias(key_id, values),
        )
        return key

    def key_of(self, ref: KeyRef, given: str) -> KmsKey:
        if ref.alias_name is not None:
            alias = self.aliases.get((ref.account, ref.region, ref.alias_name))
            if alias is None:
                raise NotFoundError(f"Alias {_alias_arn(ref)} is not found.")
            key = self.keys.get(alias.key_id)
        else:
            key = self.keys.get(ref.key_id or "")
            if key is not None and key.account != ref.account:
                key = None
        if key is None:
            raise NotFoundError(
                f"Key '{key_arn(ref.region, ref.account, ref.key_id or given)}' "
                "does not exist"
            )
        return key

    def aliases_of(self, key: KmsKey) -> list[Alias]:
        return [a for a in self.aliases.values() if a.key_id == key.key_id]

    # --- deletion ---------------------------------------------------------------------

    async def sweep_deletions(self) -> int:
        """Delete every key whose deletion date has passed, with its aliases.

        Returns:
            How many keys were deleted.
        """
        deleted = 0
        for key in [k for k in self.keys.values() if self._deletion_due(k)]:
            async with self.control:
                # Look again under the lock: a CancelKeyDeletion (or a new schedule)
                # may have committed while this sweep waited for it.
                if self.keys.get(key.key_id) is not key or not self._deletion_due(key):
                    continue
                await self.write(self.store.delete_key, key.key_id)
                for alias in self.aliases_of(key):
                    del self.aliases[(alias.account, alias.region, alias.name)]
                del self.keys[key.key_id]
                for grant_id in key.grants:
                    self.grant_keys.pop(grant_id, None)
                for slot in key.versions:
                    if slot is None:  # imported material already deleted
                        continue
                    # A slot already gone has nothing left to cleanse.
                    with contextlib.suppress(KeyplaneError):
                        if key.key_store is not None:
                            # In its cluster, as the key's owner (kmsuser).
                            self.key_stores.destroy_slot(key.key_store, slot)
                        else:
                            key.partition.destroy_key(slot)
                deleted += 1
                _log.info("deleted key %s at the end of its waiting period", key.key_id)
        return deleted

    def _deletion_due(self, key: KmsKey) -> bool:
        return (
            key.state is KeyState.PENDING_DELETION
            and key.deletion_date is not None
            and key.deletion_date <= self.clock()
        )


async def _outlast_cancellation(future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done, through any cancellation of the waiting task, and
    without cancelling ``future``. Returns whether the task was cancelled meanwhile, for
    the caller to raise ``CancelledError`` once it has dealt with the outcome."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def with_request_alias(
    key_id: str, values: Mapping[str, object] | None
) -> Mapping[str, object] | None:
    """``values`` plus kms:RequestAlias when the request named its key by an alias."""
    if "alias/" not in key_id:
        return values
    return {**(values or {}), "kms:requestalias": key_id[key_id.index("alias/") :]}


def _alias_arn(ref: KeyRef) -> str:
    return f"arn:aws:kms:{ref.region}:{ref.account}:{ref.alias_name}"
