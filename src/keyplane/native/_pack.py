"""Descriptor arrays for batch calls: many ``bytes`` in, one native call, out again.

A batch crosses the FFI as one contiguous buffer plus a length array per column; items
lie back to back, so no offset arrays are built (the native call walks them), and
outputs come back back to back too. The costs that remain were measured
(bench/test_bench_native.py, docs/native.md) and decide the shape of this module:

- per item, ``list(map(len, items))`` is the cheapest way to learn lengths (a C loop);
  turning that list into a C array costs ~10 ns an item through ``np.array`` but ~36 ns
  through cffi, while each numpy call has a fixed cost of one to several microseconds;
  so small batches store into per-thread scratch arrays through cffi, large ones make
  one numpy array per column;
- outputs of equal size are split with one ``np.frombuffer(..., "V<size>").tolist()``
  (~20 ns an item against ~100 ns for slicing); the void dtype keeps trailing NUL
  bytes, which the bytes dtype ``S`` would strip;
- whether any item failed is one byte scan of the status array, not a Python loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from keyplane.native._kp import ffi

# Batches up to this size store descriptors through cffi into scratch arrays; larger
# ones convert lists with numpy. bench/test_bench_native.py times both sides.
SMALL_BATCH: Final = 16

# Each thread's output buffer starts at the first size and may grow to the second.
SCRATCH_OUTPUT_BYTES: Final = 1 << 16
MAX_SCRATCH_BYTES: Final = 1 << 26

# Up to this many items, plain Python beats the fixed cost of one numpy call.
_FEW: Final = 8

_ZEROS: Final = bytes(1 << 16)
_STATUS_BYTES: Final = ffi.sizeof("kp_status")
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

# A packed column: (buffer, lengths pointer, lengths, keep-alive).
Column = tuple[bytes, Any, list[int], Any]

_REGIONS: Final = ("zero", "in", "aad", "key", "iv", "tag")


class Scratch:
    """One thread's arrays for small batches, and its reusable output buffer."""

    def __init__(self) -> None:
        n = SMALL_BATCH
        self._sizes = ffi.new("size_t[]", len(_REGIONS) * n)
        self.region = {name: self._sizes + i * n for i, name in enumerate(_REGIONS)}
        self.zero = self.region["zero"]  # never written: offsets of a repeated value
        self.handles = ffi.new("kp_handle[]", n)
        self.status = ffi.new("kp_status[]", n)
        self.output: Any = None
        self.output_chars: Any = None
        self.output_size = 0
        self.grow_output(SCRATCH_OUTPUT_BYTES)

    def grow_output(self, size: int) -> None:
        """Replace the output buffer with one of at least ``size`` bytes.

        Reusing one buffer keeps large batches from faulting in fresh pages on every
        call; it grows to the largest output this thread has produced.
        """
        self.output_size = max(size, SCRATCH_OUTPUT_BYTES)
        self.output = _new_uncleared("uint8_t[]", self.output_size)
        # ffi.unpack of a char pointer is the cheapest way to copy bytes out.
        self.output_chars = ffi.cast("char *", self.output)


class _Local(threading.local):
    scratch: Scratch

    def __init__(self) -> None:
        self.scratch = Scratch()


local = _Local()


def scratch_for(n: int) -> Scratch | None:
    """This thread's scratch arrays when a batch of ``n`` fits them, else None."""
    return local.scratch if n <= SMALL_BATCH else None


def size_array(
    values: list[int], small: Scratch | None, region: str
) -> tuple[Any, Any]:
    """A ``size_t`` array of ``values``: (pointer, keep-alive)."""
    if small is not None:
        target = small.region[region]
        target[0 : len(values)] = values
        return target, None
    array = np.array(values, dtype=np.uintp)
    return ffi.from_buffer("size_t[]", array), array


def column(items: Sequence[bytes], small: Scratch | None, region: str) -> Column:
    """Pack items back to back, with their lengths."""
    lengths = list(map(len, items))
    pointer, keep = size_array(lengths, small, region)
    return b"".join(items), pointer, lengths, keep


