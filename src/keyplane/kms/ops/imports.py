"""Imported key material (Origin EXTERNAL): GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial, and the sweep that deletes material at its ValidTo.

The flow is AWS's (KMS Developer Guide, "Importing key material"): the key is created
without material (PendingImport); GetParametersForImport makes an RSA wrapping key in
the key's partition and answers its public half with an import token, both good for 24
hours; the user wraps 256 bits of material under that public key; ImportKeyMaterial
unwraps it inside the HSM, straight into a key slot. The material is never a Python
object: what Python sees is a slot handle and the material's id, an HMAC of the key id
under the material.

The wrapping private key lives in the HSM only for the length of a call. Between calls
it is kept sealed under the partition key in the key's record, so an import token
survives a restart for its 24 hours like the rest of the key's state.

Each material version of an imported key carries, in ``KmsKey.imported``, its id, its
expiration model, ValidTo and description. A version whose material was deleted or
expired keeps its entry (and its place) with no slot, and the key is PendingImport until
the same material is imported again.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final

from keyplane.errors import (
    ExpiredImportTokenError,
    IncorrectKeyMaterialError,
    InvalidImportTokenError,
    KeyplaneError,
    KeyStateError,
    NotFoundError,
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.hsm import KeySlot
from keyplane.kms._model import ORIGIN_EXTERNAL, KmsKey, material_context
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import KeyState, Op, require
from keyplane.storage import MaterialRecord

_log = logging.getLogger(__name__)

DAY_SECONDS: Final = 86400.0
# GetParametersForImport's API reference: the public key and token are valid 24 hours.
PARAMETERS_LIFETIME_SECONDS: Final = 24 * 3600.0
# ImportKeyMaterial's API reference: ValidTo is at most 365 days from the request.
MAX_VALID_TO_SECONDS: Final = 365 * DAY_SECONDS
WRAPPING_KEY_BITS: Final = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
WRAPPING_ALGORITHMS: Final = frozenset(
    {
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_AES_KEY_WRAP_SHA_256",
    }
)
EXPIRES: Final = "KEY_MATERIAL_EXPIRES"
DOES_NOT_EXPIRE: Final = "KEY_MATERIAL_DOES_NOT_EXPIRE"
NEW_KEY_MATERIAL: Final = "NEW_KEY_MATERIAL"
EXISTING_KEY_MATERIAL: Final = "EXISTING_KEY_MATERIAL"
# Parameter sets kept per key: each call makes one, each is good for 24 hours, and a
# client that asked several times may use any of the recent ones. Older ones are
# dropped (their tokens then answer InvalidImportTokenException).
KEPT_PARAMETERS: Final = 10

# An import token: magic, the key id, the parameter set's id, and an HMAC of those
# under the set's own secret (kept in the key's record beside the sealed wrapping key).
_TOKEN_MAGIC: Final = b"kpimport1"
_ID_BYTES: Final = 16
_MAC_BYTES: Final = 32
_TOKEN_BYTES: Final = len(_TOKEN_MAGIC) + 16 + _ID_BYTES + _MAC_BYTES


@dataclass(frozen=True, slots=True)
class ImportParameters:
    key: KmsKey
    import_token: bytes
    public_key: bytes
    valid_to: float


@dataclass(frozen=True, slots=True)
class Imported:
    key: KmsKey
    material_id: str


def _external(key: KmsKey) -> None:
    """Refuse keys whose material is not imported, with AWS's message."""
    if key.origin != ORIGIN_EXTERNAL:
        raise UnsupportedOperationError(
            f"{key.arn} origin is {key.origin} which is not valid for this operation."
        )


def _wrapping_context(key_id: str, parameters_id: str) -> bytes:
    """What a sealed wrapping key is bound to: its key and its parameter set."""
    return f"import/{key_id}/{parameters_id}".encode()


