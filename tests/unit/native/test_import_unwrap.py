"""Importing key material: RSA wrapping keys, and EncryptedKeyMaterial unwrapped into a
new AES slot, checked against what a client makes with ``cryptography`` exactly as AWS's
"Encrypt the key material" step describes.

A slot is shown to hold the material by sealing with a chosen IV through the hazmat
entry point and comparing with ``cryptography``'s AES-GCM under that material, by
opening ``cryptography``'s ciphertext through the service path, and by its material id
(HMAC-SHA-256 under the material).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import permutations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyplane.native._kp import ffi, lib

from keyplane.errors import (
    InvalidCiphertextError,
    InvalidKeyUsageError,
    KeyUnavailableError,
    MalformedNativeCallError,
    PartitionMismatchError,
    PartitionUnavailableError,
    ValidationError,
)
from keyplane.native import (
    MATERIAL_ID_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_IMPORT_BYTES,
    WRAPPING_ALGORITHMS,
    NativeHsm,
    hazmat,
)

ALGORITHMS = list(WRAPPING_ALGORITHMS)
SIZES = [2048, 3072]  # 4096 bits takes seconds to generate: see its own test


def oaep(algorithm: str) -> padding.OAEP:
    # SHA-1 because AWS offers it: RSAES_OAEP_SHA_1 and RSA_AES_KEY_WRAP_SHA_1.
    digest = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None
    )


def client_wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """EncryptedKeyMaterial as a client makes it for AWS: RSA-OAEP of the material, or
    RSA-OAEP of a fresh AES-256 key followed by that key's KWP wrap of the material."""
    public = load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep(algorithm))
    ephemeral = os.urandom(32)
    return public.encrypt(ephemeral, oaep(algorithm)) + aes_key_wrap_with_padding(
        ephemeral, material
    )


def unwrap(hsm, partition, wrapping, algorithm: str, encrypted: bytes) -> int:
    return hsm.keyslot_unwrap_import(
        partition, wrapping, WRAPPING_ALGORITHMS[algorithm], encrypted
    )


def assert_holds(hsm: NativeHsm, partition: int, handle: int, material: bytes) -> None:
    """The slot's key is ``material``, shown three independent ways."""
    iv, plaintext, aad = os.urandom(12), os.urandom(45), b"proof"
    expected = AESGCM(material).encrypt(iv, plaintext, aad)
    assert hazmat.seal_with_ivs(hsm, handle, [(iv, plaintext, aad)]) == [expected]
    assert hsm.decrypt_batch(partition, handle, [iv + expected], aad) == [plaintext]
    context = b"1234abcd-12ab-34cd-56ef-1234567890ab"
    assert hsm.keyslot_material_id(partition, handle, context) == (
        hmac.new(material, context, hashlib.sha256).digest()
    )


@dataclass
class Wrapping:
    partition: int
    handles: dict[int, int]  # bits -> handle
    public: dict[int, bytes]


@pytest.fixture(scope="module")
def shared_hsm() -> Iterator[NativeHsm]:
    h = NativeHsm(os.urandom(32))
    yield h
    h.close()


@pytest.fixture(scope="module")
def wrapping(shared_hsm: NativeHsm) -> Wrapping:
    """One wrapping key of each size, generated once for the module."""
    partition = shared_hsm.partition_create()
    handles = {
        bits: shared_hsm.wrapping_key_generate(partition, bits) for bits in SIZES
    }
    public = {
        bits: shared_hsm.wrapping_key_public(partition, h)
        for bits, h in handles.items()
    }
    return Wrapping(partition, handles, public)


@pytest.fixture(scope="module")
def other_wrapping(shared_hsm: NativeHsm, wrapping: Wrapping) -> int:
    return shared_hsm.wrapping_key_generate(wrapping.partition, 2048)


# --- the round trip -------------------------------------------------------------------


