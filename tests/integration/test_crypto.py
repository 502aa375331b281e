"""The data plane through boto3: Encrypt, Decrypt, ReEncrypt, data keys, randomness."""

from __future__ import annotations

import base64
import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.integration.conftest import signed_headers
from tests.integration.test_keys import error_of

CONTEXT = {"purpose": "test", "tenant": "t-1"}


@pytest.mark.parametrize("size", [1, 32, 4096])
def test_encrypt_decrypt(kms, key_id, size):
    plaintext = os.urandom(size)
    out = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext=CONTEXT)
    assert out["KeyId"].endswith(key_id)
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    # Decrypt needs no KeyId: the blob names its key.
    back = kms.decrypt(
        CiphertextBlob=out["CiphertextBlob"],
        EncryptionContext=dict(reversed(list(CONTEXT.items()))),
    )
    assert back["Plaintext"] == plaintext
    assert back["KeyId"] == out["KeyId"]


def test_plaintext_limits(kms, key_id):
    for bad in (b"", os.urandom(4097)):
        with pytest.raises(ClientError) as exc:
            kms.encrypt(KeyId=key_id, Plaintext=bad)
        assert error_of(exc)[0] == "ValidationException"


def test_context_and_tampering(kms, key_id):
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    for context in ({}, {"purpose": "test"}, {**CONTEXT, "tenant": "t-2"}):
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert error_of(exc)[0] == "InvalidCiphertextException"
    # Every byte of the blob (header, IV, ciphertext, tag) is authenticated.
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext=CONTEXT)
        assert error_of(exc)[0] == "InvalidCiphertextException"


def test_decrypt_with_the_wrong_key_id(kms, key_id):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id)["Plaintext"] == b"x"
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, KeyId=other)
    assert error_of(exc)[0] == "IncorrectKeyException"


def test_re_encrypt_across_keys(kms, key_id):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"move me", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    moved = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=CONTEXT,
        DestinationKeyId=other,
        DestinationEncryptionContext={"new": "context"},
    )
    assert moved["SourceKeyId"].endswith(key_id)
    assert moved["KeyId"].endswith(other)
    back = kms.decrypt(
        CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"new": "context"}
    )
    assert back["Plaintext"] == b"move me" and back["KeyId"].endswith(other)


@pytest.mark.parametrize(
    ("args", "size"),
    [
        ({"KeySpec": "AES_256"}, 32),
        ({"KeySpec": "AES_128"}, 16),
        ({"NumberOfBytes": 1}, 1),
        ({"NumberOfBytes": 1024}, 1024),
    ],
)
def test_generate_data_key(kms, key_id, args, size):
    out = kms.generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, **args)
    assert len(out["Plaintext"]) == size
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert back["Plaintext"] == out["Plaintext"]


def test_data_key_is_usable_for_envelope_encryption(kms, key_id):
    out = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    sealed = AESGCM(out["Plaintext"]).encrypt(b"\0" * 12, b"payload", None)
    data_key = kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"]
    assert AESGCM(data_key).decrypt(b"\0" * 12, sealed, None) == b"payload"


def test_generate_data_key_without_plaintext(kms, key_id):
    out = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256")
    assert "Plaintext" not in out
    assert len(kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"]) == 32


def test_data_key_size_needs_exactly_one_member(kms, key_id):
    for args in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}):
        with pytest.raises(ClientError) as exc:
            kms.generate_data_key(KeyId=key_id, **args)
        assert error_of(exc)[0] == "ValidationException"


def test_generate_random(kms):
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(a) == 32 and a != b
    with pytest.raises(ClientError) as exc:
        kms.generate_random(NumberOfBytes=1025)
    assert error_of(exc)[0] == "ValidationException"


def test_blob_is_base64_on_the_wire(server, key_id):
    # The raw protocol: base64 in, base64 out, the AWS JSON 1.1 content type.
    import json
    import urllib.request

    body = json.dumps(
        {"KeyId": key_id, "Plaintext": base64.b64encode(b"raw").decode()}
    ).encode()
    request = urllib.request.Request(
        server.endpoint,
        data=body,
        method="POST",
        headers=signed_headers(
            body, "TrentService.Encrypt", host=server.endpoint.split("//", 1)[1]
        ),
    )
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
        assert response.headers["x-amzn-RequestId"]
        payload = json.loads(response.read())
    assert base64.b64decode(payload["CiphertextBlob"])
