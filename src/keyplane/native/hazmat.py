"""Hazardous entry points for known-answer tests only: raw keys and chosen IVs.

A raw key entering in plaintext and a caller-chosen IV both break what the HSM
otherwise guarantees (key material enters only wrapped; every IV is fresh and random).
Known-answer vectors need exactly those, so they live here, apart, and nothing in
keyplane imports this module; tests/unit/test_layering.py checks that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keyplane.native import _pack
from keyplane.native._hsm import NativeHsm, Result, _with_failures
from keyplane.native._kp import ffi, lib
from keyplane.native._status import raise_for_status

# (IV, input, AAD): the input is a plaintext to seal, or ciphertext || tag to open.
Item = tuple[bytes, bytes, bytes]


def import_raw_key(hsm: NativeHsm, partition: int, key: bytearray) -> int:
    """Put a raw 32-byte key into a new slot; the caller's copy is zeroed.

    Raises:
        ValidationError: the key is not 32 bytes.
    """
    try:
        out = ffi.new("kp_handle *")
        raise_for_status(
            lib.kp_hazmat_import_raw(
                hsm.ptr, partition, ffi.from_buffer(key), len(key), out
            )
        )
        return int(out[0])
    finally:
        key[:] = bytes(len(key))


def seal_with_ivs(
    hsm: NativeHsm,
    handles: int | Sequence[int],
    items: Sequence[Item],
    tag_bytes: int | Sequence[int] = 16,
) -> list[Result]:
    """Seal each (IV, plaintext, AAD) with its chosen IV: ``ciphertext || tag``."""
    return _run(lib.kp_hazmat_seal_batch, hsm, handles, items, tag_bytes, sealing=True)


def open_with_ivs(
    hsm: NativeHsm,
    handles: int | Sequence[int],
    items: Sequence[Item],
    tag_bytes: int | Sequence[int] = 16,
) -> list[Result]:
    """Open each (IV, ciphertext || tag, AAD): the plaintext or the item's error."""
    return _run(lib.kp_hazmat_open_batch, hsm, handles, items, tag_bytes, sealing=False)


def _run(
    call: Any,
    hsm: NativeHsm,
    handles: int | Sequence[int],
    items: Sequence[Item],
    tag_bytes: int | Sequence[int],
    *,
    sealing: bool,
) -> list[Result]:
    n = len(items)
    if n == 0:
        return []
    small = _pack.scratch_for(n)
    ivs_, ins_, aads_ = zip(*items, strict=True)
    ivs = _pack.column(ivs_, small, "iv")
    ins = _pack.column(ins_, small, "in")
    aads = _pack.column(aads_, small, "aad")
    handle_ptr, _keep_handles = _pack.handles(handles, n, small)
    tag_lens = [tag_bytes] * n if isinstance(tag_bytes, int) else list(tag_bytes)
    tag_ptr, _keep_tags = _pack.size_array(tag_lens, small, "tag")
    pairs = zip(ins[2], tag_lens, strict=True)
    if sealing:
        sizes = [i + t for i, t in pairs]
    else:
        sizes = [i - t if i > t else 0 for i, t in pairs]
    total = sum(sizes)
    out = _pack.output_buffer(total, small)
    status = _pack.status_array(n, small)
    try:
        raise_for_status(
            call(
                hsm.ptr,
                n,
                handle_ptr,
                ivs[0],
                len(ivs[0]),
                ffi.NULL,
                ivs[1],
                ins[0],
                len(ins[0]),
                ffi.NULL,
                ins[1],
                aads[0],
                len(aads[0]),
                ffi.NULL,
                aads[1],
                tag_ptr,
                out,
                total,
                ffi.NULL,
                status,
            )
        )
        results = _pack.split(out, total, sizes, n)
    finally:
        _pack.wipe(out, total)
    return _with_failures(results, status, n)


def kwp_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """AES key unwrap with padding (NIST SP 800-38F KWP-AD) under a raw 256-bit KEK,
    through the function the import path uses: the plaintext, returned.

    Raises:
        InvalidCiphertextError: the integrity check failed, or ``wrapped`` has a length
            no key wrap can have.
        ValidationError: the KEK is not 32 bytes.
    """
    size = max(len(wrapped) - 8, 1)
    out = ffi.new("uint8_t[]", size)
    written = ffi.new("size_t *")
    try:
        raise_for_status(
            lib.kp_hazmat_kwp_unwrap(
                kek, len(kek), wrapped, len(wrapped), out, size, written
            )
        )
        plaintext: bytes = ffi.buffer(out, written[0])[:]
    finally:
        _pack.wipe(out, size)
    return plaintext