@pytest.mark.parametrize("bits", SIZES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unwraps_into_a_slot_that_holds_the_material(
    shared_hsm, wrapping, algorithm, bits
):
    material = os.urandom(32)
    encrypted = client_wrap(wrapping.public[bits], algorithm, material)
    before = shared_hsm.slot_count()
    handle = unwrap(
        shared_hsm, wrapping.partition, wrapping.handles[bits], algorithm, encrypted
    )
    assert shared_hsm.slot_count() == before + 1
    assert handle not in wrapping.handles.values()
    assert_holds(shared_hsm, wrapping.partition, handle, material)
    # The wrapping key stays usable: AWS lets the same token import again.
    again = unwrap(
        shared_hsm, wrapping.partition, wrapping.handles[bits], algorithm, encrypted
    )
    assert again != handle
    assert_holds(shared_hsm, wrapping.partition, again, material)


@pytest.mark.parametrize("bits", SIZES)
def test_public_key_is_rsa_of_its_size_with_e_65537(wrapping, bits):
    public = load_der_public_key(wrapping.public[bits])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == bits
    assert public.public_numbers().e == 65537


def test_every_wrapping_key_is_its_own(wrapping, other_wrapping, shared_hsm):
    other = shared_hsm.wrapping_key_public(wrapping.partition, other_wrapping)
    assert len({other, *wrapping.public.values()}) == 3


def test_a_4096_bit_key_generates_without_holding_the_gil_and_unwraps():
    """The lead runs generation on a worker thread: the event loop must keep running
    meanwhile, which it can only if the native call releases the GIL."""
    hsm = NativeHsm(os.urandom(32))
    try:
        partition = hsm.partition_create()
        span: dict[str, float] = {}
        result: dict[str, int] = {}

        def generate() -> None:
            span["start"] = time.monotonic()
            result["handle"] = hsm.wrapping_key_generate(partition, 4096)
            span["end"] = time.monotonic()

        worker = threading.Thread(target=generate)
        ticks: list[float] = []
        worker.start()
        while worker.is_alive():
            ticks.append(time.monotonic())
            time.sleep(0.001)
        worker.join()
        # Ticks well inside the native call prove this thread ran while it did.
        margin = 0.02
        inside = [t for t in ticks if span["start"] + margin < t < span["end"] - margin]
        assert span["end"] - span["start"] > 4 * margin, "generation was too quick"
        assert len(inside) >= 5

        handle = result["handle"]
        public_der = hsm.wrapping_key_public(partition, handle)
        public = load_der_public_key(public_der)
        assert isinstance(public, rsa.RSAPublicKey)
        assert (public.key_size, public.public_numbers().e) == (4096, 65537)
        for algorithm in ("RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"):
            material = os.urandom(32)
            encrypted = client_wrap(public_der, algorithm, material)
            assert len(encrypted) >= 512
            slot = unwrap(hsm, partition, handle, algorithm, encrypted)
            assert_holds(hsm, partition, slot, material)
    finally:
        hsm.close()


# --- ciphertexts that must not unwrap -------------------------------------------------


@pytest.mark.parametrize(("made_with", "read_as"), list(permutations(ALGORITHMS, 2)))
def test_another_algorithm_does_not_unwrap(shared_hsm, wrapping, made_with, read_as):
    encrypted = client_wrap(wrapping.public[2048], made_with, os.urandom(32))
    with pytest.raises(InvalidCiphertextError):
        unwrap(
            shared_hsm, wrapping.partition, wrapping.handles[2048], read_as, encrypted
        )


def alterations(encrypted: bytes) -> dict[str, bytes]:
    middle = len(encrypted) // 2
    flipped = {}
    for name, at in (("first", 0), ("middle", middle), ("last", len(encrypted) - 1)):
        changed = bytearray(encrypted)
        changed[at] ^= 0x01
        flipped[f"bit flipped in the {name} byte"] = bytes(changed)
    return {
        "truncated by a byte": encrypted[:-1],
        "truncated by a block": encrypted[:-8],
        "extended by a byte": encrypted + b"\0",
        "extended by a block": encrypted + bytes(8),
        "doubled": encrypted + encrypted,
        **flipped,
    }


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_altered_ciphertexts_fail_authentication(shared_hsm, wrapping, algorithm):
    encrypted = client_wrap(wrapping.public[2048], algorithm, os.urandom(32))
    before = shared_hsm.slot_count()
    for what, altered in alterations(encrypted).items():
        with pytest.raises(InvalidCiphertextError) as raised:
            unwrap(
                shared_hsm,
                wrapping.partition,
                wrapping.handles[2048],
                algorithm,
                altered,
            )
        assert str(raised.value) == "the ciphertext failed authentication", what
    assert shared_hsm.slot_count() == before


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if "KEY_WRAP" in a])
def test_the_key_wrap_half_is_authenticated_too(shared_hsm, wrapping, algorithm):
    """A good RSA block with another ciphertext's key wrap does not unwrap."""
    public = wrapping.public[2048]
    first = client_wrap(public, algorithm, os.urandom(32))
    second = client_wrap(public, algorithm, os.urandom(32))
    spliced = first[:256] + second[256:]
    with pytest.raises(InvalidCiphertextError):
        unwrap(
            shared_hsm, wrapping.partition, wrapping.handles[2048], algorithm, spliced
        )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_another_wrapping_key_does_not_unwrap(
    shared_hsm, wrapping, other_wrapping, algorithm
):
    encrypted = client_wrap(wrapping.public[2048], algorithm, os.urandom(32))
    with pytest.raises(InvalidCiphertextError):
        unwrap(shared_hsm, wrapping.partition, other_wrapping, algorithm, encrypted)


