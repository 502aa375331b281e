"""The C API's own checks, reached directly through the FFI: the Python wrapper never
builds these calls, but C must refuse them on its own (defence in depth)."""

from __future__ import annotations

import os

import pytest
from keyplane.native._kp import ffi, lib

from keyplane.errors import BufferSizeError, HsmFaultError, MalformedNativeCallError
from keyplane.native._status import error_for, item_error


def _sizes(*values):
    return ffi.new("size_t[]", list(values))


def _encrypt(hsm, scope, handles, data, in_off, in_len, out_size, out_off):
    n = len(handles)
    status = ffi.new("kp_status[]", n)
    out = ffi.new("uint8_t[]", max(out_size, 1))
    rc = lib.kp_encrypt_batch(
        hsm.ptr,
        scope,
        n,
        ffi.new("kp_handle[]", handles),
        data,
        len(data),
        _sizes(*in_off),
        _sizes(*in_len),
        ffi.NULL,
        0,
        ffi.NULL,
        ffi.NULL,
        out,
        out_size,
        _sizes(*out_off),
        status,
    )
    return rc, list(status)


def test_short_output_fails_only_its_item(hsm, partition, slot):
    # Item 1 needs 10 + 28 bytes at offset 38 but the buffer ends at 70.
    rc, status = _encrypt(
        hsm, partition, [slot, slot], b"a" * 20, [0, 10], [10, 10], 70, [0, 38]
    )
    assert rc == lib.KP_OK
    assert status == [lib.KP_OK, lib.KP_E_BUFFER]
    assert isinstance(error_for(status[1]), BufferSizeError)


def test_input_range_outside_its_buffer(hsm, partition, slot):
    huge = 2**64 - 5  # an offset that overflows when the length is added
    rc, status = _encrypt(
        hsm,
        partition,
        [slot, slot, slot],
        b"a" * 20,
        [15, huge, 0],
        [10, 10, 10],
        200,
        [0, 50, 100],
    )
    assert rc == lib.KP_OK
    assert status == [lib.KP_E_BUFFER, lib.KP_E_BUFFER, lib.KP_OK]


def test_output_offset_overflow(hsm, partition, slot):
    rc, status = _encrypt(
        hsm, partition, [slot], b"a" * 10, [0], [10], 100, [2**64 - 1]
    )
    assert (rc, status) == (lib.KP_OK, [lib.KP_E_BUFFER])


def test_malformed_calls_are_refused_whole(hsm, partition, slot):
    status = ffi.new("kp_status[]", 1)
    one = _sizes(1)
    args = (
        ffi.new("kp_handle[]", [slot]),
        b"x",
        1,
        _sizes(0),
        one,
        ffi.NULL,
        0,
        ffi.NULL,
        ffi.NULL,
        ffi.new("uint8_t[]", 64),
        64,
        _sizes(0),
        status,
    )
    assert lib.kp_encrypt_batch(ffi.NULL, partition, 1, *args) == lib.KP_E_ARGUMENT
    assert (
        lib.kp_encrypt_batch(hsm.ptr, partition, lib.KP_MAX_BATCH + 1, *args)
        == lib.KP_E_ARGUMENT
    )
    no_status = (*args[:-1], ffi.NULL)
    assert lib.kp_encrypt_batch(hsm.ptr, partition, 1, *no_status) == lib.KP_E_ARGUMENT
    # Only one of the two AAD arrays given.
    half_aad = (*args[:7], one, ffi.NULL, *args[9:])
    assert lib.kp_encrypt_batch(hsm.ptr, partition, 1, *half_aad) == lib.KP_E_ARGUMENT
    # A NULL buffer that claims a size.
    null_in = (args[0], ffi.NULL, 1, *args[3:])
    assert lib.kp_encrypt_batch(hsm.ptr, partition, 1, *null_in) == lib.KP_E_ARGUMENT
    assert lib.kp_encrypt_batch(hsm.ptr, partition, 0, *args) == lib.KP_OK


def test_every_status_maps_to_one_error_class():
    codes = [getattr(lib, name) for name in dir(lib) if name.startswith("KP_E_")]
    assert len(codes) == 12
    for code in codes:
        assert error_for(code).__class__.__name__.endswith("Error")
    assert isinstance(error_for(999), HsmFaultError)


def test_faults_raise_instead_of_failing_an_item():
    for code in (lib.KP_E_NOMEM, lib.KP_E_RANDOM, lib.KP_E_CRYPTO):
        with pytest.raises(HsmFaultError):
            item_error(code)
    with pytest.raises(MalformedNativeCallError):
        item_error(lib.KP_E_ARGUMENT)
    assert isinstance(item_error(lib.KP_E_BUFFER), BufferSizeError)


def test_wrapped_key_formats_are_checked(hsm, partition, slot):
    out = ffi.new("kp_partition *")
    assert lib.kp_partition_open(hsm.ptr, b"x" * 60, 60, out) == lib.KP_E_ARGUMENT
    wrapped = bytearray(hsm.keyslot_export(partition, slot))
    wrapped[0] ^= 0xFF  # unknown version
    handle = ffi.new("kp_handle *")
    assert (
        lib.kp_keyslot_import(
            hsm.ptr, partition, bytes(wrapped), len(wrapped), ffi.NULL, 0, handle
        )
        == lib.KP_E_ARGUMENT
    )
    long_context = os.urandom(lib.KP_MAX_CONTEXT_BYTES + 1)
    written = ffi.new("size_t *")
    buf = ffi.new("uint8_t[]", 100)
    assert (
        lib.kp_keyslot_export(
            hsm.ptr, partition, slot, long_context, len(long_context), buf, 100, written
        )
        == lib.KP_E_LENGTH
    )
    assert (
        lib.kp_keyslot_export(hsm.ptr, partition, slot, ffi.NULL, 0, buf, 10, written)
        == lib.KP_E_BUFFER
    )


def test_memory_lock_state_is_reported():
    assert lib.kp_memory_locked() in (0, 1)
