"""``NativeHsm``: one native HSM, its partitions and key slots, and its batch calls.

This and the other modules of ``keyplane.native`` are the only Python that touches the
CFFI ``ffi``/``lib``. Partitions and slots are plain integers here (the native module's
never-reused names); ``keyplane.hsm`` wraps them in objects that cannot leak material.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from keyplane.errors import KeyplaneError, ValidationError
from keyplane.native import _pack
from keyplane.native._kp import ffi, lib
from keyplane.native._status import error_for, item_error, raise_for_status

KEY_BYTES: Final[int] = lib.KP_KEY_BYTES
IV_BYTES: Final[int] = lib.KP_IV_BYTES
TAG_BYTES: Final[int] = lib.KP_TAG_BYTES
SEAL_OVERHEAD: Final[int] = lib.KP_SEAL_OVERHEAD
MAX_INPUT_BYTES: Final[int] = lib.KP_MAX_INPUT_BYTES
MAX_AAD_BYTES: Final[int] = lib.KP_MAX_AAD_BYTES
MAX_DATA_KEY_BYTES: Final[int] = lib.KP_MAX_DATA_KEY_BYTES
MAX_CONTEXT_BYTES: Final[int] = lib.KP_MAX_CONTEXT_BYTES
WRAPPED_KEY_BYTES: Final[int] = lib.KP_WRAPPED_KEY_BYTES
MAX_BATCH: Final[int] = lib.KP_MAX_BATCH

# An item's outcome: its output, or the error that failed it alone.
Result = bytes | KeyplaneError
DataKey = tuple[bytes, bytes]  # (plaintext key, IV || sealed key || tag)

Handles = int | Sequence[int]
Aad = bytes | Sequence[bytes] | None


def memory_locked() -> bool:
    """Whether every page of key memory so far could be locked against swapping."""
    return bool(lib.kp_memory_locked())


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the HSM's random source.

    Raises:
        ValidationError: ``n`` is negative.
        HsmFaultError: the DRBG failed.
    """
    if n < 0:
        raise ValidationError("a byte count cannot be negative")
    out = _pack.output_buffer(n, None)
    raise_for_status(lib.kp_random_bytes(out, n))
    data: bytes = ffi.buffer(out, n)[:]
    _pack.wipe(out, n)
    return data


def _check_batch(
    n: int, handles: Handles, aad: Aad, key_bytes: int | Sequence[int] = 0
) -> None:
    """Refuse, before any native call, a batch whose columns disagree in length."""
    if n > MAX_BATCH:
        raise ValidationError(f"a batch carries at most {MAX_BATCH} items")
    for name, column in (
        ("slot handles", handles),
        ("AADs", aad),
        ("data key sizes", key_bytes),
    ):
        if column is None or isinstance(column, int | bytes | bytearray | memoryview):
            continue
        if len(column) != n:
            raise ValidationError(f"{len(column)} {name} for a batch of {n} items")


def _with_failures(results: list[Any], status: Any, n: int) -> list[Any]:
    bad = _pack.failures(status, n)
    if bad is None:
        return results
    return [r if s == 0 else error_for(s) for r, s in zip(results, bad, strict=True)]