def _token(key_id: str, parameters_id: str, secret: bytes) -> bytes:
    head = _TOKEN_MAGIC + uuid.UUID(key_id).bytes + bytes.fromhex(parameters_id)
    return head + hmac.new(secret, head, sha256).digest()


# --- GetParametersForImport -----------------------------------------------------------


async def get_parameters_for_import(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    wrapping_algorithm: str,
    wrapping_key_spec: str,
) -> ImportParameters:
    """AWS GetParametersForImport: a fresh RSA wrapping key and import token.

    Raises:
        UnsupportedOperationError: not an EXTERNAL key, or a wrapping algorithm or key
            spec AWS offers only in China Regions or no longer offers.
        KeyStateError: the key is pending deletion.
    """
    values = {
        "kms:wrappingalgorithm": wrapping_algorithm,
        "kms:wrappingkeyspec": wrapping_key_spec,
    }
    key = svc.authorized(
        ctx, "kms:GetParametersForImport", key_id, aliases=False, values=values
    )
    _external(key)
    require(key.state, Op.IMPORT, key.arn)
    bits = WRAPPING_KEY_BITS.get(wrapping_key_spec)
    if bits is None:
        raise UnsupportedOperationError(
            f"WrappingKeySpec {wrapping_key_spec} is not supported: it is only "
            "available in China Regions."
        )
    if wrapping_algorithm not in WRAPPING_ALGORITHMS:
        raise UnsupportedOperationError(
            f"WrappingAlgorithm {wrapping_algorithm} is not supported for importing "
            "key material into this key."
        )
    parameters_id = secrets.token_hex(_ID_BYTES)
    context = _wrapping_context(key.key_id, parameters_id)
    # RSA key generation takes from tens of milliseconds (2048 bits) to seconds (4096
    # bits): it runs off the event loop, and before the control lock is taken.
    sealed, public_key = await svc.run_slow(_make_wrapping_key, key, bits, context)
    async with svc.control:
        if svc.keys.get(key.key_id) is not key:
            raise NotFoundError(f"Key '{key.arn}' does not exist")
        require(key.state, Op.IMPORT, key.arn)
        now = svc.clock()
        secret = secrets.token_bytes(32)
        valid_to = now + PARAMETERS_LIFETIME_SECONDS
        entry: dict[str, Any] = {
            "id": parameters_id,
            "algorithm": wrapping_algorithm,
            "spec": wrapping_key_spec,
            "valid_to": valid_to,
            "wrapped": sealed.hex(),
            "secret": secret.hex(),
        }
        kept = [p for p in key.import_parameters if p["valid_to"] > now]
        record = key.record(import_parameters=[*kept[-(KEPT_PARAMETERS - 1) :], entry])
        await svc.write(svc.store.update_key, record)
        key.apply(record)
    return ImportParameters(
        key, _token(key.key_id, parameters_id, secret), public_key, valid_to
    )


def _make_wrapping_key(key: KmsKey, bits: int, context: bytes) -> tuple[bytes, bytes]:
    """A new wrapping key pair: (the private key sealed under the partition key, the
    public key's DER). The private key leaves the HSM only sealed."""
    partition = key.partition
    slot = partition.generate_wrapping_key(bits)
    try:
        return (
            partition.export_wrapping_key(slot, context),
            partition.wrapping_public_key(slot),
        )
    finally:
        partition.destroy_key(slot)


# --- ImportKeyMaterial ----------------------------------------------------------------


def _expiration(
    model: str | None, valid_to: float | None, now: float
) -> tuple[str, float | None]:
    """The expiration model and ValidTo an import asks for, checked as AWS does.

    Raises:
        ValidationError: ValidTo missing for expiring material, given for material
            that does not expire, in the past, or more than 365 days ahead.
    """
    model = model or EXPIRES
    if model == DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise ValidationError(
                "ValidTo must not be specified when ExpirationModel is "
                f"{DOES_NOT_EXPIRE}."
            )
        return model, None
    if valid_to is None:
        raise ValidationError(f"ValidTo is required when ExpirationModel is {EXPIRES}.")
    if valid_to <= now:
        raise ValidationError("ValidTo must be a date and time in the future.")
    if valid_to > now + MAX_VALID_TO_SECONDS:
        raise ValidationError(
            "ValidTo must be no more than 365 days from the time of the request."
        )
    return model, valid_to