def aad_column(
    aad: bytes | Sequence[bytes] | None, n: int, small: Scratch | None
) -> tuple[bytes, Any, Any, Any]:
    """The AAD column as (buffer, offsets, lengths, keep-alive): no AAD at all (NULL
    arrays), one value for every item (stored once, every offset 0), or one per item
    (back to back, NULL offsets)."""
    if aad is None:
        return b"", ffi.NULL, ffi.NULL, None
    if type(aad) is bytes or isinstance(aad, bytearray | memoryview):
        value = bytes(aad)
        lengths, keep = size_array([len(value)] * n, small, "aad")
        if small is not None:
            return value, small.zero, lengths, keep
        zeros = np.zeros(n, dtype=np.uintp)
        return value, ffi.from_buffer("size_t[]", zeros), lengths, (keep, zeros)
    buffer, lengths, _, keep = column(aad, small, "aad")  # type: ignore[arg-type]
    return buffer, ffi.NULL, lengths, keep


def handles(
    values: int | Sequence[int], n: int, small: Scratch | None
) -> tuple[Any, Any]:
    """The handle array, one handle for every item or one per item: (pointer, keep)."""
    listed = [values] * n if type(values) is int else list(values)  # type: ignore[arg-type]
    if small is not None:
        small.handles[0:n] = listed
        return small.handles, None
    array = np.array(listed, dtype=np.uint64)
    return ffi.from_buffer("kp_handle[]", array), array


def output_buffer(total: int, small: Scratch | None = None) -> Any:
    """Where a native call writes ``total`` bytes: this thread's buffer, grown to fit,
    or a buffer of its own beyond ``MAX_SCRATCH_BYTES``."""
    sc = small or local.scratch
    if total <= sc.output_size:
        return sc.output
    if total > MAX_SCRATCH_BYTES:
        return _new_uncleared("uint8_t[]", total)
    sc.grow_output(total)
    return sc.output


def single_output(size: int) -> tuple[Any, Any]:
    """An output for one item, as (uint8_t pointer, char pointer)."""
    sc = local.scratch
    if size <= sc.output_size:
        return sc.output, sc.output_chars
    buffer = output_buffer(size, sc)
    return buffer, ffi.cast("char *", buffer)


def status_array(n: int, small: Scratch | None) -> Any:
    return small.status if small is not None else ffi.new("kp_status[]", n)


def failures(status: Any, n: int) -> list[int] | None:
    """Every item's status if any item failed, else None: one byte scan of the array
    (for a few items, reading them is cheaper still)."""
    if n <= _FEW:
        few: list[int] = status[0:n]
        return few if any(few) else None
    if not ffi.buffer(status, _STATUS_BYTES * n)[:].strip(b"\0"):
        return None
    values: list[int] = status[0:n]
    return values


def split(out: Any, total: int, sizes: list[int] | int, n: int) -> list[bytes]:
    """Copy the ``n`` items that lie back to back in ``out`` into ``bytes`` objects.

    Args:
        sizes: each item's size, or one size shared by every item.
    """
    if isinstance(sizes, int):
        if sizes == 0:
            return [b""] * n
        if n <= _FEW:
            raw = ffi.buffer(out, total)[:]
            return [raw[i : i + sizes] for i in range(0, total, sizes)]
        # One C loop instead of n slices, straight from the native buffer.
        rows: list[bytes] = np.frombuffer(
            ffi.buffer(out, total), dtype=f"V{sizes}"
        ).tolist()
        return rows
    raw = ffi.buffer(out, total)[:]
    result = []
    offset = 0
    for size in sizes:
        result.append(raw[offset : offset + size])
        offset += size
    return result


def uniform(lengths: list[int]) -> int | None:
    """The length every item shares, or None (a C-speed count, ~1 ns an item)."""
    if lengths and lengths.count(lengths[0]) == len(lengths):
        return lengths[0]
    return None


def wipe(buffer: Any, size: int) -> None:
    """Overwrite the first ``size`` bytes of an output that held secrets."""
    if size <= len(_ZEROS):
        ffi.memmove(buffer, _ZEROS, size)
        return
    np.frombuffer(ffi.buffer(buffer, size), dtype=np.uint8).fill(0)
