"""``NativeHsm``: one native HSM, its partitions and key slots, and its batch calls.

This and the other modules of ``keyplane.native`` are the only Python that touches the
CFFI ``ffi``/``lib``. Partitions and slots are plain integers here (the native module's
never-reused names); ``keyplane.hsm`` wraps them in objects that cannot leak material.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from keyplane.errors import KeyplaneError, ValidationError
from keyplane.native import _pack
from keyplane.native._kp import ffi, lib
from keyplane.native._status import (
    error_for,
    item_error,
    raise_for_call,
    raise_for_status,
)

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

# Importing key material: AWS KMS's wrapping algorithms by their AWS names, the RSA
# sizes of its wrapping key specs (RSA_2048, RSA_3072, RSA_4096), the native limits.
WRAPPING_ALGORITHMS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "RSAES_OAEP_SHA_1": lib.KP_WRAP_RSAES_OAEP_SHA_1,
        "RSAES_OAEP_SHA_256": lib.KP_WRAP_RSAES_OAEP_SHA_256,
        "RSA_AES_KEY_WRAP_SHA_1": lib.KP_WRAP_RSA_AES_KEY_WRAP_SHA_1,
        "RSA_AES_KEY_WRAP_SHA_256": lib.KP_WRAP_RSA_AES_KEY_WRAP_SHA_256,
    }
)
WRAPPING_KEY_BITS: Final[frozenset[int]] = frozenset({2048, 3072, 4096})
MATERIAL_ID_BYTES: Final[int] = lib.KP_MATERIAL_ID_BYTES
MAX_IMPORT_BYTES: Final[int] = lib.KP_MAX_IMPORT_BYTES
MAX_WRAPPING_KEY_BYTES: Final[int] = lib.KP_MAX_WRAPPING_KEY_BYTES

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


_SCALARS: Final = (int, bytes, bytearray, memoryview, type(None))

# Batches carrying more input than this go to the native module in slices of about this
# size, so the joined input, the output and the copies out stay in the CPU's L2 cache
# instead of faulting in fresh pages (measured in docs/native.md).
CHUNK_BYTES: Final = 256 * 1024


def _slices(lengths: list[int], total: int, limit: int) -> list[tuple[int, int]]:
    """Consecutive item ranges of about ``limit`` input bytes each. No item is split, so
    an item larger than ``limit`` may share its range with a neighbour."""
    if total <= limit:
        return [(0, len(lengths))]
    bounds = [0]
    filled = 0
    for i, length in enumerate(lengths):
        if filled and filled + length > limit:
            bounds.append(i)
            filled = 0
        filled += length
    bounds.append(len(lengths))
    return list(pairwise(bounds))


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
        # An exact type test first: isinstance against a tuple of types is slower.
        if type(column) in _SCALARS or isinstance(column, _SCALARS):
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
        return _written(
            WRAPPED_KEY_BYTES,
            lambda out, size, written: lib.kp_partition_export(
                self.ptr, partition, out, size, written
            ),
        )

    def partition_destroy(self, partition: int) -> None:
        """Destroy a partition and every slot in it."""
        raise_for_status(lib.kp_partition_destroy(self.ptr, partition))

    # --- root key ---------------------------------------------------------------------

    def partition_rewrap_batch(
        self, wrapped: Sequence[bytes], root_key: bytes | bytearray
    ) -> list[Result]:
        """Re-wrap partition keys (as ``partition_export`` wrote them) from this HSM's
        root key to ``root_key``, in one native call.

        Returns:
            Per item, the key wrapped under ``root_key``, or the error that failed that
            item alone (``InvalidCiphertextError``: not under this HSM's root key, or
            altered; ``MalformedNativeCallError``: not a wrapped partition key).

        Raises:
            ValidationError: the root key is not 32 bytes, or too many items.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        if len(root_key) != KEY_BYTES:
            raise ValidationError(f"the root key must be {KEY_BYTES} bytes")
        n = len(wrapped)
        if n > MAX_BATCH:
            raise ValidationError(f"a batch carries at most {MAX_BATCH} items")
        # Items of another size fail alone, as the native call would fail them, without
        # shifting their neighbours out of place in the back-to-back input.
        sized = [w if len(w) == WRAPPED_KEY_BYTES else None for w in wrapped]
        filler = bytes(WRAPPED_KEY_BYTES)
        buffer = b"".join(w if w is not None else filler for w in sized)
        out = ffi.new("uint8_t[]", max(1, n * WRAPPED_KEY_BYTES))
        status = ffi.new("kp_status[]", max(1, n))
        raise_for_status(
            lib.kp_partition_rewrap_batch(
                self.ptr,
                n,
                buffer,
                len(buffer),
                ffi.from_buffer(root_key),
                len(root_key),
                out,
                n * WRAPPED_KEY_BYTES,
                status,
            )
        )
        data = ffi.buffer(out, n * WRAPPED_KEY_BYTES)
        size = WRAPPED_KEY_BYTES
        return [
            error_for(lib.KP_E_ARGUMENT)
            if sized[i] is None
            else error_for(status[i])
            if status[i] != lib.KP_OK
            else data[i * size : (i + 1) * size]
            for i in range(n)
        ]

    def set_root_key(self, root_key: bytes | bytearray) -> None:
        """Wrap and open partition keys under ``root_key`` from now on; the old root key
        is cleansed. Open partitions, their slots and batches in flight are untouched.

        Raises:
            ValidationError: the root key is not 32 bytes.
        """
        if len(root_key) != KEY_BYTES:
            raise ValidationError(f"the root key must be {KEY_BYTES} bytes")
        raise_for_status(
            lib.kp_hsm_set_root_key(self.ptr, ffi.from_buffer(root_key), len(root_key))
        )

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
        return _written(
            WRAPPED_KEY_BYTES,
            lambda out, size, written: lib.kp_keyslot_export(
                self.ptr, partition, handle, context, len(context), out, size, written
            ),
        )

    def keyslot_destroy(self, partition: int, handle: int) -> None:
        """Destroy a slot, cleansing its key."""
        raise_for_status(lib.kp_keyslot_destroy(self.ptr, partition, handle))

    # --- batches ----------------------------------------------------------------------
    # Each method has a single-item path first: at one item the native call costs about
    # a microsecond, so it uses the one-item entry point and this thread's output
    # buffer, with exact type checks before any isinstance against a union (which
    # costs a few hundred nanoseconds).

    def encrypt_batch(
        self,
        scope: int,
        handles: Handles,
        plaintexts: Sequence[bytes],
        aad: Aad = None,
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
            ValidationError: more than ``MAX_BATCH`` items, or columns of other lengths.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        n = len(plaintexts)
        if n == 1:
            plaintext = plaintexts[0]
            one_aad = aad if type(aad) is bytes else _first_aad(aad)
            handle = handles if type(handles) is int else _first(handles)
            size = len(plaintext) + SEAL_OVERHEAD
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
        return self._many(True, scope, handles, plaintexts, aad)

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
            ValidationError: more than ``MAX_BATCH`` items, or columns of other lengths.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        n = len(ciphertexts)
        if n == 1:
            sealed = ciphertexts[0]
            one_aad = aad if type(aad) is bytes else _first_aad(aad)
            handle = handles if type(handles) is int else _first(handles)
            size = len(sealed) - SEAL_OVERHEAD if len(sealed) > SEAL_OVERHEAD else 0
            out, chars = _pack.single_output(size)
            status = lib.kp_decrypt_one(
                self._ptr,
                scope,
                handle,
                sealed,
                len(sealed),
                one_aad,
                len(one_aad),
                out,
                size,
            )
            if status:
                return [item_error(status)]
            plaintext: bytes = ffi.unpack(chars, size)
            _pack.wipe(out, size)
            return [plaintext]
        if n == 0:
            return []
        return self._many(False, scope, handles, ciphertexts, aad)

    def _many(
        self,
        sealing: bool,
        scope: int,
        handles: Handles,
        items: Sequence[bytes],
        aad: Aad,
    ) -> list[Result]:
        """Encrypt or decrypt a batch of several items, in cache-sized slices."""
        n = len(items)
        _check_batch(n, handles, aad)
        lengths = list(map(len, items))
        slices = _slices(lengths, sum(lengths), CHUNK_BYTES)
        if len(slices) == 1:
            return self._packed(sealing, scope, handles, items, aad, lengths)
        results: list[Result] = []
        for a, b in slices:
            part_handles = handles if isinstance(handles, int) else handles[a:b]
            part_aad = aad if aad is None or isinstance(aad, bytes) else aad[a:b]
            results += self._packed(
                sealing, scope, part_handles, items[a:b], part_aad, lengths[a:b]
            )
        return results

    def _packed(
        self,
        sealing: bool,
        scope: int,
        handles: Handles,
        items: Sequence[bytes],
        aad: Aad,
        lengths: list[int],
    ) -> list[Result]:
        """One native call for a batch that fits one slice."""
        n = len(items)
        small = _pack.scratch_for(n)
        buffer = b"".join(items)
        in_len, _keep_in = _pack.size_array(lengths, small, "in")
        aads = _pack.aad_column(aad, n, small)
        handle_ptr, _keep_handles = _pack.handles(handles, n, small)
        # Building a per-item size list costs tens of nanoseconds an item; when every
        # item has one length (the common case) one size describes them all.
        same = _pack.uniform(lengths)
        sizes: list[int] | int
        if sealing:
            total = len(buffer) + n * SEAL_OVERHEAD
            sizes = (
                same + SEAL_OVERHEAD
                if same is not None
                else [x + SEAL_OVERHEAD for x in lengths]
            )
        elif same is not None:
            sizes = same - SEAL_OVERHEAD if same > SEAL_OVERHEAD else 0
            total = n * sizes
        else:
            sizes = [x - SEAL_OVERHEAD if x > SEAL_OVERHEAD else 0 for x in lengths]
            total = sum(sizes)
        out = _pack.output_buffer(total, small)
        status = _pack.status_array(n, small)
        call = lib.kp_encrypt_batch if sealing else lib.kp_decrypt_batch
        try:
            raise_for_status(
                call(
                    self._ptr,
                    scope,
                    n,
                    handle_ptr,
                    buffer,
                    len(buffer),
                    ffi.NULL,
                    in_len,
                    aads[0],
                    len(aads[0]),
                    aads[1],
                    aads[2],
                    out,
                    total,
                    ffi.NULL,
                    status,
                )
            )
            results = _pack.split(out, total, sizes, n)
        finally:
            if not sealing:  # the output held plaintexts
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
            ValidationError: more than ``MAX_BATCH`` items, or columns of other lengths.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        if n == 1:
            one_aad = aad if type(aad) is bytes else _first_aad(aad)
            handle = handles if type(handles) is int else _first(handles)
            key_size = key_bytes if type(key_bytes) is int else _first(key_bytes)
            valid = 1 <= key_size <= MAX_DATA_KEY_BYTES
            size = 2 * key_size + SEAL_OVERHEAD if valid else 0
            out, chars = _pack.single_output(size)
            status = lib.kp_generate_data_key_one(
                self._ptr,
                scope,
                handle,
                key_size if valid else 0,
                one_aad,
                len(one_aad),
                out,
                size,
            )
            if status:
                return [item_error(status)]
            both: bytes = ffi.unpack(chars, size)
            _pack.wipe(out, size)
            return [(both[:key_size], both[key_size:])]
        if n < 0:
            raise ValidationError("a batch cannot have a negative number of items")
        if n == 0:
            return []
        _check_batch(n, handles, aad, key_bytes)
        small = _pack.scratch_for(n)
        # A size outside 1 .. MAX_DATA_KEY_BYTES fails its item; the native call still
        # needs a valid size_t, so such a size becomes 0, which gets no output bytes.
        if isinstance(key_bytes, int):
            key_size = key_bytes if 0 <= key_bytes <= MAX_DATA_KEY_BYTES else 0
            key_lens = [key_size] * n
        else:
            key_lens = [k if 0 <= k <= MAX_DATA_KEY_BYTES else 0 for k in key_bytes]
        same = _pack.uniform(key_lens)
        if same is not None:
            total = n * (2 * same + SEAL_OVERHEAD) if same else 0
            sizes: list[int] = []
        else:
            sizes = [2 * k + SEAL_OVERHEAD if k else 0 for k in key_lens]
            total = sum(sizes)
        out, status = self._make_data_keys(scope, handles, key_lens, aad, total, small)
        try:
            results = _split_data_keys(out, total, key_lens, sizes)
        finally:
            _pack.wipe(out, total)
        return _with_failures(results, status, n)

    def _make_data_keys(
        self,
        scope: int,
        handles: Handles,
        key_lens: list[int],
        aad: Aad,
        total: int,
        small: _pack.Scratch | None,
    ) -> tuple[Any, Any]:
        """The native generate-data-key call shared by both result shapes: keys land
        back to back in the returned buffer (which the caller wipes), statuses in the
        returned array."""
        n = len(key_lens)
        key_len_ptr, _keep_lens = _pack.size_array(key_lens, small, "key")
        aads = _pack.aad_column(aad, n, small)
        handle_ptr, _keep_handles = _pack.handles(handles, n, small)
        out = _pack.output_buffer(total, small)
        status = _pack.status_array(n, small)
        try:
            raise_for_status(
                lib.kp_generate_data_key_batch(
                    self._ptr,
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
                    ffi.NULL,
                    status,
                )
            )
        except BaseException:
            _pack.wipe(out, total)
            raise
        return out, status

    def generate_data_key_rows(
        self, scope: int, handle: int, key_bytes: int, n: int, aad: bytes
    ) -> tuple[npt.NDArray[np.uint8], dict[int, KeyplaneError]]:
        """``n`` data keys under one slot as the rows of a matrix, for callers that
        encode results in bulk rather than one ``bytes`` object at a time.

        Row i is ``key || IV || sealed key || tag`` (``2 * key_bytes + SEAL_OVERHEAD``
        bytes). The caller should zero the matrix once it is done with the keys.

        Returns:
            The matrix, and the error of each item that failed, by index.

        Raises:
            ValidationError: ``key_bytes`` or ``n`` out of range.
            HsmFaultError: an internal fault, which fails the whole batch.
        """
        if not 1 <= key_bytes <= MAX_DATA_KEY_BYTES or not 1 <= n <= MAX_BATCH:
            raise ValidationError("data key size or count out of range")
        small = _pack.scratch_for(n)
        stride = 2 * key_bytes + SEAL_OVERHEAD
        total = n * stride
        out, status = self._make_data_keys(
            scope, handle, [key_bytes] * n, aad, total, small
        )
        try:
            rows = np.frombuffer(ffi.buffer(out, total), dtype=np.uint8)
            rows = rows.reshape(n, stride).copy()
        finally:
            _pack.wipe(out, total)
        statuses = _pack.failures(status, n) or []
        return rows, {i: item_error(s) for i, s in enumerate(statuses) if s}

    # --- importing key material -------------------------------------------------------
    # A wrapping key is an RSA key pair in a slot of its own kind (same handles, counts
    # and keyslot_destroy); AES calls refuse it, and these refuse an AES slot, with
    # InvalidKeyUsageError. The native calls release the GIL, which matters here:
    # generating a 4096-bit key can take seconds.

    def wrapping_key_generate(self, partition: int, bits: int) -> int:
        """Generate an RSA wrapping key pair (e = 65537) in the partition.

        Raises:
            ValidationError: ``bits`` is not 2048, 3072 or 4096.
            PartitionUnavailableError: the partition does not exist.
        """
        if bits not in WRAPPING_KEY_BITS:
            raise ValidationError("a wrapping key is RSA of 2048, 3072 or 4096 bits")
        out = ffi.new("kp_handle *")
        raise_for_status(lib.kp_wrapping_key_generate(self.ptr, partition, bits, out))
        return int(out[0])

    def wrapping_key_public(self, partition: int, handle: int) -> bytes:
        """The wrapping key's public key, DER SubjectPublicKeyInfo."""
        return _written(
            lib.KP_MAX_WRAPPING_PUBLIC_BYTES,
            lambda out, size, written: lib.kp_wrapping_key_public(
                self.ptr, partition, handle, out, size, written
            ),
        )

    def wrapping_key_export(
        self, partition: int, handle: int, context: bytes = b""
    ) -> bytes:
        """The wrapping key's private key sealed under the partition's key, bound to
        ``context``: how it is stored for the import token's lifetime.

        Raises:
            ValidationError: the context is too long.
        """
        _check_context(context)
        return _written(
            MAX_WRAPPING_KEY_BYTES,
            lambda out, size, written: lib.kp_wrapping_key_export(
                self.ptr, partition, handle, context, len(context), out, size, written
            ),
        )

    def wrapping_key_open(
        self, partition: int, wrapped: bytes, context: bytes = b""
    ) -> int:
        """Reopen an exported wrapping key into a new slot of the partition.

        Raises:
            InvalidCiphertextError: another partition's key or context, or altered.
            MalformedNativeCallError: not the length or version of an export.
        """
        _check_context(context)
        out = ffi.new("kp_handle *")
        raise_for_status(
            lib.kp_wrapping_key_open(
                self.ptr, partition, wrapped, len(wrapped), context, len(context), out
            )
        )
        return int(out[0])

    def keyslot_unwrap_import(
        self, partition: int, wrapping_handle: int, algorithm: int, encrypted: bytes
    ) -> int:
        """Unwrap AWS's EncryptedKeyMaterial into a new AES-256 slot.

        Args:
            algorithm: one of ``WRAPPING_ALGORITHMS``' values.
            encrypted: what the client made with the wrapping key's public key.

        Raises:
            InvalidCiphertextError: it does not unwrap with this key and algorithm.
            ValidationError: it unwraps, but not to 256 bits; or it is empty or longer
                than ``MAX_IMPORT_BYTES``.
            InvalidKeyUsageError: the handle is not a wrapping key.
        """
        if not 1 <= len(encrypted) <= MAX_IMPORT_BYTES:
            raise ValidationError(
                f"encrypted key material is 1 to {MAX_IMPORT_BYTES} bytes"
            )
        out = ffi.new("kp_handle *")
        raise_for_call(
            lib.kp_keyslot_unwrap_import(
                self.ptr,
                partition,
                wrapping_handle,
                algorithm,
                encrypted,
                len(encrypted),
                out,
            ),
            _UNWRAP_MESSAGES,
        )
        return int(out[0])

    def keyslot_material_id(self, partition: int, handle: int, context: bytes) -> bytes:
        """HMAC-SHA-256 of ``context`` under the slot's key: names the material (the
        same material and context give the same id) without revealing it.

        Raises:
            ValidationError: the context is too long.
        """
        _check_context(context)
        out = ffi.new("uint8_t[]", MATERIAL_ID_BYTES)
        raise_for_status(
            lib.kp_keyslot_material_id(
                self.ptr,
                partition,
                handle,
                context,
                len(context),
                out,
                MATERIAL_ID_BYTES,
            )
        )
        material_id: bytes = ffi.buffer(out, MATERIAL_ID_BYTES)[:]
        return material_id


# isinstance against a union costs a few hundred nanoseconds, which the single-item
# paths notice; they check the exact common types before calling these.


def _written(size: int, call: Callable[[Any, int, Any], int]) -> bytes:
    """What a native call that writes into a caller's buffer wrote: ``call(out,
    size, written)`` gets a ``size``-byte buffer and returns its status."""
    out = ffi.new("uint8_t[]", size)
    written = ffi.new("size_t *")
    raise_for_status(call(out, size, written))
    result: bytes = ffi.buffer(out, written[0])[:]
    return result


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
    out: Any, total: int, key_lens: list[int], sizes: list[int]
) -> list[Any]:
    """Per item (plaintext key, sealed key) from back-to-back ``key || sealed`` rows;
    ``sizes`` is empty when every item has the key size ``key_lens[0]``."""
    if not sizes:
        first = key_lens[0]
        if not first:
            return [b""] * len(key_lens)  # every item failed; each gets its error
        # Split both columns with numpy: two C loops for the whole batch.
        layout = np.dtype(
            [("key", f"V{first}"), ("sealed", f"V{first + SEAL_OVERHEAD}")]
        )
        rows = np.frombuffer(ffi.buffer(out, total), dtype=layout)
        return list(zip(rows["key"].tolist(), rows["sealed"].tolist(), strict=True))
    items = _pack.split(out, total, sizes, len(key_lens))
    return [(item[:k], item[k:]) for item, k in zip(items, key_lens, strict=True)]


_UNWRAP_MESSAGES: Final[Mapping[int, str]] = {
    lib.KP_E_LENGTH: "imported key material must be 256 bits",
}


def _check_context(context: bytes) -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValidationError(
            f"a wrapping context is at most {MAX_CONTEXT_BYTES} bytes"
        )