def _parameters(key: KmsKey, token: bytes, now: float) -> dict[str, Any]:
    """The parameter set an import token names, once the token checks out.

    Raises:
        InvalidImportTokenError: not a token of this key, or one dropped since.
        ExpiredImportTokenError: the token's 24 hours are over.
    """
    invalid = InvalidImportTokenError(
        "Import token is invalid or is associated with a different KMS key."
    )
    if len(token) != _TOKEN_BYTES or not token.startswith(_TOKEN_MAGIC):
        raise invalid
    at = len(_TOKEN_MAGIC)
    if token[at : at + 16] != uuid.UUID(key.key_id).bytes:
        raise invalid
    parameters_id = token[at + 16 : at + 16 + _ID_BYTES].hex()
    mac = token[at + 16 + _ID_BYTES :]
    for entry in key.import_parameters:
        if entry["id"] != parameters_id:
            continue
        expected = hmac.new(
            bytes.fromhex(entry["secret"]), token[:-_MAC_BYTES], sha256
        ).digest()
        if not hmac.compare_digest(mac, expected):
            raise invalid
        if entry["valid_to"] <= now:
            raise ExpiredImportTokenError(
                "The import token has expired. Call GetParametersForImport for a new "
                "import token and public key."
            )
        return entry
    raise invalid


async def import_key_material(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    import_token: bytes,
    encrypted_key_material: bytes,
    *,
    expiration_model: str | None = None,
    valid_to: float | None = None,
    import_type: str | None = None,
    key_material_id: str | None = None,
    description: str | None = None,
) -> Imported:
    """AWS ImportKeyMaterial: unwrap material into the key's partition.

    NEW_KEY_MATERIAL is the first material of the key, or (later) material waiting
    for RotateKeyOnDemand to make it current; EXISTING_KEY_MATERIAL must be material
    the key already has (to bring back deleted or expired material, or to change its
    expiration). Once every version has its material, a PendingImport key is Enabled.

    Raises:
        ValidationError: a bad expiration, or KeyMaterialId with NEW_KEY_MATERIAL.
        UnsupportedOperationError: not an EXTERNAL key.
        KeyStateError: pending deletion; or new material while other new material
            still waits for rotation.
        InvalidImportTokenError, ExpiredImportTokenError: as the token is.
        InvalidCiphertextError: the material does not unwrap under the token's key.
        IncorrectKeyMaterialError: not 256 bits, not the key's material, or new
            material the key already has.
    """
    now = svc.clock()
    model, until = _expiration(expiration_model, valid_to, now)
    if import_type == NEW_KEY_MATERIAL and key_material_id is not None:
        raise ValidationError(
            "KeyMaterialId cannot be specified when ImportType is NEW_KEY_MATERIAL."
        )
    values: dict[str, object] = {"kms:expirationmodel": model}
    if until is not None:
        values["kms:validto"] = until
    async with svc.control:
        key = svc.authorized(
            ctx, "kms:ImportKeyMaterial", key_id, aliases=False, values=values
        )
        _external(key)
        require(key.state, Op.IMPORT, key.arn)
        entry = _parameters(key, import_token, now)
        slot = await svc.run_slow(_unwrap, key, entry, encrypted_key_material)
        try:
            material_id = key.partition.material_id(slot, key.key_id.encode()).hex()
            kept = await _adopt(
                svc,
                key,
                slot,
                material_id,
                {
                    "expiration_model": model,
                    "valid_to": until,
                    "description": description,
                    "imported_at": now,
                },
                import_type
                or (NEW_KEY_MATERIAL if not key.imported else EXISTING_KEY_MATERIAL),
                key_material_id,
            )
        except BaseException:
            with contextlib.suppress(KeyplaneError):
                key.partition.destroy_key(slot)
            raise
        if not kept:
            # The key already holds this very material (a re-import to change its
            # expiration): the new slot is a duplicate.
            key.partition.destroy_key(slot)
        return Imported(key, material_id)