@pytest.mark.parametrize("length", [16, 31, 33, 48])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_material_that_is_not_256_bits_is_refused_for_its_length(
    shared_hsm, wrapping, algorithm, length
):
    encrypted = client_wrap(wrapping.public[2048], algorithm, os.urandom(length))
    before = shared_hsm.slot_count()
    with pytest.raises(
        ValidationError, match=r"^imported key material must be 256 bits$"
    ):
        unwrap(
            shared_hsm, wrapping.partition, wrapping.handles[2048], algorithm, encrypted
        )
    assert shared_hsm.slot_count() == before


def test_an_ephemeral_key_that_is_not_aes_256_does_not_unwrap(shared_hsm, wrapping):
    public = load_der_public_key(wrapping.public[2048])
    assert isinstance(public, rsa.RSAPublicKey)
    algorithm = "RSA_AES_KEY_WRAP_SHA_256"
    ephemeral = os.urandom(16)
    encrypted = public.encrypt(ephemeral, oaep(algorithm)) + aes_key_wrap_with_padding(
        ephemeral, os.urandom(32)
    )
    with pytest.raises(InvalidCiphertextError):
        unwrap(
            shared_hsm, wrapping.partition, wrapping.handles[2048], algorithm, encrypted
        )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    garbage=st.one_of(
        st.binary(min_size=1, max_size=700),
        # Lengths that pass the first checks: one modulus, or one plus a key wrap.
        st.binary(min_size=256, max_size=256),
        st.integers(2, 8).flatmap(
            lambda k: st.binary(min_size=256 + 8 * k, max_size=256 + 8 * k)
        ),
    ),
)
def test_garbage_never_unwraps(shared_hsm, wrapping, algorithm, garbage):
    with pytest.raises(InvalidCiphertextError):
        unwrap(
            shared_hsm, wrapping.partition, wrapping.handles[2048], algorithm, garbage
        )


@settings(max_examples=300, deadline=None)
@given(kek=st.binary(min_size=32, max_size=32), garbage=st.binary(max_size=200))
def test_garbage_never_passes_the_key_wrap_integrity_check(kek, garbage):
    with pytest.raises(InvalidCiphertextError):
        hazmat.kwp_unwrap(kek, garbage)


def test_key_wrap_unwraps_what_cryptography_wraps():
    kek = os.urandom(32)
    for length in (1, 7, 8, 9, 31, 32, 33, 64, 1000):
        material = os.urandom(length)
        assert (
            hazmat.kwp_unwrap(kek, aes_key_wrap_with_padding(kek, material)) == material
        )


# --- slots of the wrong kind, partition or life ---------------------------------------


def test_an_aes_slot_is_not_a_wrapping_key(hsm, partition, slot):
    encrypted = os.urandom(256)
    with pytest.raises(InvalidKeyUsageError):
        unwrap(hsm, partition, slot, "RSAES_OAEP_SHA_256", encrypted)
    with pytest.raises(InvalidKeyUsageError):
        hsm.wrapping_key_public(partition, slot)
    with pytest.raises(InvalidKeyUsageError):
        hsm.wrapping_key_export(partition, slot, b"token")