class NativeHsm:
    """One native HSM (``kp_hsm``): a shared fleet or a dedicated cluster.

    Every method is safe to call from several threads at once; the native calls release
    the GIL. ``close`` must not race with other calls.
    """

    def __init__(
        self, root_key: bytes | bytearray, *, _sibling_of: NativeHsm | None = None
    ) -> None:
        """Create an HSM whose partition keys are wrapped under ``root_key``.

        Raises:
            ValidationError: the root key is not 32 bytes.
        """
        out = ffi.new("kp_hsm **")
        if _sibling_of is not None:
            raise_for_status(lib.kp_hsm_new_sibling(_sibling_of.ptr, out))
        else:
            if len(root_key) != KEY_BYTES:
                raise ValidationError(f"the root key must be {KEY_BYTES} bytes")
            raise_for_status(
                lib.kp_hsm_new(ffi.from_buffer(root_key), len(root_key), out)
            )
        self._ptr: Any = out[0]
        self._lock = threading.Lock()

    def sibling(self) -> NativeHsm:
        """Another HSM under the same root key, which never leaves the native module."""
        return NativeHsm(b"", _sibling_of=self)

    def __repr__(self) -> str:
        state = "closed" if self._ptr == ffi.NULL else "open"
        return f"<NativeHsm {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("an HSM cannot be pickled")

    def close(self) -> None:
        """Destroy the HSM and cleanse every key in it."""
        with self._lock:
            if self._ptr != ffi.NULL:
                lib.kp_hsm_free(self._ptr)
                self._ptr = ffi.NULL

    def __del__(self) -> None:
        # Interpreter shutdown may already have torn down lib; nothing to do then.
        if getattr(self, "_ptr", ffi.NULL) != ffi.NULL:
            self.close()

    @property
    def ptr(self) -> Any:
        """The ``kp_hsm *`` (for the hazmat module).

        Raises:
            HsmFaultError: the HSM was closed.
        """
        if self._ptr == ffi.NULL:
            raise_for_status(lib.KP_E_ARGUMENT)
        return self._ptr

    def partition_count(self) -> int:
        return int(lib.kp_hsm_partition_count(self.ptr))

    def slot_count(self) -> int:
        return int(lib.kp_hsm_slot_count(self.ptr))

    # --- partitions -------------------------------------------------------------------

    def partition_create(self) -> int:
        """Create a partition with a wrapping key generated inside the HSM."""
        out = ffi.new("kp_partition *")
        raise_for_status(lib.kp_partition_create(self.ptr, out))
        return int(out[0])

    def partition_open(self, wrapped: bytes) -> int:
        """Recreate a partition from its wrapped key.

        Raises:
            InvalidCiphertextError: wrapped under another root key, or altered.
            MalformedNativeCallError: not the size or version of a wrapped key.
        """
        out = ffi.new("kp_partition *")
        raise_for_status(lib.kp_partition_open(self.ptr, wrapped, len(wrapped), out))
        return int(out[0])

    def partition_export(self, partition: int) -> bytes:
        """The partition's wrapping key, wrapped under the root key."""
        out = ffi.new("uint8_t[]", WRAPPED_KEY_BYTES)
        written = ffi.new("size_t *")
        raise_for_status(
            lib.kp_partition_export(
                self.ptr, partition, out, WRAPPED_KEY_BYTES, written
            )
        )
        wrapped: bytes = ffi.buffer(out, written[0])[:]
        return wrapped

    def partition_destroy(self, partition: int) -> None:
        """Destroy a partition and every slot in it."""
        raise_for_status(lib.kp_partition_destroy(self.ptr, partition))

    # --- key slots --------------------------------------------------------------------

    def keyslot_generate(self, partition: int) -> int:
        """Generate a fresh AES-256 key in the partition; returns its handle."""
        out = ffi.new("kp_handle *")
        raise_for_status(lib.kp_keyslot_generate(self.ptr, partition, out))
        return int(out[0])

    def keyslot_import(
        self, partition: int, wrapped: bytes, context: bytes = b""
    ) -> int:
        """Unwrap a key exported from this partition (with the same context).

        Raises:
            InvalidCiphertextError: another partition's key or context, or altered.
        """
        out = ffi.new("kp_handle *")
        raise_for_status(
            lib.kp_keyslot_import(
                self.ptr, partition, wrapped, len(wrapped), context, len(context), out
            )
        )
        return int(out[0])

    def keyslot_export(
        self, partition: int, handle: int, context: bytes = b""
    ) -> bytes:
        """The slot's key wrapped under its partition's key, bound to ``context``."""
        out = ffi.new("uint8_t[]", WRAPPED_KEY_BYTES)
        written = ffi.new("size_t *")
        raise_for_status(
            lib.kp_keyslot_export(
                self.ptr,
                partition,
                handle,
                context,
                len(context),
                out,
                WRAPPED_KEY_BYTES,
                written,
            )
        )
        wrapped: bytes = ffi.buffer(out, written[0])[:]
        return wrapped

    def keyslot_destroy(self, partition: int, handle: int) -> None:
        """Destroy a slot, cleansing its key."""
        raise_for_status(lib.kp_keyslot_destroy(self.ptr, partition, handle))

    # --- batches ----------------------------------------------------------------------

    def encrypt_batch(
        self, scope: int, handles: Handles, plaintexts: Sequence[bytes], aad: Aad = None
    ) -> list[Result]:
        """Seal every plaintext under its slot with one native call.

        Args:
            scope: a partition every slot must belong to, or 0 for any of this HSM.
            handles: one slot handle for every item, or one per item.
            plaintexts: 1 .. ``MAX_INPUT_BYTES`` bytes each.
            aad: None, one AAD for every item, or one per item.

        Returns:
            Per item, ``IV || ciphertext || tag`` or the error that failed that item.

        Raises:
            ValidationError: more than ``MAX_BATCH`` items.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        n = len(plaintexts)
        if n == 1:
            # Inlined single-item path: see the note above _encrypt_one.
            plaintext = plaintexts[0]
            one_aad = aad if type(aad) is bytes else _first_aad(aad)
            handle = handles if type(handles) is int else _first(handles)
            size = len(plaintext) + SEAL_OVERHEAD
            sc = _pack.local.scratch
            if size <= sc.output_size:
                out, chars = sc.output, sc.output_chars
            else:
                out, chars = _pack.single_output(size)
            status = lib.kp_encrypt_one(
                self._ptr,
                scope,
                handle,
                plaintext,
                len(plaintext),
                one_aad,
                len(one_aad),
                out,
                size,
            )
            return [ffi.unpack(chars, size) if not status else item_error(status)]
        if n == 0:
            return []
        _check_batch(n, handles, aad)
        small = _pack.scratch() if n <= _pack.SMALL_BATCH else None
        ins = _pack.spans(plaintexts, n, small, "in")
        aads = _pack.optional_spans(aad, n, small, "aad")
        handle_ptr, _handles = _pack.handles(handles, n, small)
        sizes: _pack.SizeList
        if isinstance(ins[3], list):
            sizes = [s + SEAL_OVERHEAD for s in ins[3]]
        else:
            sizes = ins[3] + SEAL_OVERHEAD
        out_off, offsets, total, _offsets = _pack.outputs(sizes, small)
        out = _pack.output_buffer(total, small)
        status = _pack.status_array(n, small)
        raise_for_status(
            lib.kp_encrypt_batch(
                self.ptr,
                scope,
                n,
                handle_ptr,
                ins[0],
                len(ins[0]),
                ins[1],
                ins[2],
                aads[0],
                len(aads[0]),
                aads[1],
                aads[2],
                out,
                total,
                out_off,
                status,
            )
        )
        results = _pack.split(out, total, sizes, offsets)
        return _with_failures(results, status, n)

    def decrypt_batch(
        self,
        scope: int,
        handles: Handles,
        ciphertexts: Sequence[bytes],
        aad: Aad = None,
    ) -> list[Result]:
        """Open every ``IV || ciphertext || tag`` under its slot with one native call.

        Returns:
            Per item, the plaintext, or the error that failed that item
            (``InvalidCiphertextError`` for any alteration or the wrong AAD).

        Raises:
            ValidationError: more than ``MAX_BATCH`` items.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        n = len(ciphertexts)
        if n == 1:
            return [
                self._decrypt_one(
                    scope, _first(handles), ciphertexts[0], _first_aad(aad)
                )
            ]
        if n == 0:
            return []
        _check_batch(n, handles, aad)
        small = _pack.scratch() if n <= _pack.SMALL_BATCH else None
        ins = _pack.spans(ciphertexts, n, small, "in")
        aads = _pack.optional_spans(aad, n, small, "aad")
        handle_ptr, _handles = _pack.handles(handles, n, small)
        if small:
            sizes: _pack.SizeList = [max(s - SEAL_OVERHEAD, 0) for s in ins[3]]
        else:
            lengths = np.asarray(ins[3])
            sizes = lengths - np.minimum(lengths, SEAL_OVERHEAD)
        out_off, offsets, total, _offsets = _pack.outputs(sizes, small)
        out = _pack.output_buffer(total, small)
        status = _pack.status_array(n, small)
        try:
            raise_for_status(
                lib.kp_decrypt_batch(
                    self.ptr,
                    scope,
                    n,
                    handle_ptr,
                    ins[0],
                    len(ins[0]),
                    ins[1],
                    ins[2],
                    aads[0],
                    len(aads[0]),
                    aads[1],
                    aads[2],
                    out,
                    total,
                    out_off,
                    status,
                )
            )
            results = _pack.split(out, total, sizes, offsets)
        finally:
            _pack.wipe(out, total)
        return _with_failures(results, status, n)

    def generate_data_key_batch(
        self,
        scope: int,
        handles: Handles,
        key_bytes: int | Sequence[int],
        n: int,
        aad: Aad = None,
    ) -> list[DataKey | KeyplaneError]:
        """Make ``n`` data keys, each returned in plaintext and sealed under its slot.

        Args:
            scope: a partition every slot must belong to, or 0 for any of this HSM.
            handles: one slot handle for every item, or one per item.
            key_bytes: the data key size (1 .. ``MAX_DATA_KEY_BYTES``), for every item
                or per item.
            n: the number of data keys.
            aad: None, one AAD for every item, or one per item.

        Returns:
            Per item, ``(plaintext key, IV || sealed key || tag)`` or its error.

        Raises:
            ValidationError: more than ``MAX_BATCH`` items.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        if n < 0:
            raise ValidationError("a batch cannot have a negative number of items")
        if n == 1:
            return [
                self._generate_data_key_one(
                    scope, _first(handles), _first(key_bytes), _first_aad(aad)
                )
            ]
        if n == 0:
            return []
        _check_batch(n, handles, aad, key_bytes)
        small = _pack.scratch() if n <= _pack.SMALL_BATCH else None
        key_len_ptr, key_lens, _key_lens = _pack.sizes_array(
            key_bytes, n, small, "key_len"
        )
        aads = _pack.optional_spans(aad, n, small, "aad")
        handle_ptr, _handles = _pack.handles(handles, n, small)
        if small:
            # A length the HSM will refuse still gets a (zero-sized) output range.
            valid = [k if 1 <= k <= MAX_DATA_KEY_BYTES else 0 for k in key_lens]
            sizes: _pack.SizeList = [2 * k + SEAL_OVERHEAD if k else 0 for k in valid]
        else:
            arr = np.asarray(key_lens)
            ok = (arr >= 1) & (arr <= MAX_DATA_KEY_BYTES)
            sizes = np.where(ok, 2 * arr + SEAL_OVERHEAD, 0).astype(np.uintp)
        out_off, offsets, total, _offsets = _pack.outputs(sizes, small)
        out = _pack.output_buffer(total, small)
        status = _pack.status_array(n, small)
        try:
            raise_for_status(
                lib.kp_generate_data_key_batch(
                    self.ptr,
                    scope,
                    n,
                    handle_ptr,
                    key_len_ptr,
                    aads[0],
                    len(aads[0]),
                    aads[1],
                    aads[2],
                    out,
                    total,
                    out_off,
                    status,
                )
            )
            results = _split_data_keys(out, total, key_lens, sizes, offsets)
        finally:
            _pack.wipe(out, total)
        return _with_failures(results, status, n)

    # --- single items -----------------------------------------------------------------
    # At one item the native call costs about a microsecond, so each line around it
    # shows: these use the one-item entry points (no descriptor arrays) and this
    # thread's output buffer, and nothing else.

    def _encrypt_one(
        self, scope: int, handle: int, plaintext: bytes, aad: bytes
    ) -> Result:
        size = len(plaintext) + SEAL_OVERHEAD
        out, chars = _pack.single_output(size)
        status = lib.kp_encrypt_one(
            self._ptr,
            scope,
            handle,
            plaintext,
            len(plaintext),
            aad,
            len(aad),
            out,
            size,
        )
        if status:
            return item_error(status)
        return ffi.unpack(chars, size)  # type: ignore[no-any-return]

    def _decrypt_one(
        self, scope: int, handle: int, sealed: bytes, aad: bytes
    ) -> Result:
        size = max(len(sealed) - SEAL_OVERHEAD, 0)
        out, chars = _pack.single_output(size)
        status = lib.kp_decrypt_one(
            self._ptr, scope, handle, sealed, len(sealed), aad, len(aad), out, size
        )
        if status:
            return item_error(status)
        plaintext: bytes = ffi.unpack(chars, size)
        _pack.wipe(out, size)
        return plaintext

    def _generate_data_key_one(
        self, scope: int, handle: int, key_bytes: int, aad: bytes
    ) -> DataKey | KeyplaneError:
        valid = 1 <= key_bytes <= MAX_DATA_KEY_BYTES
        size = 2 * key_bytes + SEAL_OVERHEAD if valid else 0
        out, chars = _pack.single_output(size)
        status = lib.kp_generate_data_key_one(
            self._ptr,
            scope,
            handle,
            key_bytes if valid else 0,
            aad,
            len(aad),
            out,
            size,
        )
        if status:
            return item_error(status)
        both: bytes = ffi.unpack(chars, size)
        _pack.wipe(out, size)
        return both[:key_bytes], both[key_bytes:]


# isinstance against a union costs a few hundred nanoseconds, which the single-item
# paths notice; an exact type check settles the common cases first.


def _first(values: int | Sequence[int]) -> int:
    if isinstance(values, int):
        return values
    if len(values) != 1:
        raise ValidationError(f"{len(values)} values for a batch of 1 item")
    return int(values[0])


def _first_aad(aad: Aad) -> bytes:
    if aad is None:
        return b""
    if isinstance(aad, bytes | bytearray | memoryview):
        return bytes(aad)
    if len(aad) != 1:
        raise ValidationError(f"{len(aad)} AADs for a batch of 1 item")
    return aad[0]


def _split_data_keys(
    out: Any,
    total: int,
    key_lens: _pack.SizeList,
    sizes: _pack.SizeList,
    offsets: _pack.SizeList,
) -> list[Any]:
    first = int(key_lens[0])
    if 1 <= first <= MAX_DATA_KEY_BYTES and _pack.uniform(key_lens, first):
        # Every item has the same key size: split both columns with numpy.
        layout = np.dtype(
            [("key", f"V{first}"), ("sealed", f"V{first + SEAL_OVERHEAD}")]
        )
        rows = np.frombuffer(ffi.buffer(out, total), dtype=layout)
        return list(zip(rows["key"].tolist(), rows["sealed"].tolist(), strict=True))
    items = _pack.split(out, total, sizes, offsets)
    return [
        (item[:k], item[k:]) if item else b""
        for item, k in zip(items, _pack.as_ints(key_lens), strict=True)
    ]