def _unwrap(key: KmsKey, entry: dict[str, Any], encrypted: bytes) -> KeySlot:
    """Unwrap the material inside the HSM with the parameter set's wrapping key."""
    partition = key.partition
    wrapping = partition.open_wrapping_key(
        bytes.fromhex(entry["wrapped"]), _wrapping_context(key.key_id, entry["id"])
    )
    try:
        return partition.unwrap_import(wrapping, entry["algorithm"], encrypted)
    except ValidationError as exc:
        # The HSM unwrapped it, but it is not a 256-bit key.
        raise IncorrectKeyMaterialError(
            f"The key material for {key.arn} must be a 256-bit symmetric key."
        ) from exc
    finally:
        partition.destroy_key(wrapping)


async def _adopt(
    svc: KmsService,
    key: KmsKey,
    slot: KeySlot,
    material_id: str,
    details: dict[str, Any],
    import_type: str,
    key_material_id: str | None,
) -> bool:
    """Record unwrapped material as the import type says; the caller holds
    ``svc.control``. Returns whether ``slot`` became the version's slot (False when the
    version already had this material)."""
    known = [m["id"] for m in key.imported]
    if import_type == NEW_KEY_MATERIAL:
        if material_id in known:
            raise IncorrectKeyMaterialError(
                f"The key material is already associated with {key.arn}; import it "
                f"with ImportType {EXISTING_KEY_MATERIAL}."
            )
        if key.pending_rotation:
            raise KeyStateError(
                f"{key.arn} already has new key material pending rotation. Rotate "
                "the key on demand, or delete that key material, first."
            )
        version = len(key.versions) + 1
        pending = bool(key.imported)
        imported = [*key.imported, {"id": material_id, **details}]
        changes: dict[str, Any] = {"imported": imported, "pending_rotation": pending}
        present = [slot is not None for slot in key.versions] + [True]
        state = _state_after(key, present, pending)
        material = MaterialRecord(
            key.key_id,
            version,
            key.partition.export_key(slot, material_context(key.key_id, version)),
            details["imported_at"],
        )
        record = key.record(state=state, **changes)
        await svc.write(svc.store.add_material, material, record)
        key.versions.append(slot)
        key.apply(record)
        return True
    if not known:
        raise IncorrectKeyMaterialError(
            f"{key.arn} has no key material to import again; import it with "
            f"ImportType {NEW_KEY_MATERIAL}."
        )
    if key_material_id is not None and key_material_id != material_id:
        raise IncorrectKeyMaterialError(
            f"The key material does not match key material ID {key_material_id}."
        )
    if material_id not in known:
        raise IncorrectKeyMaterialError(
            f"The key material is not the key material previously imported into "
            f"{key.arn}."
        )
    index = known.index(material_id)
    version = index + 1
    if details["description"] is None:
        # AWS keeps the description of the last import of this material.
        details["description"] = key.imported[index].get("description")
    imported = [dict(m) for m in key.imported]
    imported[index] = {"id": material_id, **details}
    had_material = key.versions[index] is not None
    after = [slot is not None for slot in key.versions]
    after[index] = True
    state = _state_after(key, after, key.pending_rotation)
    record = key.record(state=state, imported=imported)
    if had_material:
        await svc.write(svc.store.update_key, record)
        key.apply(record)
        return False
    material = MaterialRecord(
        key.key_id,
        version,
        key.partition.export_key(slot, material_context(key.key_id, version)),
        details["imported_at"],
    )
    await svc.write(svc.store.add_material, material, record)
    key.versions[index] = slot
    key.apply(record)
    return True