def test_a_wrapping_key_is_not_an_aes_key(shared_hsm, wrapping):
    h, p = shared_hsm, wrapping.partition
    wrapping_handle = wrapping.handles[2048]
    aes = h.keyslot_generate(p)
    [alone] = h.encrypt_batch(p, wrapping_handle, [b"x"])
    assert isinstance(alone, InvalidKeyUsageError)
    # In a batch it fails its own item only.
    mixed = h.encrypt_batch(p, [aes, wrapping_handle, aes], [b"x"] * 3)
    assert isinstance(mixed[1], InvalidKeyUsageError)
    assert isinstance(mixed[0], bytes)
    assert isinstance(mixed[2], bytes)
    [opened] = h.decrypt_batch(p, wrapping_handle, [bytes(40)])
    assert isinstance(opened, InvalidKeyUsageError)
    [data_key] = h.generate_data_key_batch(0, wrapping_handle, 32, 1)
    assert isinstance(data_key, InvalidKeyUsageError)
    with pytest.raises(InvalidKeyUsageError):
        h.keyslot_export(p, wrapping_handle, b"k")
    with pytest.raises(InvalidKeyUsageError):
        h.keyslot_material_id(p, wrapping_handle, b"k")
    [hazmat_sealed] = hazmat.seal_with_ivs(h, wrapping_handle, [(bytes(12), b"x", b"")])
    assert isinstance(hazmat_sealed, InvalidKeyUsageError)
    h.keyslot_destroy(p, aes)


def test_another_partitions_wrapping_key_is_refused(shared_hsm, wrapping):
    h = shared_hsm
    other = h.partition_create()
    wrapping_handle = wrapping.handles[2048]
    encrypted = client_wrap(wrapping.public[2048], "RSAES_OAEP_SHA_256", os.urandom(32))
    with pytest.raises(PartitionMismatchError):
        unwrap(h, other, wrapping_handle, "RSAES_OAEP_SHA_256", encrypted)
    with pytest.raises(PartitionMismatchError):
        h.wrapping_key_public(other, wrapping_handle)
    with pytest.raises(PartitionMismatchError):
        h.wrapping_key_export(other, wrapping_handle, b"")
    with pytest.raises(PartitionMismatchError):
        h.keyslot_destroy(other, wrapping_handle)
    imported = unwrap(
        h, wrapping.partition, wrapping_handle, "RSAES_OAEP_SHA_256", encrypted
    )
    with pytest.raises(PartitionMismatchError):
        h.keyslot_material_id(other, imported, b"")
    h.partition_destroy(other)
    with pytest.raises(PartitionUnavailableError):
        unwrap(h, other, wrapping_handle, "RSAES_OAEP_SHA_256", encrypted)
    with pytest.raises(PartitionUnavailableError):
        h.wrapping_key_generate(other, 2048)


def test_another_hsms_wrapping_key_is_refused(shared_hsm, wrapping):
    stranger = NativeHsm(os.urandom(32))
    try:
        partition = stranger.partition_create()
        with pytest.raises(PartitionMismatchError):
            stranger.wrapping_key_public(partition, wrapping.handles[2048])
    finally:
        stranger.close()


def test_a_destroyed_wrapping_key_is_gone(hsm, partition):
    wrapping_handle = hsm.wrapping_key_generate(partition, 2048)
    public = hsm.wrapping_key_public(partition, wrapping_handle)
    encrypted = client_wrap(public, "RSA_AES_KEY_WRAP_SHA_1", os.urandom(32))
    assert hsm.slot_count() == 1
    hsm.keyslot_destroy(partition, wrapping_handle)
    assert hsm.slot_count() == 0
    with pytest.raises(KeyUnavailableError):
        unwrap(hsm, partition, wrapping_handle, "RSA_AES_KEY_WRAP_SHA_1", encrypted)
    with pytest.raises(KeyUnavailableError):
        hsm.wrapping_key_public(partition, wrapping_handle)
    with pytest.raises(KeyUnavailableError):
        hsm.wrapping_key_export(partition, wrapping_handle, b"")
    with pytest.raises(KeyUnavailableError):
        hsm.keyslot_destroy(partition, wrapping_handle)
    # Handles are never reused: the next slot gets a new one.
    assert hsm.keyslot_generate(partition) != wrapping_handle


def test_destroying_a_partition_or_the_hsm_frees_wrapping_keys():
    h = NativeHsm(os.urandom(32))
    doomed, kept = h.partition_create(), h.partition_create()
    in_doomed = [h.wrapping_key_generate(doomed, 2048) for _ in range(2)]
    h.keyslot_generate(doomed)
    in_kept = h.wrapping_key_generate(kept, 2048)
    assert h.slot_count() == 4
    h.partition_destroy(doomed)
    assert h.slot_count() == 1
    with pytest.raises(KeyUnavailableError):
        h.wrapping_key_public(kept, in_doomed[0])
    assert h.wrapping_key_public(kept, in_kept)
    h.close()  # with a wrapping key still live: must free it (ASan checks)


