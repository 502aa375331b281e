"""keyplane's batch extension through its client: ordered per-item results, per-item
errors, and interoperation with the single-item operations."""

from __future__ import annotations

import uuid

import pytest

from keyplane.client import BatchClient, BatchItemError, BatchRequestError
from tests.integration.conftest import CREDENTIALS


@pytest.fixture
def batch(server):
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        yield client


def test_data_keys_decrypt_through_plain_kms(batch, kms, key_id):
    keys = batch.generate_data_keys(key_id, 1000, encryption_context={"app": "x"})
    assert len(keys) == 1000
    assert len({k["Plaintext"] for k in keys}) == 1000
    for k in keys[::250]:
        back = kms.decrypt(
            CiphertextBlob=k["CiphertextBlob"], EncryptionContext={"app": "x"}
        )
        assert back["Plaintext"] == k["Plaintext"]


def test_encrypt_decrypt_round_trip(batch, kms, key_id):
    plaintexts = [uuid.uuid4().bytes * (1 + i % 4) for i in range(300)]
    sealed = batch.encrypt(key_id, plaintexts, {"k": "v"})
    blobs = [s["CiphertextBlob"] for s in sealed]
    opened = batch.decrypt(blobs, {"k": "v"})
    assert [o["Plaintext"] for o in opened] == plaintexts
    # A single-item Decrypt reads a batch-made blob too.
    assert (
        kms.decrypt(CiphertextBlob=blobs[7], EncryptionContext={"k": "v"})["Plaintext"]
        == plaintexts[7]
    )


def test_bad_items_fail_alone(batch, kms, key_id):
    good = kms.encrypt(KeyId=key_id, Plaintext=b"fine")["CiphertextBlob"]
    tampered = bytearray(good)
    tampered[-1] ^= 1
    results = batch.decrypt([good, bytes(tampered), b"short", good])
    assert results[0]["Plaintext"] == b"fine"
    assert results[3]["Plaintext"] == b"fine"
    assert isinstance(results[1], BatchItemError)
    assert results[1].code == "InvalidCiphertextException"
    assert isinstance(results[2], BatchItemError)
    missing = batch.encrypt(str(uuid.uuid4()), [b"x"])
    assert isinstance(missing[0], BatchItemError)
    assert missing[0].code == "NotFoundException"


def test_mixed_keys_and_disabled_key(batch, kms, key_id):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=other)
    items = batch._call(
        "GenerateDataKey",
        [
            {"KeyId": key_id, "KeySpec": "AES_256"},
            {"KeyId": other, "KeySpec": "AES_256"},
            {"KeyId": key_id, "NumberOfBytes": 7},
            {"KeyId": key_id},
        ],
    )
    assert len(items[0]["Plaintext"]) == 32
    assert isinstance(items[1], BatchItemError)
    assert items[1].code == "DisabledException"
    assert len(items[2]["Plaintext"]) == 7
    assert isinstance(items[3], BatchItemError)
    assert items[3].code == "ValidationException"


def test_malformed_request(batch):
    with pytest.raises(BatchRequestError) as exc:
        batch._call("GenerateDataKey", [])
    assert exc.value.code == "ValidationException"
