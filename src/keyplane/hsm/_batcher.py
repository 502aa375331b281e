"""The micro-batcher: concurrent single-item requests become one native batch call, and
the scheduler that shares an HSM fairly among tenants.

Each request adds its item to its tenant's queue (a tenant is whoever the caller
counts work to: keyplane's KMS layer passes the calling account) and awaits a future.
The first item schedules a flush with ``loop.call_soon``; asyncio runs that after every
callback already queued, so a flush sees every request parsed from the reads of one
loop iteration. The items of every tenant taken by one flush go to the HSM together,
one native call per operation kind.

A flush takes at most ``max_items`` items. When more are waiting, each tenant with work
gets an equal share of that budget and a share one tenant does not use goes to the
others (max-min fairness); the rest wait for the next flush, which runs in the next
loop iteration, after the loop has read whatever new requests arrived. So a burst of
ten thousand items from one tenant does not delay another tenant's single item: that
item goes out in the first flush after it arrives. With one tenant, or fewer than
``max_items`` items waiting, a flush takes everything, as a plain micro-batcher would.

Work too large to be a single item (a batch request of thousands of items, whose
checks run in Python on the event loop) asks for a turn first with ``turn``, in slices
of ``slice_items``. A flush grants turns round-robin across tenants, up to
``turn_items`` items of them, so a flood of such requests from one tenant takes at most
that much of each loop iteration and another tenant's requests keep moving between
slices.

Small batches run inline on the event loop: the native call costs a few microseconds,
less than a hop to a thread and back. Batches of ``offload_items`` or more run on a
worker thread (the native call releases the GIL), so one huge batch does not stall the
loop. Each dedicated HSM has its own batcher and so never shares a batch or a thread
with another tenant.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Final

from keyplane.errors import KeyplaneError
from keyplane.hsm._hsm import KeySlot
from keyplane.native import NativeHsm

DEFAULT_MAX_ITEMS: Final = 4096
DEFAULT_OFFLOAD_ITEMS: Final = 512
# Bulk work granted per flush, and the slice a bulk request asks a turn for: a slice of
# batch-extension items costs the event loop about a millisecond in Python.
DEFAULT_TURN_ITEMS: Final = 512
DEFAULT_SLICE_ITEMS: Final = 256

_ENCRYPT: Final = 0
_DECRYPT: Final = 1
_DATA_KEYS: Final = 2
_KINDS: Final = (_ENCRYPT, _DECRYPT, _DATA_KEYS)


class _Queue:
    """Items of one operation kind waiting for a flush."""

    __slots__ = ("aads", "futures", "handles", "inputs")

    def __init__(self) -> None:
        self.handles: list[int] = []
        self.inputs: list[Any] = []
        self.aads: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []

    def detach(
        self,
    ) -> tuple[list[int], list[Any], list[bytes], list[asyncio.Future[Any]]]:
        """Every item, as the four lists; the queue is left empty."""
        taken = self.handles, self.inputs, self.aads, self.futures
        self.handles, self.inputs, self.aads, self.futures = [], [], [], []
        return taken

    def take_all(self, into: _Queue) -> None:
        if not into.futures:
            # The usual case: hand the lists over instead of copying them.
            into.handles, self.handles = self.handles, into.handles
            into.inputs, self.inputs = self.inputs, into.inputs
            into.aads, self.aads = self.aads, into.aads
            into.futures, self.futures = self.futures, into.futures
            return
        into.handles += self.handles
        into.inputs += self.inputs
        into.aads += self.aads
        into.futures += self.futures
        self.handles, self.inputs, self.aads, self.futures = [], [], [], []

    def take(self, n: int, into: _Queue) -> None:
        """Move the first ``n`` items (the oldest) to ``into``."""
        if n >= len(self.futures):
            self.take_all(into)
            return
        into.handles += self.handles[:n]
        into.inputs += self.inputs[:n]
        into.aads += self.aads[:n]
        into.futures += self.futures[:n]
        del self.handles[:n], self.inputs[:n], self.aads[:n], self.futures[:n]


class _Tenant:
    """One tenant's waiting items, by operation kind, and its bulk work waiting for
    a turn (items, future) in arrival order."""

    __slots__ = ("queues", "scheduled", "turns")

    def __init__(self) -> None:
        self.queues = (_Queue(), _Queue(), _Queue())
        self.turns: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.scheduled = False  # in the batcher's list of tenants with work

    @property
    def queued(self) -> int:
        """Single items waiting, all kinds together."""
        a, b, c = self.queues
        return len(a.futures) + len(b.futures) + len(c.futures)

    def take(self, n: int, out: tuple[_Queue, _Queue, _Queue]) -> int:
        """Move up to ``n`` single items to ``out``; returns how many."""
        queued = self.queued
        if n >= queued:
            n = queued
            for mine, theirs in zip(self.queues, out, strict=True):
                if mine.futures:
                    mine.take_all(theirs)
        else:
            left = n
            for mine, theirs in zip(self.queues, out, strict=True):
                if left and mine.futures:
                    k = min(left, len(mine.futures))
                    mine.take(k, theirs)
                    left -= k
        return n

    def grant(self, budget: int) -> int:
        """Grant the turns that fit ``budget``, and at least one however large;
        returns the items granted."""
        granted = 0
        turns = self.turns
        while turns:
            items, future = turns[0]
            if granted and granted + items > budget:
                break
            turns.popleft()
            if not future.done():
                future.set_result(None)
                granted += items
        return granted


class Batcher:
    """Coalesces encrypt, decrypt and data-key requests for one native HSM, and shares
    it fairly among tenants."""

    def __init__(
        self,
        native: NativeHsm,
        loop: asyncio.AbstractEventLoop,
        *,
        executor: Executor | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        offload_items: int = DEFAULT_OFFLOAD_ITEMS,
        turn_items: int = DEFAULT_TURN_ITEMS,
        slice_items: int = DEFAULT_SLICE_ITEMS,
    ) -> None:
        if min(max_items, offload_items, turn_items, slice_items) < 1:
            raise ValueError("batch, offload, turn and slice sizes must be positive")
        self._native = native
        self._loop = loop
        self._executor = executor
        self._max_items = max_items
        self._offload_items = offload_items
        self._turn_items = turn_items
        self.slice_items = slice_items
        self._tenants: dict[str, _Tenant] = {}
        self._last_name: str | None = None
        self._last_state = _Tenant()
        # Tenants with single items waiting, and tenants with turns waiting, in the
        # order they are next served.
        self._waiting: list[_Tenant] = []
        self._turn_queue: deque[_Tenant] = deque()
        self._flush_scheduled = False
        # Set by ``close``: every item added later fails with it at once.
        self._closed: KeyplaneError | None = None
        # Batch sizes seen, for the metrics endpoint and the benchmark's report.
        self.batches = 0
        self.items = 0
        self.largest = 0

    def encrypt(
        self, slot: KeySlot, plaintext: bytes, aad: bytes, tenant: str = ""
    ) -> asyncio.Future[bytes]:
        """Seal ``plaintext``: the future gives ``IV || ciphertext || tag``, or raises
        the item's KeyplaneError. ``tenant`` is whom the item counts to."""
        return self._add(_ENCRYPT, slot, plaintext, aad, tenant)

    def decrypt(
        self, slot: KeySlot, sealed: bytes, aad: bytes, tenant: str = ""
    ) -> asyncio.Future[bytes]:
        """Open ``IV || ciphertext || tag``: the future gives the plaintext."""
        return self._add(_DECRYPT, slot, sealed, aad, tenant)

    def generate_data_key(
        self, slot: KeySlot, key_bytes: int, aad: bytes, tenant: str = ""
    ) -> asyncio.Future[tuple[bytes, bytes]]:
        """Make a data key: the future gives (plaintext key, sealed key)."""
        return self._add(_DATA_KEYS, slot, key_bytes, aad, tenant)

    def turn(self, tenant: str, items: int) -> asyncio.Future[None]:
        """A future that completes when ``tenant`` may spend ``items`` items' worth of
        work: await it before each slice of a bulk request."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self._closed is not None:
            future.set_exception(self._closed)
            return future
        state = self._tenant(tenant)
        if not state.turns:
            self._turn_queue.append(state)
        state.turns.append((max(1, items), future))
        self._schedule()
        return future

    async def slices(
        self, tenant: str, n: int, step: int | None = None
    ) -> AsyncIterator[tuple[int, int]]:
        """The ranges ``[start, stop)`` that cover ``n`` items in slices of ``step``
        (``slice_items`` by default), each given once ``tenant`` has had a turn for
        it."""
        step = step or self.slice_items
        for start in range(0, n, step):
            stop = min(n, start + step)
            await self.turn(tenant, stop - start)
            yield start, stop

    # --- queueing ---------------------------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        return state

    def _add(
        self, kind: int, slot: KeySlot, value: Any, aad: bytes, tenant: str
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closed is not None:
            future.set_exception(self._closed)
            return future
        # Requests come in runs from one tenant: its name is usually the very string
        # object of the request before, which spares the dict lookup.
        if tenant is self._last_name:
            state = self._last_state
        else:
            state = self._tenant(tenant)
            self._last_name, self._last_state = tenant, state
        queue = state.queues[kind]
        queue.handles.append(slot.handle)
        queue.inputs.append(value)
        queue.aads.append(aad)
        if not queue.futures and not state.scheduled:
            state.scheduled = True
            self._waiting.append(state)
        queue.futures.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # --- flushing ---------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._turn_queue:
            self._grant_turns()
            if self._turn_queue:
                self._schedule()
        waiting = self._waiting
        if not waiting:
            return
        if len(waiting) == 1 and waiting[0].queued <= self._max_items:
            # One tenant whose items all fit: take them all, as a plain batcher would.
            only = waiting[0]
            only.scheduled = False
            waiting.clear()
            for kind, queue in zip(_KINDS, only.queues, strict=True):
                if queue.futures:
                    self._run(kind, *queue.detach())
            return
        out = (_Queue(), _Queue(), _Queue())
        self._share(out)
        for kind, queue in zip(_KINDS, out, strict=True):
            if queue.futures:
                self._run(kind, *queue.detach())
        if self._waiting:
            self._schedule()

    def _share(self, out: tuple[_Queue, _Queue, _Queue]) -> None:
        """Take up to ``max_items`` items: an equal share per tenant, and what one
        leaves unused to the others. The tenants left with items are served in an
        order that rotates from flush to flush, so none is always last to the
        budget's remainder."""
        budget = self._max_items
        tenants = self._waiting
        while tenants and budget > 0:
            share = max(1, budget // len(tenants))
            still: list[_Tenant] = []
            for state in tenants:
                if budget > 0:
                    budget -= state.take(min(share, budget), out)
                if state.queued:
                    still.append(state)
                else:
                    state.scheduled = False
            tenants = still
        left = [s for s in self._waiting if s.scheduled]
        # Round-robin: whoever came first this time comes last next time.
        self._waiting = left[1:] + left[:1]

    def _grant_turns(self) -> None:
        """Give every tenant waiting for turns an equal share of ``turn_items`` (at
        least one turn each, however large), in round-robin order."""
        queue = self._turn_queue
        share = max(1, self._turn_items // len(queue))
        for _ in range(len(queue)):
            state = queue.popleft()
            state.grant(share)
            if state.turns:
                queue.append(state)

    def _run(
        self,
        kind: int,
        handles: list[int],
        inputs: list[Any],
        aads: list[bytes],
        futures: list[asyncio.Future[Any]],
    ) -> None:
        run = self._runner(kind, handles, inputs, aads)
        n = len(futures)
        self.batches += 1
        self.items += n
        self.largest = max(self.largest, n)
        if n < self._offload_items or self._executor is None:
            try:
                results = run()
            except BaseException as exc:  # a fault fails every item of the batch
                _fail_all(futures, exc)
                return
            _deliver(futures, results)
            return
        try:
            pending = self._loop.run_in_executor(self._executor, run)
        except RuntimeError as exc:  # the executor was shut down: fail, never hang
            _fail_all(futures, self._closed or exc)
            return
        pending.add_done_callback(lambda done: _settle(done, futures, self._closed))

    def _runner(
        self, kind: int, handles: list[int], inputs: list[Any], aads: list[bytes]
    ) -> Callable[[], Sequence[Any]]:
        native = self._native
        if kind == _ENCRYPT:
            return lambda: native.encrypt_batch(0, handles, inputs, aads)
        if kind == _DECRYPT:
            return lambda: native.decrypt_batch(0, handles, inputs, aads)
        return lambda: native.generate_data_key_batch(
            0, handles, inputs, len(inputs), aads
        )

    def close(self, error: KeyplaneError) -> None:
        """Fail every item and turn still waiting with ``error``, and every one
        added later, at once: for a batcher whose executor is about to shut down
        (a disconnected key store's cluster), so no request waits forever. Batches
        already handed to the executor complete, or fail if the shutdown cancels
        them."""
        self._closed = error
        waiting = self._waiting + list(self._turn_queue)
        self._waiting, self._turn_queue = [], deque()
        for state in set(waiting) | set(self._tenants.values()):
            state.scheduled = False
            for queue in state.queues:
                _fail_all(queue.detach()[3], error)
            while state.turns:
                _fail_all([state.turns.popleft()[1]], error)


def _deliver(futures: list[asyncio.Future[Any]], results: Sequence[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.cancelled():
            continue
        if isinstance(result, KeyplaneError):
            future.set_exception(result)
        else:
            future.set_result(result)


def _fail_all(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.cancelled():
            future.set_exception(exc)


def _settle(
    done: asyncio.Future[Sequence[Any]],
    futures: list[asyncio.Future[Any]],
    closed: KeyplaneError | None = None,
) -> None:
    if done.cancelled():
        # The executor's shutdown cancelled the batch before it ran (``close``).
        if closed is not None:
            _fail_all(futures, closed)
        else:
            for future in futures:
                future.cancel()
        return
    exc = done.exception()
    if exc is not None:
        _fail_all(futures, exc)
    else:
        _deliver(futures, done.result())
