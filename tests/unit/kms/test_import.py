"""Imported key material in-process, with a clock the test moves: the token's checks,
the expiration rules, the state rules of import, delete, expiry and rotation, what a
failed write leaves, what a slot count says about cleansing, and what a restart brings
back. The wire-level behaviour through boto3 is in tests/integration/test_import.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.errors import (
    ExpiredImportTokenError,
    IncorrectKeyMaterialError,
    InvalidImportTokenError,
    KeyStateError,
    StoreError,
    ValidationError,
)
from keyplane.kms import KeyState, KmsKey, KmsService
from keyplane.kms.ops import crypto, imports, keys, rotation
from tests.unit.kms.test_rotation import run
from tests.unit.kms.test_service import CTX, DAY, Clock, close, service

FOREVER = {"expiration_model": imports.DOES_NOT_EXPIRE}


def wrapped(public_der: bytes, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    return public.encrypt(material, oaep)


async def give(
    svc: KmsService, key: KmsKey, material: bytes, **kwargs: Any
) -> imports.Imported:
    params = await imports.get_parameters_for_import(
        svc, CTX, key.key_id, "RSAES_OAEP_SHA_256", "RSA_2048"
    )
    return await imports.import_key_material(
        svc,
        CTX,
        key.key_id,
        params.import_token,
        wrapped(params.public_key, material),
        **(kwargs or FOREVER),
    )


def test_import_enables_the_key_with_the_material_id(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        assert (key.state, key.current_version, key.missing_material()) == (
            KeyState.PENDING_IMPORT,
            0,
            True,
        )
        material = os.urandom(32)
        done = await give(svc, key, material)
        expected = hmac.new(material, key.key_id.encode(), hashlib.sha256).hexdigest()
        assert done.material_id == expected == key.material_id(1)
        assert (key.state, key.current_version) == (KeyState.ENABLED, 1)
        sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"p")
        opened = await crypto.decrypt(svc, CTX, ciphertext_blob=sealed.ciphertext_blob)
        assert opened.plaintext == b"p"

    run(tmp_path, body)


def test_tokens_expire_after_24_hours_and_name_their_key(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        other = await keys.create_key(svc, CTX, origin="EXTERNAL")
        params = await imports.get_parameters_for_import(
            svc, CTX, key.key_id, "RSAES_OAEP_SHA_256", "RSA_2048"
        )
        assert params.valid_to == clock.now + DAY
        entry = imports._parameters(key, params.import_token, clock.now)
        assert entry["algorithm"] == "RSAES_OAEP_SHA_256"
        with pytest.raises(InvalidImportTokenError):
            imports._parameters(other, params.import_token, clock.now)
        clock.now += DAY
        with pytest.raises(ExpiredImportTokenError):
            imports._parameters(key, params.import_token, clock.now)

    run(tmp_path, body)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_altered_token_is_invalid(data: st.DataObject) -> None:
    # A key record with one parameter set, built without the HSM: only the token
    # checks are exercised here.
    key_id = "0f7c6a1e-5a4b-4c3d-9e8f-7a6b5c4d3e2f"
    secret = os.urandom(32)
    parameters_id = os.urandom(16).hex()
    token = imports._token(key_id, parameters_id, secret)
    key = KmsKey.__new__(KmsKey)
    key.key_id = key_id
    key.import_parameters = [
        {"id": parameters_id, "secret": secret.hex(), "valid_to": 2e9}
    ]
    assert imports._parameters(key, token, 1e9)["id"] == parameters_id
    altered = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.integers(0, len(token) - 1).map(
                lambda i: token[:i] + bytes([token[i] ^ 0x01]) + token[i + 1 :]
            ),
            st.integers(0, len(token) - 1).map(lambda i: token[:i]),
            st.binary(min_size=1, max_size=8).map(lambda extra: token + extra),
        )
    )
    if altered == token:
        return
    with pytest.raises(InvalidImportTokenError):
        imports._parameters(key, altered, 1e9)


def test_expiration_rules():
    now = 1_700_000_000.0
    assert imports._expiration(imports.DOES_NOT_EXPIRE, None, now) == (
        imports.DOES_NOT_EXPIRE,
        None,
    )
    assert imports._expiration(None, now + DAY, now) == (imports.EXPIRES, now + DAY)
    assert imports._expiration(imports.EXPIRES, now + 365 * DAY, now)[1] == (
        now + 365 * DAY
    )
    for model, valid_to in [
        (None, None),
        (imports.EXPIRES, None),
        (imports.EXPIRES, now),
        (imports.EXPIRES, now + 365 * DAY + 1),
        (imports.DOES_NOT_EXPIRE, now + DAY),
    ]:
        with pytest.raises(ValidationError):
            imports._expiration(model, valid_to, now)


def test_material_expires_at_valid_to_and_comes_back(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        material = os.urandom(32)
        await give(
            svc,
            key,
            material,
            expiration_model=imports.EXPIRES,
            valid_to=clock.now + 2 * DAY,
        )
        sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"p")
        slots = svc.hsm.shared.slot_count()
        clock.now += 2 * DAY - 1
        assert await imports.sweep_expired_material(svc) == 0
        clock.now += 1
        assert await imports.sweep_expired_material(svc) == 1
        assert key.state is KeyState.PENDING_IMPORT
        assert key.versions == [None]
        # The expired material's slot was cleansed, not just forgotten.
        assert svc.hsm.shared.slot_count() == slots - 1
        assert svc.store.load().materials == []
        with pytest.raises(KeyStateError):
            await crypto.decrypt(svc, CTX, ciphertext_blob=sealed.ciphertext_blob)
        await give(svc, key, material)
        assert key.state is KeyState.ENABLED
        opened = await crypto.decrypt(svc, CTX, ciphertext_blob=sealed.ciphertext_blob)
        assert opened.plaintext == b"p"

    run(tmp_path, body)


def test_reimporting_held_material_keeps_one_slot(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        material = os.urandom(32)
        await give(svc, key, material)
        slots = svc.hsm.shared.slot_count()
        await give(
            svc,
            key,
            material,
            expiration_model=imports.EXPIRES,
            valid_to=clock.now + DAY,
        )
        assert svc.hsm.shared.slot_count() == slots
        assert key.imported[0]["valid_to"] == clock.now + DAY
        with pytest.raises(IncorrectKeyMaterialError):
            await give(svc, key, os.urandom(32))

    run(tmp_path, body)


def test_rotation_to_new_material_and_its_states(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        await give(svc, key, os.urandom(32))
        new = await give(
            svc,
            key,
            os.urandom(32),
            import_type=imports.NEW_KEY_MATERIAL,
            **FOREVER,
        )
        assert (key.current_version, key.pending_rotation) == (1, True)
        entries, _ = rotation.list_key_rotations(
            svc, CTX, key.key_id, "ALL_KEY_MATERIAL", None, None
        )
        assert [e.state for e in entries] == ["CURRENT", "PENDING_ROTATION"]
        await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        assert (key.current_version, key.pending_rotation) == (2, False)
        assert key.material_id(2) == new.material_id
        with pytest.raises(KeyStateError):
            await rotation.rotate_key_on_demand(svc, CTX, key.key_id)

    run(tmp_path, body)


def test_a_failed_write_leaves_key_and_hsm_as_they_were(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        params = await imports.get_parameters_for_import(
            svc, CTX, key.key_id, "RSAES_OAEP_SHA_256", "RSA_2048"
        )
        store = svc.store
        slots = svc.hsm.shared.slot_count()

        class Failing:
            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            def add_material(self, *args: Any) -> None:
                raise StoreError("disk full")

        svc.store = Failing()  # type: ignore[assignment]
        with pytest.raises(StoreError):
            await imports.import_key_material(
                svc,
                CTX,
                key.key_id,
                params.import_token,
                wrapped(params.public_key, os.urandom(32)),
                **FOREVER,
            )
        svc.store = store
        assert (key.state, key.versions, key.imported) == (
            KeyState.PENDING_IMPORT,
            [],
            [],
        )
        # Neither the unwrapped material nor the wrapping key is left in the HSM.
        assert svc.hsm.shared.slot_count() == slots

    run(tmp_path, body)


def test_imported_material_and_tokens_survive_a_restart(tmp_path):
    root, clock = os.urandom(32), Clock()
    material = os.urandom(32)

    async def before() -> tuple[str, bytes, bytes, bytes]:
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = await keys.create_key(svc, CTX, origin="EXTERNAL")
            await give(svc, key, material)
            sealed = await crypto.encrypt(svc, CTX, key_id=key.key_id, plaintext=b"a")
            params = await imports.get_parameters_for_import(
                svc, CTX, key.key_id, "RSAES_OAEP_SHA_256", "RSA_2048"
            )
            await imports.delete_imported_key_material(svc, CTX, key.key_id, None)
            return (
                key.key_id,
                sealed.ciphertext_blob,
                params.import_token,
                (params.public_key),
            )
        finally:
            close(svc)

    async def after(key_id: str, blob: bytes, token: bytes, public: bytes) -> None:
        svc = service(tmp_path / "db", root, clock, asyncio.get_running_loop())
        try:
            key = svc.keys[key_id]
            assert (key.state, key.versions) == (KeyState.PENDING_IMPORT, [None])
            await imports.import_key_material(
                svc, CTX, key_id, token, wrapped(public, material), **FOREVER
            )
            opened = await crypto.decrypt(svc, CTX, ciphertext_blob=blob)
            assert opened.plaintext == b"a"
            assert svc.store.integrity_check() == []
        finally:
            close(svc)

    asyncio.run(after(*asyncio.run(before())))


def test_valid_to_is_the_earliest_expiry_the_key_depends_on(tmp_path):
    async def body(svc: KmsService, clock: Clock) -> None:
        key = await keys.create_key(svc, CTX, origin="EXTERNAL")
        assert key.material_expiry() is None
        expires = clock.now + 10 * DAY
        await give(
            svc, key, os.urandom(32), expiration_model=imports.EXPIRES, valid_to=expires
        )
        assert key.material_expiry() == (imports.EXPIRES, expires)
        await give(
            svc,
            key,
            os.urandom(32),
            import_type=imports.NEW_KEY_MATERIAL,
            **FOREVER,
        )
        # Material pending rotation is not depended on yet: version 1 still rules.
        assert key.material_expiry() == (imports.EXPIRES, expires)
        await rotation.rotate_key_on_demand(svc, CTX, key.key_id)
        # The current material never expires, but version 1 still does, and the key
        # needs it for every ciphertext it sealed.
        assert key.material_expiry() == (imports.EXPIRES, expires)

    run(tmp_path, body)
