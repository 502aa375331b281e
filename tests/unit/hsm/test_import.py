"""Importing key material through the HSM layer: wrapping keys as KeySlots, AWS's
wrapping algorithm names, partition isolation, and sealed wrapping keys that outlive a
restart."""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import pickle
import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from cryptography.hazmat.primitives.serialization import load_der_public_key

from keyplane.errors import (
    InvalidCiphertextError,
    InvalidKeyUsageError,
    KeyUnavailableError,
    PartitionMismatchError,
    ValidationError,
)
from keyplane.hsm import Hsm, KeySlot, Partition, Tenancy

AWS_ALGORITHMS = [
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
]


def client_wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """What a client sends as EncryptedKeyMaterial for ``algorithm``."""
    public = load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    # SHA-1 because AWS offers it: RSAES_OAEP_SHA_1 and RSA_AES_KEY_WRAP_SHA_1.
    digest = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None
    )
    if algorithm.startswith("RSAES"):
        return public.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(
        ephemeral, material
    )


def assert_holds(partition: Partition, slot: KeySlot, material: bytes) -> None:
    """The slot opens what AES-GCM under ``material`` sealed, and names the material by
    its HMAC."""
    iv, plaintext = os.urandom(12), os.urandom(30)
    sealed = iv + AESGCM(material).encrypt(iv, plaintext, b"aad")
    assert partition.decrypt_batch(slot, [sealed], b"aad") == [plaintext]
    assert partition.material_id(slot, b"key-id") == (
        hmac.new(material, b"key-id", hashlib.sha256).digest()
    )


@pytest.fixture(scope="module")
def hsm() -> Iterator[Hsm]:
    h = Hsm(bytearray(os.urandom(32)))
    yield h
    h.close()


@pytest.fixture(scope="module")
def partition(hsm: Hsm) -> Partition:
    return hsm.create_partition()


@pytest.fixture(scope="module")
def wrapping_key(partition: Partition) -> KeySlot:
    return partition.generate_wrapping_key(2048)


@pytest.mark.parametrize("algorithm", AWS_ALGORITHMS)
def test_unwrap_import_by_aws_algorithm_name(partition, wrapping_key, algorithm):
    public = partition.wrapping_public_key(wrapping_key)
    material = os.urandom(32)
    slot = partition.unwrap_import(
        wrapping_key, algorithm, client_wrap(public, algorithm, material)
    )
    assert isinstance(slot, KeySlot)
    assert slot.partition is partition
    assert_holds(partition, slot, material)


@pytest.mark.parametrize(
    "name", ["RSAES_PKCS1_V1_5", "SM2PKE", "rsaes_oaep_sha_256", "", "RSAES_OAEP"]
)
def test_unknown_algorithm_names_are_refused(partition, wrapping_key, name):
    with pytest.raises(ValidationError, match="unknown wrapping algorithm"):
        partition.unwrap_import(wrapping_key, name, os.urandom(256))


def test_what_does_not_unwrap_is_an_invalid_ciphertext(partition, wrapping_key):
    public = partition.wrapping_public_key(wrapping_key)
    encrypted = client_wrap(public, "RSAES_OAEP_SHA_256", os.urandom(32))
    with pytest.raises(InvalidCiphertextError):
        partition.unwrap_import(wrapping_key, "RSAES_OAEP_SHA_1", encrypted)
    with pytest.raises(InvalidCiphertextError):
        partition.unwrap_import(wrapping_key, "RSA_AES_KEY_WRAP_SHA_256", encrypted)
    short = client_wrap(public, "RSA_AES_KEY_WRAP_SHA_1", os.urandom(16))
    with pytest.raises(ValidationError, match="must be 256 bits"):
        partition.unwrap_import(wrapping_key, "RSA_AES_KEY_WRAP_SHA_1", short)


def test_a_wrapping_key_slot_carries_no_material(wrapping_key):
    assert not any(
        isinstance(getattr(wrapping_key, name, None), bytes | bytearray)
        for name in dir(wrapping_key)
    )
    assert repr(wrapping_key).startswith("KeySlot(partition=")
    with pytest.raises(TypeError):
        pickle.dumps(wrapping_key)
    with pytest.raises(TypeError):
        copy.copy(wrapping_key)


def test_slots_of_the_wrong_kind_are_refused(partition, wrapping_key):
    aes = partition.generate_key()
    with pytest.raises(InvalidKeyUsageError):
        partition.unwrap_import(aes, "RSAES_OAEP_SHA_256", os.urandom(256))
    with pytest.raises(InvalidKeyUsageError):
        partition.wrapping_public_key(aes)
    with pytest.raises(InvalidKeyUsageError):
        partition.export_wrapping_key(aes)
    with pytest.raises(InvalidKeyUsageError):
        partition.material_id(wrapping_key, b"")
    with pytest.raises(InvalidKeyUsageError):
        partition.export_key(wrapping_key)
    [sealed] = partition.encrypt_batch(wrapping_key, [b"x"])
    assert isinstance(sealed, InvalidKeyUsageError)
    partition.destroy_key(aes)


