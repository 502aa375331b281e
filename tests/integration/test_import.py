"""Imported key material (Origin EXTERNAL) against a real server, through boto3, with
the material wrapped client-side by ``cryptography`` exactly as AWS's documentation
tells users to: GetParametersForImport, ImportKeyMaterial with every wrapping algorithm,
re-import, DeleteImportedKeyMaterial, expiry at ValidTo through the adjustable clock,
on-demand rotation to new imported material, and restarts between the steps.

The behaviour is AWS's, from the AWS KMS API Reference (GetParametersForImport,
ImportKeyMaterial, DeleteImportedKeyMaterial, RotateKeyOnDemand, ListKeyRotations) and
the Developer Guide's "Importing key material" and "Key states of AWS KMS keys".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from keyplane.client import BatchClient
from keyplane.kms import _blob
from tests.integration.conftest import ADMIN_CONFIG, CREDENTIALS, ServerProcess

DAY = 86_400.0
CONFIG = "[clock]\nadjustable = true\n" + ADMIN_CONFIG.replace(
    '"kms:*"', '["kms:*", "keyplane:*"]'
)
ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
FOREVER = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("import"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kms(server: ServerProcess) -> Any:
    return server.client()


@pytest.fixture
def key(kms: Any) -> dict[str, str]:
    meta = kms.create_key(Origin="EXTERNAL", Description="import test")["KeyMetadata"]
    return {"id": meta["KeyId"], "arn": meta["Arn"]}


# --- the client side of an import, as AWS documents it --------------------------------


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """EncryptedKeyMaterial for ``material`` under a GetParametersForImport public key:
    RSA-OAEP of the material, or (RSA_AES_KEY_WRAP_*) RSA-OAEP of an ephemeral AES key
    followed by that key's RFC 5649 wrap of the material."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    digest: hashes.HashAlgorithm = (
        # SHA-1 because AWS offers it for OAEP, where its collisions do not matter.
        hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    )
    oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(
        ephemeral, material
    )


def parameters(
    kms: Any, key_id: str, algorithm: str = "RSAES_OAEP_SHA_256", spec: str = "RSA_2048"
) -> dict[str, Any]:
    return kms.get_parameters_for_import(  # type: ignore[no-any-return]
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )


def import_material(
    kms: Any,
    key_id: str,
    material: bytes,
    algorithm: str = "RSAES_OAEP_SHA_256",
    spec: str = "RSA_2048",
    **kwargs: Any,
) -> dict[str, Any]:
    params = parameters(kms, key_id, algorithm, spec)
    return kms.import_key_material(  # type: ignore[no-any-return]
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
        **(kwargs or FOREVER),
    )


def material_id(key_id: str, material: bytes) -> str:
    """The KeyMaterialId keyplane gives imported material: an HMAC of the key id under
    the material (AWS: "based on the KMS key ID and the imported key material")."""
    return hmac.new(material, key_id.encode(), hashlib.sha256).hexdigest()


def open_blob(material: bytes, blob: bytes, context: dict[str, str] | None) -> bytes:
    """Decrypt a keyplane ciphertext blob client-side, knowing the material: proof that
    the server sealed it with exactly the material imported."""
    header = blob[: _blob.HEADER_BYTES]
    iv, sealed = (
        blob[_blob.HEADER_BYTES : _blob.HEADER_BYTES + 12],
        blob[_blob.HEADER_BYTES + 12 :],
    )
    return AESGCM(material).decrypt(iv, sealed, _blob.aad(header, context))


