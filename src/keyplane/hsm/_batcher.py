"""The micro-batcher: concurrent single-item requests become one native batch call.

Each request adds its item to the open batch of its native HSM (the shared fleet, or a
dedicated HSM of its own) and awaits a future. The first item of a batch schedules a
flush with ``loop.call_soon``; asyncio runs that after every callback already queued, so
a batch collects every request parsed from the reads of one loop iteration. A batch that
reaches ``max_items`` is flushed at once.

Small batches run inline on the event loop: the native call costs a few microseconds,
less than a hop to a thread and back. Batches of ``offload_items`` or more run on a
worker thread (the native call releases the GIL), so one huge batch does not stall the
loop. Each dedicated HSM has its own batcher and so never shares a batch or a thread
with another tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Final

from keyplane.errors import KeyplaneError
from keyplane.hsm._hsm import KeySlot
from keyplane.native import NativeHsm

DEFAULT_MAX_ITEMS: Final = 4096
DEFAULT_OFFLOAD_ITEMS: Final = 512

# One pending item: (slot handle, input, AAD, future).
_Item = tuple[int, Any, bytes, "asyncio.Future[Any]"]


class _Queue:
    """The open batch of one operation kind."""

    __slots__ = ("aads", "futures", "handles", "inputs")

    def __init__(self) -> None:
        self.handles: list[int] = []
        self.inputs: list[Any] = []
        self.aads: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []

    def take(
        self,
    ) -> tuple[list[int], list[Any], list[bytes], list[asyncio.Future[Any]]]:
        taken = self.handles, self.inputs, self.aads, self.futures
        self.handles, self.inputs, self.aads, self.futures = [], [], [], []
        return taken


class Batcher:
    """Coalesces encrypt, decrypt and data-key requests for one native HSM."""

    def __init__(
        self,
        native: NativeHsm,
        loop: asyncio.AbstractEventLoop,
        *,
        executor: Executor | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        offload_items: int = DEFAULT_OFFLOAD_ITEMS,
    ) -> None:
        self._native = native
        self._loop = loop
        self._executor = executor
        self._max_items = max_items
        self._offload_items = offload_items
        self._encrypt = _Queue()
        self._decrypt = _Queue()
        self._data_keys = _Queue()
        self._flush_scheduled = False
        # Batch sizes seen, for the metrics endpoint and the benchmark's report.
        self.batches = 0
        self.items = 0
        self.largest = 0

    def encrypt(
        self, slot: KeySlot, plaintext: bytes, aad: bytes
    ) -> asyncio.Future[bytes]:
        """Seal ``plaintext``: the future gives ``IV || ciphertext || tag``, or raises
        the item's KeyplaneError."""
        return self._add(self._encrypt, slot, plaintext, aad)

    def decrypt(
        self, slot: KeySlot, sealed: bytes, aad: bytes
    ) -> asyncio.Future[bytes]:
        """Open ``IV || ciphertext || tag``: the future gives the plaintext."""
        return self._add(self._decrypt, slot, sealed, aad)

    def generate_data_key(
        self, slot: KeySlot, key_bytes: int, aad: bytes
    ) -> asyncio.Future[tuple[bytes, bytes]]:
        """Make a data key: the future gives (plaintext key, sealed key)."""
        return self._add(self._data_keys, slot, key_bytes, aad)

    def _add(
        self, queue: _Queue, slot: KeySlot, value: Any, aad: bytes
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        queue.handles.append(slot.handle)
        queue.inputs.append(value)
        queue.aads.append(aad)
        queue.futures.append(future)
        if len(queue.futures) >= self._max_items:
            self._flush_queue(queue)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        for queue in (self._encrypt, self._decrypt, self._data_keys):
            if queue.futures:
                self._flush_queue(queue)

    def _flush_queue(self, queue: _Queue) -> None:
        handles, inputs, aads, futures = queue.take()
        run = self._runner(queue, handles, inputs, aads)
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
        pending = self._loop.run_in_executor(self._executor, run)
        pending.add_done_callback(lambda done: _settle(done, futures))

    def _runner(
        self, queue: _Queue, handles: list[int], inputs: list[Any], aads: list[bytes]
    ) -> Callable[[], Sequence[Any]]:
        native = self._native
        if queue is self._encrypt:
            return lambda: native.encrypt_batch(0, handles, inputs, aads)
        if queue is self._decrypt:
            return lambda: native.decrypt_batch(0, handles, inputs, aads)
        return lambda: native.generate_data_key_batch(
            0, handles, inputs, len(inputs), aads
        )


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
    done: asyncio.Future[Sequence[Any]], futures: list[asyncio.Future[Any]]
) -> None:
    exc = done.exception()
    if exc is not None:
        _fail_all(futures, exc)
    else:
        _deliver(futures, done.result())