# --- sealing the private key for the import token's lifetime --------------------------


def test_export_and_open_round_trip(shared_hsm, wrapping):
    h, p = shared_hsm, wrapping.partition
    original = wrapping.handles[2048]
    token = b"import-token-7f3a"
    sealed = h.wrapping_key_export(p, original, token)
    assert sealed != h.wrapping_key_export(p, original, token)  # a fresh IV each time
    reopened = h.wrapping_key_open(p, sealed, token)
    assert reopened != original
    assert h.wrapping_key_public(p, reopened) == wrapping.public[2048]
    for algorithm in ALGORITHMS:
        material = os.urandom(32)
        encrypted = client_wrap(wrapping.public[2048], algorithm, material)
        assert_holds(h, p, unwrap(h, p, reopened, algorithm, encrypted), material)
    h.keyslot_destroy(p, reopened)
    assert h.wrapping_key_public(p, original) == wrapping.public[2048]


def test_open_refuses_another_context_partition_or_alteration(shared_hsm, wrapping):
    h, p = shared_hsm, wrapping.partition
    sealed = h.wrapping_key_export(p, wrapping.handles[2048], b"token-1")
    other = h.partition_create()
    refused = {
        "another context": (p, sealed, b"token-2"),
        "no context": (p, sealed, b""),
        "another partition": (other, sealed, b"token-1"),
        "truncated": (p, sealed[:-1], b"token-1"),
        "a flipped bit": (
            p,
            sealed[:40] + bytes([sealed[40] ^ 4]) + sealed[41:],
            b"token-1",
        ),
    }
    for what, (partition, blob, context) in refused.items():
        with pytest.raises(InvalidCiphertextError):
            h.wrapping_key_open(partition, blob, context)
        assert what
    # Version 1 (PKCS #1 DER inside) is no longer read; 3 does not exist yet.
    for blob in (
        sealed[:29],
        b"\x01" + sealed[1:],
        b"\x03" + sealed[1:],
        sealed + bytes(4096),
    ):
        with pytest.raises(MalformedNativeCallError):
            h.wrapping_key_open(p, blob, b"token-1")
    h.partition_destroy(other)


def test_sealed_wrapping_keys_and_sealed_aes_keys_do_not_mix(hsm, partition, slot):
    """Both are sealed under the partition key. Their version bytes differ, and with
    the version byte forged their labels still keep them apart."""
    sealed_aes = hsm.keyslot_export(partition, slot, b"")
    with pytest.raises(MalformedNativeCallError):
        hsm.wrapping_key_open(partition, sealed_aes, b"")
    with pytest.raises(InvalidCiphertextError):
        hsm.wrapping_key_open(partition, b"\x02" + sealed_aes[1:], b"")
    wrapping_handle = hsm.wrapping_key_generate(partition, 2048)
    sealed_rsa = hsm.wrapping_key_export(partition, wrapping_handle, b"")
    with pytest.raises(MalformedNativeCallError):
        hsm.keyslot_import(partition, sealed_rsa, b"")
    # Cut to an AES key's length, a sealed wrapping key still does not open as one.
    with pytest.raises(MalformedNativeCallError):
        hsm.keyslot_import(partition, sealed_rsa[:61], b"")
    with pytest.raises(InvalidCiphertextError):
        hsm.keyslot_import(partition, b"\x01" + sealed_rsa[1:61], b"")


def test_a_sealed_wrapping_key_survives_a_restart():
    """The store keeps the partition and the sealed key; a restarted HSM under the same
    root key reopens both and unwraps what a client made before the restart."""
    root = os.urandom(32)
    first = NativeHsm(root)
    p = first.partition_create()
    wrapping_handle = first.wrapping_key_generate(p, 2048)
    public = first.wrapping_key_public(p, wrapping_handle)
    stored = (
        first.partition_export(p),
        first.wrapping_key_export(p, wrapping_handle, b"t"),
    )
    first.close()

    material = os.urandom(32)
    encrypted = client_wrap(public, "RSA_AES_KEY_WRAP_SHA_256", material)
    second = NativeHsm(root)
    try:
        p2 = second.partition_open(stored[0])
        reopened = second.wrapping_key_open(p2, stored[1], b"t")
        assert second.wrapping_key_public(p2, reopened) == public
        slot = unwrap(second, p2, reopened, "RSA_AES_KEY_WRAP_SHA_256", encrypted)
        assert_holds(second, p2, slot, material)
    finally:
        second.close()