def test_another_partitions_slots_are_refused(hsm, partition, wrapping_key):
    other = hsm.create_partition()
    imported = partition.unwrap_import(
        wrapping_key,
        "RSAES_OAEP_SHA_256",
        client_wrap(
            partition.wrapping_public_key(wrapping_key),
            "RSAES_OAEP_SHA_256",
            os.urandom(32),
        ),
    )
    for call in (
        lambda: other.unwrap_import(wrapping_key, "RSAES_OAEP_SHA_256", bytes(256)),
        lambda: other.wrapping_public_key(wrapping_key),
        lambda: other.export_wrapping_key(wrapping_key),
        lambda: other.destroy_key(wrapping_key),
        lambda: other.material_id(imported, b""),
    ):
        with pytest.raises(PartitionMismatchError):
            call()
    sealed = partition.export_wrapping_key(wrapping_key, b"token")
    with pytest.raises(InvalidCiphertextError):
        other.open_wrapping_key(sealed, b"token")
    other.destroy()


def test_destroy_key_destroys_a_wrapping_key(partition):
    doomed = partition.generate_wrapping_key(2048)
    native = partition.native
    before = native.slot_count()
    partition.destroy_key(doomed)
    assert native.slot_count() == before - 1
    with pytest.raises(KeyUnavailableError):
        partition.wrapping_public_key(doomed)
    with pytest.raises(KeyUnavailableError):
        partition.destroy_key(doomed)


def test_generate_rejects_other_sizes(partition):
    for bits in (1024, 2049, 8192):
        with pytest.raises(ValidationError):
            partition.generate_wrapping_key(bits)


def test_context_limits(partition, wrapping_key):
    too_long = bytes(1025)
    with pytest.raises(ValidationError):
        partition.export_wrapping_key(wrapping_key, too_long)
    with pytest.raises(ValidationError):
        partition.open_wrapping_key(bytes(100), too_long)
    aes = partition.generate_key()
    with pytest.raises(ValidationError):
        partition.material_id(aes, too_long)
    partition.destroy_key(aes)


def test_a_dedicated_partition_imports_too(hsm):
    dedicated = hsm.create_partition(Tenancy.DEDICATED)
    try:
        wrapping = dedicated.generate_wrapping_key(2048)
        material = os.urandom(32)
        public = dedicated.wrapping_public_key(wrapping)
        slot = dedicated.unwrap_import(
            wrapping,
            "RSA_AES_KEY_WRAP_SHA_256",
            client_wrap(public, "RSA_AES_KEY_WRAP_SHA_256", material),
        )
        assert_holds(dedicated, slot, material)
    finally:
        dedicated.destroy()


def test_generation_runs_on_a_worker_thread(partition):
    made: list[KeySlot] = []
    worker = threading.Thread(
        target=lambda: made.append(partition.generate_wrapping_key(3072))
    )
    worker.start()
    worker.join()
    public = load_der_public_key(partition.wrapping_public_key(made[0]))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 3072
    partition.destroy_key(made[0])


def test_a_sealed_wrapping_key_outlives_a_restart():
    """GetParametersForImport stores the partition and the sealed wrapping key; after a
    restart under the same root key, ImportKeyMaterial still unwraps with it."""
    root = os.urandom(32)
    first = Hsm(bytearray(root))
    p = first.create_partition()
    wrapping = p.generate_wrapping_key(2048)
    public = p.wrapping_public_key(wrapping)
    stored_partition = p.export()
    stored_key = p.export_wrapping_key(wrapping, b"key-id/token")
    first.close()

    material = os.urandom(32)
    encrypted = client_wrap(public, "RSAES_OAEP_SHA_256", material)
    second = Hsm(bytearray(root))
    try:
        p2 = second.open_partition(stored_partition)
        reopened = p2.open_wrapping_key(stored_key, b"key-id/token")
        assert p2.wrapping_public_key(reopened) == public
        with pytest.raises(InvalidCiphertextError):
            p2.open_wrapping_key(stored_key, b"key-id/other-token")
        slot = p2.unwrap_import(reopened, "RSAES_OAEP_SHA_256", encrypted)
        assert_holds(p2, slot, material)
    finally:
        second.close()


def test_material_id_tells_reimported_material_apart(partition, wrapping_key):
    public = partition.wrapping_public_key(wrapping_key)
    material = os.urandom(32)
    first = partition.unwrap_import(
        wrapping_key,
        "RSAES_OAEP_SHA_1",
        client_wrap(public, "RSAES_OAEP_SHA_1", material),
    )
    same = partition.unwrap_import(
        wrapping_key,
        "RSA_AES_KEY_WRAP_SHA_1",
        client_wrap(public, "RSA_AES_KEY_WRAP_SHA_1", material),
    )
    other = partition.unwrap_import(
        wrapping_key,
        "RSAES_OAEP_SHA_1",
        client_wrap(public, "RSAES_OAEP_SHA_1", os.urandom(32)),
    )
    key_id = b"1234abcd-12ab-34cd-56ef-1234567890ab"
    assert partition.material_id(first, key_id) == partition.material_id(same, key_id)
    assert partition.material_id(first, key_id) != partition.material_id(other, key_id)
    assert len(partition.material_id(first, key_id)) == 32