def refused(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def advance(server: ServerProcess, seconds: float) -> float:
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        return client.advance_clock(seconds)


def state(kms: Any, key_id: str) -> str:
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


def wait_for(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def all_material(kms: Any, key_id: str) -> list[dict[str, Any]]:
    return kms.list_key_rotations(  # type: ignore[no-any-return]
        KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL"
    )["Rotations"]


# --- a key waiting for its material ---------------------------------------------------


def test_an_external_key_waits_for_its_material(kms: Any, key: dict) -> None:
    meta = kms.describe_key(KeyId=key["id"])["KeyMetadata"]
    assert (meta["Origin"], meta["KeyState"], meta["Enabled"]) == (
        "EXTERNAL",
        "PendingImport",
        False,
    )
    assert "CurrentKeyMaterialId" not in meta and "ExpirationModel" not in meta
    assert refused(kms.encrypt, KeyId=key["id"], Plaintext=b"x") == (
        "KMSInvalidStateException",
        f"{key['arn']} is pending import.",
    )
    assert refused(kms.enable_key, KeyId=key["id"])[0] == "KMSInvalidStateException"
    assert all_material(kms, key["id"]) == []
    # Nothing imported: deleting has no effect.
    assert kms.delete_imported_key_material(KeyId=key["id"])["KeyId"] == key["arn"]


def test_import_operations_refuse_keys_with_generated_material(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    expected = (
        "UnsupportedOperationException",
        f"{meta['Arn']} origin is AWS_KMS which is not valid for this operation.",
    )
    assert (
        refused(
            kms.get_parameters_for_import,
            KeyId=meta["KeyId"],
            WrappingAlgorithm="RSAES_OAEP_SHA_256",
            WrappingKeySpec="RSA_2048",
        )
        == expected
    )
    assert refused(kms.delete_imported_key_material, KeyId=meta["KeyId"]) == expected


def test_parameters_are_a_public_key_and_token_good_for_24_hours(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    before = advance(server, 0.001)
    params = parameters(kms, key["id"], spec="RSA_3072")
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    assert (public.key_size, public.public_numbers().e) == (3072, 65537)
    assert params["KeyId"] == key["arn"]
    valid_to = params["ParametersValidTo"].timestamp()
    assert before + DAY - 2 <= valid_to <= before + DAY + 60
    # A second call gives another wrapping key.
    assert parameters(kms, key["id"])["PublicKey"] != params["PublicKey"]


# --- importing ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_import_with_each_wrapping_algorithm(
    kms: Any, key: dict, algorithm: str
) -> None:
    material = os.urandom(32)
    done = import_material(kms, key["id"], material, algorithm)
    assert done["KeyId"] == key["arn"]
    assert done["KeyMaterialId"] == material_id(key["id"], material)
    meta = kms.describe_key(KeyId=key["id"])["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Enabled", True)
    assert meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert "ValidTo" not in meta
    assert meta["CurrentKeyMaterialId"] == done["KeyMaterialId"]
    context = {"purpose": "import"}
    sealed = kms.encrypt(
        KeyId=key["id"], Plaintext=b"secret", EncryptionContext=context
    )
    # The server sealed under exactly the imported material.
    assert open_blob(material, sealed["CiphertextBlob"], context) == b"secret"
    opened = kms.decrypt(
        CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=context
    )
    assert opened["Plaintext"] == b"secret"
    assert opened["KeyMaterialId"] == done["KeyMaterialId"]


def test_a_4096_bit_wrapping_key(kms: Any, key: dict) -> None:
    material = os.urandom(32)
    import_material(kms, key["id"], material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096")
    data_key = kms.generate_data_key(KeyId=key["id"], KeySpec="AES_256")
    assert (
        open_blob(material, data_key["CiphertextBlob"], None) == data_key["Plaintext"]
    )


def test_material_that_expires(server: ServerProcess, kms: Any, key: dict) -> None:
    material = os.urandom(32)
    now = advance(server, 0.001)
    import_material(
        kms,
        key["id"],
        material,
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=now + 2 * DAY,
    )
    meta = kms.describe_key(KeyId=key["id"])["KeyMetadata"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(meta["ValidTo"].timestamp() - (now + 2 * DAY)) < 1
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"before expiry")["CiphertextBlob"]
    (entry,) = all_material(kms, key["id"])
    assert (entry["ImportState"], entry["KeyMaterialState"]) == ("IMPORTED", "CURRENT")
    advance(server, 3 * DAY)
    # The server's sweep deletes the material at ValidTo: the key waits for it again.
    wait_for(lambda: state(kms, key["id"]) == "PendingImport")
    (entry,) = all_material(kms, key["id"])
    assert entry["ImportState"] == "PENDING_IMPORT"
    assert refused(kms.decrypt, CiphertextBlob=blob)[0] == "KMSInvalidStateException"
    # The same material brings the key and every ciphertext back.
    import_material(kms, key["id"], material)
    assert state(kms, key["id"]) == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before expiry"


def test_delete_and_import_the_same_material_again(kms: Any, key: dict) -> None:
    material = os.urandom(32)
    first = import_material(kms, key["id"], material)
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"kept")["CiphertextBlob"]
    deleted = kms.delete_imported_key_material(KeyId=key["id"])
    assert deleted == {
        "KeyId": key["arn"],
        "KeyMaterialId": first["KeyMaterialId"],
        "ResponseMetadata": deleted["ResponseMetadata"],
    }
    assert state(kms, key["id"]) == "PendingImport"
    assert refused(kms.decrypt, CiphertextBlob=blob) == (
        "KMSInvalidStateException",
        f"{key['arn']} is pending import.",
    )
    # Other material is refused; the same material restores the key.
    assert (
        refused(import_material, kms=kms, key_id=key["id"], material=os.urandom(32))[0]
        == "IncorrectKeyMaterialException"
    )
    again = import_material(kms, key["id"], material, "RSA_AES_KEY_WRAP_SHA_1")
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert state(kms, key["id"]) == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_import_again_to_change_the_expiration(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    material = os.urandom(32)
    import_material(kms, key["id"], material)
    kms.disable_key(KeyId=key["id"])
    now = advance(server, 0.001)
    import_material(
        kms,
        key["id"],
        material,
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=now + 10 * DAY,
    )
    meta = kms.describe_key(KeyId=key["id"])["KeyMetadata"]
    # The material is unchanged and the key stays as it was (disabled).
    assert (meta["KeyState"], meta["ExpirationModel"]) == (
        "Disabled",
        "KEY_MATERIAL_EXPIRES",
    )
    assert meta["CurrentKeyMaterialId"] == material_id(key["id"], material)


# --- what an import refuses -----------------------------------------------------------


def test_tokens_of_another_key_or_forged_are_invalid(kms: Any, key: dict) -> None:
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    theirs = parameters(kms, other)
    wrapped = wrap(theirs["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32))
    invalid = (
        "InvalidImportTokenException",
        "Import token is invalid or is associated with a different KMS key.",
    )
    assert (
        refused(
            kms.import_key_material,
            KeyId=key["id"],
            ImportToken=theirs["ImportToken"],
            EncryptedKeyMaterial=wrapped,
            **FOREVER,
        )
        == invalid
    )
    mine = parameters(kms, key["id"])
    token = bytearray(mine["ImportToken"])
    token[-1] ^= 1
    for forged in (bytes(token), b"not a token", mine["ImportToken"][:-1]):
        assert (
            refused(
                kms.import_key_material,
                KeyId=key["id"],
                ImportToken=forged,
                EncryptedKeyMaterial=wrap(
                    mine["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)
                ),
                **FOREVER,
            )
            == invalid
        )
    assert state(kms, key["id"]) == "PendingImport"


def test_a_token_expires_after_24_hours(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    params = parameters(kms, key["id"])
    advance(server, DAY + 1)
    code, _ = refused(
        kms.import_key_material,
        KeyId=key["id"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(
            params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)
        ),
        **FOREVER,
    )
    assert code == "ExpiredImportTokenException"


def test_material_that_does_not_unwrap(kms: Any, key: dict) -> None:
    params = parameters(kms, key["id"], "RSAES_OAEP_SHA_256")
    other = parameters(kms, key["id"], "RSAES_OAEP_SHA_256")
    material = os.urandom(32)
    cases = {
        # Wrapped with SHA-1 OAEP for a token that says SHA-256.
        "wrong algorithm": wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", material),
        # Wrapped under another parameter set's public key.
        "wrong key": wrap(other["PublicKey"], "RSAES_OAEP_SHA_256", material),
        "garbage": os.urandom(256),
    }
    for name, encrypted in cases.items():
        code, _ = refused(
            kms.import_key_material,
            KeyId=key["id"],
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=encrypted,
            **FOREVER,
        )
        assert code == "InvalidCiphertextException", name
    assert state(kms, key["id"]) == "PendingImport"


def test_material_of_the_wrong_size(kms: Any, key: dict) -> None:
    for size in (16, 48):
        code, message = refused(
            import_material, kms=kms, key_id=key["id"], material=os.urandom(size)
        )
        assert code == "IncorrectKeyMaterialException", size
        assert "256-bit" in message
    assert state(kms, key["id"]) == "PendingImport"


def test_expiration_members_are_checked(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    now = advance(server, 0.001)
    bad = [
        {},  # KEY_MATERIAL_EXPIRES is the default, and needs a ValidTo
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES"},
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": now - 60},
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": now + 366 * DAY},
        {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "ValidTo": now + DAY},
    ]
    params = parameters(kms, key["id"])
    wrapped = wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32))
    for members in bad:
        code, _ = refused(
            kms.import_key_material,
            KeyId=key["id"],
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrapped,
            **members,
        )
        assert code == "ValidationException", members
    assert state(kms, key["id"]) == "PendingImport"


def test_a_key_pending_deletion_takes_no_import(kms: Any, key: dict) -> None:
    material = os.urandom(32)
    import_material(kms, key["id"], material)
    kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7)
    assert refused(import_material, kms=kms, key_id=key["id"], material=material) == (
        "KMSInvalidStateException",
        f"{key['arn']} is pending deletion.",
    )
    # Deleting its material leaves it pending deletion; cancelling then waits for
    # the material rather than answering Disabled.
    kms.delete_imported_key_material(KeyId=key["id"])
    assert state(kms, key["id"]) == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=key["id"])
    assert state(kms, key["id"]) == "PendingImport"


# --- rotation to new imported material ------------------------------------------------


def test_rotate_on_demand_to_new_imported_material(kms: Any, key: dict) -> None:
    first, second = os.urandom(32), os.urandom(32)
    import_material(kms, key["id"], first)
    assert refused(kms.enable_key_rotation, KeyId=key["id"]) == (
        "UnsupportedOperationException",
        f"{key['arn']} origin is EXTERNAL which is not valid for this operation.",
    )
    assert refused(kms.rotate_key_on_demand, KeyId=key["id"])[0] == (
        "KMSInvalidStateException"
    )
    old = kms.encrypt(KeyId=key["id"], Plaintext=b"first")["CiphertextBlob"]
    new = import_material(
        kms, key["id"], second, ImportType="NEW_KEY_MATERIAL", **FOREVER
    )
    assert new["KeyMaterialId"] == material_id(key["id"], second)
    states = [m["KeyMaterialState"] for m in all_material(kms, key["id"])]
    assert states == ["CURRENT", "PENDING_ROTATION"]
    # Until the rotation, the first material still encrypts.
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"still first")["CiphertextBlob"]
    assert open_blob(first, blob, None) == b"still first"
    # New material the key already has is refused, and so is a second pending one.
    assert (
        refused(
            import_material,
            kms=kms,
            key_id=key["id"],
            material=first,
            ImportType="NEW_KEY_MATERIAL",
            **FOREVER,
        )[0]
        == "IncorrectKeyMaterialException"
    )
    assert (
        refused(
            import_material,
            kms=kms,
            key_id=key["id"],
            material=os.urandom(32),
            ImportType="NEW_KEY_MATERIAL",
            **FOREVER,
        )[0]
        == "KMSInvalidStateException"
    )
    kms.rotate_key_on_demand(KeyId=key["id"])
    listed = all_material(kms, key["id"])
    assert [m["KeyMaterialState"] for m in listed] == ["NON_CURRENT", "CURRENT"]
    assert listed[1]["RotationType"] == "ON_DEMAND"
    assert (
        kms.list_key_rotations(KeyId=key["id"])["Rotations"][0]["KeyMaterialId"]
        == (new["KeyMaterialId"])
    )
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"second")["CiphertextBlob"]
    assert open_blob(second, blob, None) == b"second"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"first"
    # Deleting the older material makes the key wait for it; EXISTING with its id
    # brings it back.
    first_id = material_id(key["id"], first)
    kms.delete_imported_key_material(KeyId=key["id"], KeyMaterialId=first_id)
    assert state(kms, key["id"]) == "PendingImport"
    import_material(
        kms,
        key["id"],
        first,
        ImportType="EXISTING_KEY_MATERIAL",
        KeyMaterialId=first_id,
        **FOREVER,
    )
    assert state(kms, key["id"]) == "Enabled"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"first"


def test_deleting_material_pending_rotation_forgets_it(kms: Any, key: dict) -> None:
    first = os.urandom(32)
    import_material(kms, key["id"], first)
    pending = import_material(
        kms, key["id"], os.urandom(32), ImportType="NEW_KEY_MATERIAL", **FOREVER
    )
    kms.delete_imported_key_material(
        KeyId=key["id"], KeyMaterialId=pending["KeyMaterialId"]
    )
    listed = all_material(kms, key["id"])
    assert [m["KeyMaterialState"] for m in listed] == ["CURRENT"]
    assert state(kms, key["id"]) == "Enabled"
    code, _ = refused(
        kms.delete_imported_key_material,
        KeyId=key["id"],
        KeyMaterialId=pending["KeyMaterialId"],
    )
    assert code == "NotFoundException"


# --- restarts -------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_tokens_material_and_state_survive_restarts(
    server: ServerProcess, kms: Any, sig: int
) -> None:
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    params = parameters(kms, key_id, "RSA_AES_KEY_WRAP_SHA_256")
    server.restart(sig)
    kms = server.client()
    # The token and its wrapping key outlive the restart (their 24 hours are not over).
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(
            params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material
        ),
        **FOREVER,
    )
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"durable")["CiphertextBlob"]
    server.restart(sig)
    kms = server.client()
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"durable"
    kms.delete_imported_key_material(KeyId=key_id)
    server.restart(sig)
    kms = server.client()
    assert state(kms, key_id) == "PendingImport"
    import_material(kms, key_id, material)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"durable"