# --- material ids ---------------------------------------------------------------------


def test_material_id_names_material_not_slots(shared_hsm, wrapping):
    h, p = shared_hsm, wrapping.partition
    material = os.urandom(32)
    public = wrapping.public[2048]
    first = unwrap(
        h,
        p,
        wrapping.handles[2048],
        "RSAES_OAEP_SHA_1",
        client_wrap(public, "RSAES_OAEP_SHA_1", material),
    )
    second = unwrap(
        h,
        p,
        wrapping.handles[3072],
        "RSA_AES_KEY_WRAP_SHA_256",
        client_wrap(wrapping.public[3072], "RSA_AES_KEY_WRAP_SHA_256", material),
    )
    different = unwrap(
        h,
        p,
        wrapping.handles[2048],
        "RSAES_OAEP_SHA_1",
        client_wrap(public, "RSAES_OAEP_SHA_1", os.urandom(32)),
    )
    key_id = b"1234abcd-12ab-34cd-56ef-1234567890ab"
    ids = {s: h.keyslot_material_id(p, s, key_id) for s in (first, second, different)}
    assert ids[first] == ids[second] != ids[different]
    assert len(ids[first]) == MATERIAL_ID_BYTES
    assert h.keyslot_material_id(p, first, b"another key id") != ids[first]
    assert (
        h.keyslot_material_id(p, first, b"")
        == hmac.new(material, b"", hashlib.sha256).digest()
    )
    long_context = bytes(MAX_CONTEXT_BYTES)
    assert h.keyslot_material_id(p, first, long_context) == (
        hmac.new(material, long_context, hashlib.sha256).digest()
    )
    with pytest.raises(ValidationError):
        h.keyslot_material_id(p, first, long_context + b"x")


def test_material_id_of_generated_keys_follows_the_key(hsm, partition, slot):
    wrapped = hsm.keyslot_export(partition, slot, b"v1")
    restored = hsm.keyslot_import(partition, wrapped, b"v1")
    other = hsm.keyslot_generate(partition)
    ids = [
        hsm.keyslot_material_id(partition, s, b"key") for s in (slot, restored, other)
    ]
    assert ids[0] == ids[1] != ids[2]


# --- input checks, in Python and again in C -------------------------------------------


def test_python_refuses_out_of_range_inputs(shared_hsm, wrapping):
    h, p = shared_hsm, wrapping.partition
    for bits in (0, 1024, 2047, 8192):
        with pytest.raises(ValidationError):
            h.wrapping_key_generate(p, bits)
    for encrypted in (b"", bytes(MAX_IMPORT_BYTES + 1)):
        with pytest.raises(ValidationError):
            unwrap(h, p, wrapping.handles[2048], "RSAES_OAEP_SHA_256", encrypted)
    too_long = bytes(MAX_CONTEXT_BYTES + 1)
    with pytest.raises(ValidationError):
        h.wrapping_key_export(p, wrapping.handles[2048], too_long)
    with pytest.raises(ValidationError):
        h.wrapping_key_open(p, bytes(100), too_long)
    with pytest.raises(MalformedNativeCallError):
        h.keyslot_unwrap_import(p, wrapping.handles[2048], 99, bytes(256))