def _state_after(key: KmsKey, present: list[bool], pending: bool) -> KeyState:
    """The key's state once its versions' material is as ``present`` says: a
    PendingImport key becomes Enabled when every version up to the current one has
    its material; every other state stays."""
    if key.state is not KeyState.PENDING_IMPORT:
        return key.state
    current = len(present) - pending
    if current >= 1 and all(present[:current]):
        return KeyState.ENABLED
    return KeyState.PENDING_IMPORT


# --- DeleteImportedKeyMaterial and expiry ---------------------------------------------


async def delete_imported_key_material(
    svc: KmsService, ctx: RequestContext, key_id: str, key_material_id: str | None
) -> tuple[KmsKey, str | None]:
    """AWS DeleteImportedKeyMaterial: the named material (default: the current one)
    is deleted; the key becomes PendingImport unless it is pending deletion.

    Returns:
        The key, and the id of the material deleted (None when it had none).

    Raises:
        UnsupportedOperationError: not an EXTERNAL key.
        NotFoundError: a KeyMaterialId the key does not have.
    """
    async with svc.control:
        key = svc.authorized(
            ctx, "kms:DeleteImportedKeyMaterial", key_id, aliases=False
        )
        _external(key)
        require(key.state, Op.DESCRIBE, key.arn)
        if key_material_id is None:
            version = key.current_version
            if version == 0:
                return key, None  # nothing imported yet: no effect, as on AWS
        else:
            known = [m["id"] for m in key.imported]
            if key_material_id not in known:
                raise NotFoundError(
                    f"Key material {key_material_id} is not associated with {key.arn}."
                )
            version = known.index(key_material_id) + 1
        material_id = key.material_id(version)
        await remove_material(svc, key, version)
        return key, material_id


async def remove_material(svc: KmsService, key: KmsKey, version: int) -> None:
    """Delete a version's imported material, durably, then cleanse its slot; the
    caller holds ``svc.control``. Material waiting for rotation is forgotten whole
    (nothing was ever sealed under it); any other version keeps its entry and place
    and the key waits for the same material again."""
    slot = key.versions[version - 1]
    if slot is None:
        return  # already deleted: no effect
    if key.pending_rotation and version == len(key.versions):
        record = key.record(imported=key.imported[:-1], pending_rotation=False)
        await svc.write(svc.store.remove_material, key.key_id, version, record)
        key.versions.pop()
    else:
        state = (
            key.state
            if key.state is KeyState.PENDING_DELETION
            else KeyState.PENDING_IMPORT
        )
        record = key.record(state=state)
        await svc.write(svc.store.remove_material, key.key_id, version, record)
        key.versions[version - 1] = None
    key.apply(record)
    with contextlib.suppress(KeyplaneError):
        key.partition.destroy_key(slot)


async def sweep_expired_material(svc: KmsService) -> int:
    """Delete every imported material whose ValidTo has come.

    Returns:
        How many material versions were deleted.
    """
    deleted = 0
    for key in [k for k in svc.keys.values() if _expired_versions(svc, k)]:
        async with svc.control:
            if svc.keys.get(key.key_id) is not key:
                continue
            for version in _expired_versions(svc, key):
                await remove_material(svc, key, version)
                deleted += 1
                _log.info(
                    "deleted imported key material version %d of key %s at its ValidTo",
                    version,
                    key.key_id,
                )
    return deleted


def _expired_versions(svc: KmsService, key: KmsKey) -> list[int]:
    if key.origin != ORIGIN_EXTERNAL:
        return []
    now = svc.clock()
    return [
        version
        for version, (slot, entry) in enumerate(
            zip(key.versions, key.imported, strict=False), start=1
        )
        if slot is not None
        and entry.get("valid_to") is not None
        and entry["valid_to"] <= now
    ]
