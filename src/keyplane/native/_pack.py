"""Descriptor arrays for batch calls: many ``bytes`` in, one native call, out again.

A batch crosses the FFI as one contiguous buffer plus offset and length arrays. Building
those costs Python time per item, which for small items is as much as the cipher itself,
so the per-item work stays in C loops (``bytes.join``, ``map(len)``, numpy) and outputs
of equal size are split with one numpy conversion. Tiny batches take another route:
numpy's fixed cost per array (about a microsecond) would dominate them, so their
descriptors go into per-thread scratch arrays through cffi stores.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from keyplane.native._kp import ffi

# Batches up to this size use the per-thread scratch descriptors; larger ones use numpy.
# bench/test_bench_native.py measures both sides of the boundary (docs/native.md).
SMALL_BATCH: Final = 32

# Each thread's output buffer starts at the first size and may grow to the second.
SCRATCH_OUTPUT_BYTES: Final = 1 << 16
MAX_SCRATCH_BYTES: Final = 1 << 26

_ZEROS: Final = bytes(1 << 16)
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

Sizes = npt.NDArray[np.uintp]
SizeList = list[int] | Sizes

REGIONS: Final = (
    "zero",
    "in_off",
    "in_len",
    "aad_off",
    "aad_len",
    "out_off",
    "key_len",
    "iv_off",
    "iv_len",
    "tag_len",
)


class Scratch:
    """One thread's descriptor arrays for small batches, allocated once.

    Each region holds ``SMALL_BATCH`` entries. ``zero`` is never written, so it serves
    as the offset array of every single-item batch.
    """

    def __init__(self) -> None:
        n = SMALL_BATCH
        self._regions = ffi.new("size_t[]", len(REGIONS) * n)
        self.region = {name: self._regions + i * n for i, name in enumerate(REGIONS)}
        self.zero = self.region["zero"]
        self.handles = ffi.new("kp_handle[]", n)
        self.status = ffi.new("kp_status[]", n)
        self.grow_output(SCRATCH_OUTPUT_BYTES)

    def grow_output(self, size: int) -> None:
        """Replace the output buffer with one of at least ``size`` bytes."""
        self.output_size = max(size, SCRATCH_OUTPUT_BYTES)
        self.output = _new_uncleared("uint8_t[]", self.output_size)
        # ffi.unpack of a char pointer is the cheapest way to copy bytes out.
        self.output_chars = ffi.cast("char *", self.output)


class _Local(threading.local):
    scratch: Scratch

    def __init__(self) -> None:
        self.scratch = Scratch()


local = _Local()


def scratch() -> Scratch:
    """This thread's scratch descriptors."""
    return local.scratch


def single_output(size: int) -> tuple[Any, Any]:
    """This thread's output buffer for one item, as (uint8_t pointer, char pointer)."""
    sc = local.scratch
    if size <= sc.output_size:
        return sc.output, sc.output_chars
    buffer = output_buffer(size, sc)
    return buffer, ffi.cast("char *", buffer)


def pointer(array: npt.NDArray[Any], ctype: str) -> Any:
    """A cffi pointer onto a numpy array's memory (keep the array alive)."""
    return ffi.from_buffer(ctype, array)


# A packed span set is (buffer, off pointer, len pointer, lengths, keep-alive).
Spans = tuple[bytes, Any, Any, SizeList, Any]


def spans(items: Sequence[bytes], n: int, small: Scratch | None, region: str) -> Spans:
    """Pack ``n`` items into a contiguous buffer with offset and length arrays.

    ``region`` names the scratch regions ``<region>_off`` and ``<region>_len`` used when
    ``small`` is given; larger batches get fresh numpy arrays instead.
    """
    buffer = b"".join(items)
    if small is not None:
        lengths = list(map(len, items))
        off, len_ = small.region[region + "_off"], small.region[region + "_len"]
        len_[0:n] = lengths
        if n == 1:
            off = small.zero
        else:
            off[0:n] = list(accumulate(lengths[:-1], initial=0))
        return buffer, off, len_, lengths, None
    lens = np.fromiter(map(len, items), dtype=np.uintp, count=n)
    offs = np.zeros(n, dtype=np.uintp)
    np.cumsum(lens[:-1], out=offs[1:])
    return (
        buffer,
        pointer(offs, "size_t[]"),
        pointer(lens, "size_t[]"),
        lens,
        (offs, lens),
    )


def repeated_spans(item: bytes, n: int, small: Scratch | None, region: str) -> Spans:
    """Spans in which each of ``n`` items is the same bytes, stored only once."""
    if small is not None:
        len_ = small.region[region + "_len"]
        len_[0:n] = [len(item)] * n
        return item, small.zero, len_, [len(item)] * n, None
    lens = np.full(n, len(item), dtype=np.uintp)
    offs = np.zeros(n, dtype=np.uintp)
    return (
        item,
        pointer(offs, "size_t[]"),
        pointer(lens, "size_t[]"),
        lens,
        (offs, lens),
    )