def test_c_checks_its_own_inputs(shared_hsm, wrapping):
    h, p = shared_hsm.ptr, wrapping.partition
    w = wrapping.handles[2048]
    handle = ffi.new("kp_handle *")
    length = ffi.new("size_t *")
    big = ffi.new("uint8_t[]", 8192)
    # Sizes and arguments refused before any key is generated.
    assert lib.kp_wrapping_key_generate(h, p, 1024, handle) == lib.KP_E_LENGTH
    assert lib.kp_wrapping_key_generate(h, p, 2048, ffi.NULL) == lib.KP_E_ARGUMENT
    assert lib.kp_wrapping_key_generate(ffi.NULL, p, 2048, handle) == lib.KP_E_ARGUMENT
    started = time.monotonic()
    assert (
        lib.kp_wrapping_key_generate(h, 0xFFFF, 4096, handle) == lib.KP_E_PARTITION_GONE
    )
    assert time.monotonic() - started < 0.05  # refused before, not after, generating
    # Output buffers too small for what they must hold.
    assert lib.kp_wrapping_key_public(h, p, w, big, 100, length) == lib.KP_E_BUFFER
    assert length[0] == 0
    assert (
        lib.kp_wrapping_key_export(h, p, w, b"", 0, big, 1000, length)
        == lib.KP_E_BUFFER
    )
    assert lib.kp_wrapping_key_export(h, p, w, ffi.NULL, 1, big, 8192, length) == (
        lib.KP_E_ARGUMENT
    )
    assert lib.kp_wrapping_key_export(h, p, w, big, 1025, big, 8192, length) == (
        lib.KP_E_LENGTH
    )
    aes = shared_hsm.keyslot_generate(p)
    assert lib.kp_keyslot_material_id(h, p, aes, b"", 0, big, 31) == lib.KP_E_BUFFER
    assert lib.kp_keyslot_material_id(h, p, aes, big, 1025, big, 32) == lib.KP_E_LENGTH
    assert (
        lib.kp_keyslot_material_id(h, p, aes, b"", 0, ffi.NULL, 32) == lib.KP_E_ARGUMENT
    )
    # Unwrap: unknown algorithms, lengths outside the API's, NULL input.
    for algorithm in (0, 5, -1):
        assert lib.kp_keyslot_unwrap_import(h, p, w, algorithm, big, 256, handle) == (
            lib.KP_E_ARGUMENT
        )
    for n in (0, MAX_IMPORT_BYTES + 1):
        assert (
            lib.kp_keyslot_unwrap_import(h, p, w, 2, big, n, handle) == lib.KP_E_LENGTH
        )
    assert lib.kp_keyslot_unwrap_import(h, p, w, 2, ffi.NULL, 256, handle) == (
        lib.KP_E_ARGUMENT
    )
    # Open: lengths and versions no export has.
    for n in (0, 29, 4097):
        assert (
            lib.kp_wrapping_key_open(h, p, big, n, b"", 0, handle) == lib.KP_E_ARGUMENT
        )
    # The test-only key unwrap.
    kek = os.urandom(32)
    assert (
        lib.kp_hazmat_kwp_unwrap(kek, 16, big, 40, big, 32, length) == lib.KP_E_LENGTH
    )
    for n in (0, 8, 15, 17, 41, MAX_IMPORT_BYTES + 8):
        assert (
            lib.kp_hazmat_kwp_unwrap(kek, 32, big, n, big, 8192, length)
            == lib.KP_E_AUTH
        )
    wrapped = aes_key_wrap_with_padding(kek, bytes(32))
    assert (
        lib.kp_hazmat_kwp_unwrap(kek, 32, wrapped, 40, big, 31, length)
        == lib.KP_E_BUFFER
    )
    assert lib.kp_hazmat_kwp_unwrap(kek, 32, wrapped, 40, big, 32, length) == lib.KP_OK
    assert length[0] == 32
    shared_hsm.keyslot_destroy(p, aes)


# --- threads --------------------------------------------------------------------------


def test_concurrent_unwraps_and_a_destroy(hsm, partition):
    """Unwraps on several threads share one wrapping key while it is destroyed: each
    either imports the right material or finds the key gone; nothing else happens."""
    wrapping_handle = hsm.wrapping_key_generate(partition, 2048)
    public = hsm.wrapping_key_public(partition, wrapping_handle)
    jobs = [
        (algorithm, material, client_wrap(public, algorithm, material))
        for algorithm in ALGORITHMS
        for material in [os.urandom(32) for _ in range(6)]
    ]
    outcomes: list[tuple[bytes, int | Exception]] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def work(share: list[tuple[str, bytes, bytes]]) -> None:
        start.wait()
        for algorithm, material, encrypted in share:
            try:
                result: int | Exception = unwrap(
                    hsm, partition, wrapping_handle, algorithm, encrypted
                )
            except KeyUnavailableError as gone:
                result = gone
            with lock:
                outcomes.append((material, result))

    def destroy() -> None:
        start.wait()
        time.sleep(0.01)
        hsm.keyslot_destroy(partition, wrapping_handle)

    threads = [threading.Thread(target=work, args=(jobs[i::4],)) for i in range(4)]
    threads.append(threading.Thread(target=destroy))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == len(jobs)
    imported = [(m, r) for m, r in outcomes if isinstance(r, int)]
    for material, handle in imported:
        assert_holds(hsm, partition, handle, material)
    assert hsm.slot_count() == len(imported)