def optional_spans(
    items: bytes | Sequence[bytes] | None, n: int, small: Scratch | None, region: str
) -> Spans:
    """AAD-like spans: none at all, one value for every item, or one value per item."""
    if items is None:
        return b"", ffi.NULL, ffi.NULL, [], None
    if isinstance(items, bytes | bytearray | memoryview):
        return repeated_spans(bytes(items), n, small, region)
    return spans(items, n, small, region)


def sizes_array(
    values: int | Sequence[int], n: int, small: Scratch | None, region: str
) -> tuple[Any, SizeList, Any]:
    """A size_t array of one value for every item or one per item: (pointer, values,
    keep-alive)."""
    if small is not None:
        listed = [values] * n if isinstance(values, int) else list(values)
        small.region[region][0:n] = listed
        return small.region[region], listed, None
    if isinstance(values, int):
        array = np.full(n, values, dtype=np.uintp)
    else:
        array = np.fromiter(values, dtype=np.uintp, count=n)
    return pointer(array, "size_t[]"), array, array


def handles(
    values: int | Sequence[int], n: int, small: Scratch | None
) -> tuple[Any, Any]:
    """The handle array: one handle for every item, or one per item: (pointer, keep)."""
    if small is not None:
        small.handles[0:n] = [values] * n if isinstance(values, int) else list(values)
        return small.handles, None
    if isinstance(values, int):
        array = np.full(n, values, dtype=np.uint64)
    else:
        array = np.fromiter(values, dtype=np.uint64, count=n)
    return pointer(array, "kp_handle[]"), array


def outputs(sizes: SizeList, small: Scratch | None) -> tuple[Any, SizeList, int, Any]:
    """Back-to-back outputs of ``sizes``: (buffer, offsets pointer, offsets, total)."""
    if small is not None:
        offsets = list(accumulate(sizes, initial=0))
        total = offsets.pop()
        small.region["out_off"][0 : len(sizes)] = offsets
        return small.region["out_off"], offsets, total, None
    array = np.zeros(len(sizes) + 1, dtype=np.uintp)
    np.cumsum(sizes, out=array[1:])
    return pointer(array, "size_t[]"), array[:-1], int(array[-1]), array


def output_buffer(total: int, small: Scratch | None) -> Any:
    """Where the native call writes: this thread's scratch, grown to fit if need be.

    Reusing one buffer keeps large batches from faulting in fresh pages on every call;
    it grows to the largest batch this thread has run, up to ``MAX_SCRATCH_BYTES``.
    """
    sc = small or scratch()
    if total <= sc.output_size:
        return sc.output
    if total > MAX_SCRATCH_BYTES:
        return _new_uncleared("uint8_t[]", total)
    sc.grow_output(total)
    return sc.output


def status_array(n: int, small: Scratch | None) -> Any:
    return small.status if small is not None else ffi.new("kp_status[]", n)


def split(out: Any, total: int, sizes: SizeList, offsets: SizeList) -> list[bytes]:
    """Copy the items that lie back to back at ``offsets`` in ``out`` into bytes."""
    n = len(sizes)
    if n == 0:
        return []
    first = int(sizes[0])
    if first and total == first * n and uniform(sizes, first):
        # One C loop instead of n slices, straight from the native buffer. The void
        # dtype keeps every byte, where the bytes dtype 'S' would strip trailing NULs.
        rows = np.frombuffer(ffi.buffer(out, total), dtype=f"V{first}")
        result: list[bytes] = rows.tolist()
        return result
    raw = ffi.buffer(out, total)[:]
    return [
        raw[o : o + s] for o, s in zip(as_ints(offsets), as_ints(sizes), strict=True)
    ]


def uniform(sizes: SizeList, first: int) -> bool:
    """Whether every entry of ``sizes`` equals ``first``."""
    if isinstance(sizes, np.ndarray):
        return bool((sizes == first).all())
    return sizes.count(first) == len(sizes)


def as_ints(values: SizeList) -> list[int]:
    """``values`` as a list of Python ints."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def failures(status: Any, n: int) -> list[int] | None:
    """Every item's status if any item failed, else None (the common case, cheaply)."""
    if n <= SMALL_BATCH:
        values: list[int] = list(status[0:n])
        return values if any(values) else None
    array = np.frombuffer(
        ffi.buffer(status, ffi.sizeof("kp_status") * n), dtype=np.int32
    )
    return array.tolist() if array.any() else None


def wipe(buffer: Any, size: int) -> None:
    """Overwrite the first ``size`` bytes of an output that held secrets."""
    if size <= len(_ZEROS):
        ffi.memmove(buffer, _ZEROS, size)
        return
    offset = 0
    while offset < size:
        step = min(size - offset, len(_ZEROS))
        ffi.memmove(buffer + offset, _ZEROS, step)
        offset += step


def np_sizes(values: Sequence[int]) -> Sizes:
    """``values`` as a ``uintp`` array, the form large batches keep sizes in."""
    return np.asarray(values, dtype=np.uintp)
