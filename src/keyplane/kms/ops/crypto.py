"""The data plane: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
GenerateDataKeyWithoutPlaintext, GenerateRandom.

Each reads top to bottom: validate, resolve the key, check its state and usage, act
through the micro-batcher, respond. The encryption context is bound as AAD together with
the blob's header (see ``keyplane.kms._blob``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from keyplane import hsm
from keyplane.errors import (
    DryRunError,
    IncorrectKeyError,
    InvalidCiphertextError,
    InvalidKeyUsageError,
    ValidationError,
)
from keyplane.kms import _blob
from keyplane.kms._model import ENCRYPT_DECRYPT, SYMMETRIC_DEFAULT, KmsKey
from keyplane.kms._quota import SYMMETRIC
from keyplane.kms._service import KmsService, RequestContext, with_request_alias
from keyplane.kms._state import Op, require

# AWS KMS API reference: Encrypt takes 1..4096 bytes; data keys are 1..1024 bytes.
MAX_PLAINTEXT_BYTES: Final = 4096
DATA_KEY_SPECS: Final = {"AES_256": 32, "AES_128": 16}
MAX_RANDOM_BYTES: Final = 1024
# The kms:EncryptionAlgorithm condition key of Encrypt, Decrypt and ReEncrypt.
ALGORITHM_VALUES: Final = {"kms:encryptionalgorithm": SYMMETRIC_DEFAULT}


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext blob and the key that made it."""

    key: KmsKey
    ciphertext_blob: bytes


@dataclass(frozen=True, slots=True)
class Opened:
    key: KmsKey
    plaintext: bytes
    version: int  # the material version that sealed it


@dataclass(frozen=True, slots=True)
class DataKey:
    key: KmsKey
    plaintext: bytes
    ciphertext_blob: bytes
    version: int


@dataclass(frozen=True, slots=True)
class ReSealed:
    source: KmsKey
    destination: KmsKey
    ciphertext_blob: bytes
    source_version: int
    destination_version: int


def _usable(key: KmsKey, algorithm: str | None, dry_run: bool) -> None:
    """The checks every cryptographic operation makes once it has its key."""
    # A custom key store's key is Unavailable while its store is not connected.
    require(key.effective_state, Op.CRYPTO, key.arn)
    if key.key_usage != ENCRYPT_DECRYPT or key.key_spec != SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageError(
            f"{key.arn} key usage is {key.key_usage} which is not valid for this "
            "operation."
        )
    if algorithm is not None and algorithm != SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageError(
            f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}."
        )
    if dry_run:
        raise DryRunError(
            "The request would have succeeded, but the DryRun flag is set."
        )


async def encrypt(
    svc: KmsService,
    ctx: RequestContext,
    *,
    key_id: str,
    plaintext: bytes,
    encryption_context: Mapping[str, str] | None = None,
    encryption_algorithm: str | None = None,
    dry_run: bool = False,
) -> Sealed:
    """AWS Encrypt: seal up to 4096 bytes under a symmetric KMS key.

    Raises:
        ValidationError: an empty or over-long plaintext.
        NotFoundError: no such key or alias.
        DisabledError, KeyStateError: the key's state refuses encryption.
        InvalidKeyUsageError: not a symmetric encryption key.
        ThrottlingError: the caller's account is over its request quota.
    """
    svc.quotas.charge(ctx.account, SYMMETRIC)
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT_BYTES:
        raise ValidationError(
            "1 validation error detected: Value at 'plaintext' failed to satisfy "
            "constraint: Member must have length "
            + (
                "greater than or equal to 1"
                if not plaintext
                else f"less than or equal to {MAX_PLAINTEXT_BYTES}"
            )
        )
    key = svc.authorized(
        ctx,
        "kms:Encrypt",
        key_id,
        encryption_context=encryption_context,
        values=ALGORITHM_VALUES,
    )
    _usable(key, encryption_algorithm, dry_run)
    blob, _ = await _seal(svc, key, plaintext, encryption_context, ctx.account)
    return Sealed(key, blob)


async def _seal(
    svc: KmsService,
    key: KmsKey,
    plaintext: bytes,
    context: Mapping[str, str] | None,
    tenant: str = "",
) -> tuple[bytes, int]:
    """The blob, sealed under the key's current material, and that version;
    ``tenant`` (the caller's account) is whom the HSM's scheduler counts it to."""
    version = key.current_version
    head = key.blob_header(version)
    sealed = await svc.batcher_for(key).encrypt(
        key.slot(version), plaintext, _blob.aad(head, context), tenant
    )
    return head + sealed, version


async def decrypt(
    svc: KmsService,
    ctx: RequestContext,
    *,
    ciphertext_blob: bytes,
    encryption_context: Mapping[str, str] | None = None,
    key_id: str | None = None,
    encryption_algorithm: str | None = None,
    dry_run: bool = False,
) -> Opened:
    """AWS Decrypt: the blob names its key; a KeyId, when given, must agree.

    Raises:
        InvalidCiphertextError: an altered or foreign blob, or another context.
        IncorrectKeyError: ``key_id`` names another key than the blob's.
        DisabledError, KeyStateError: the key's state refuses decryption.
    """
    svc.quotas.charge(ctx.account, SYMMETRIC)
    head, sealed = _blob.parse(ciphertext_blob)
    key = authorized_blob_key(svc, ctx, "kms:Decrypt", head, key_id, encryption_context)
    _usable(key, encryption_algorithm, dry_run)
    plaintext = await _open(svc, key, head, sealed, encryption_context, ctx.account)
    return Opened(key, plaintext, head.material_version)


def authorized_blob_key(
    svc: KmsService,
    ctx: RequestContext,
    action: str,
    head: _blob.BlobHeader,
    key_id: str | None,
    encryption_context: Mapping[str, str] | None,
    resolve: Callable[[str], KmsKey] | None = None,
) -> KmsKey:
    """The key a blob names, of whichever account, once the caller may ``action``
    with it (cross-account Decrypt works by the blob alone) and a ``key_id`` given
    beside the blob names that same key (``resolve`` looks it up; by default, as
    ``svc.resolve`` does).

    Raises:
        InvalidCiphertextError: the blob names no key.
        AccessDeniedError: no policy or grant allows ``action``.
        IncorrectKeyError: ``key_id`` names another key.
    """
    key = svc.keys.get(head.key_id)
    # A blob naming no key is as good as a forged one: answer as AWS does for any
    # blob it cannot authenticate, without saying which check failed.
    if key is None:
        raise InvalidCiphertextError("")
    svc.access.check_key(
        ctx,
        action,
        key,
        encryption_context=encryption_context,
        values=with_request_alias(key_id or "", ALGORITHM_VALUES),
    )
    if key_id is not None:
        named = resolve(key_id) if resolve is not None else svc.resolve(ctx, key_id)
        if named is not key:
            raise IncorrectKeyError(
                "The key ID in the request does not identify a CMK that can perform "
                "this operation."
            )
    return key


async def _open(
    svc: KmsService,
    key: KmsKey,
    head: _blob.BlobHeader,
    sealed: bytes,
    context: Mapping[str, str] | None,
    tenant: str = "",
) -> bytes:
    if not 1 <= head.material_version <= key.current_version:
        raise InvalidCiphertextError("")
    slot = key.slot(head.material_version)
    return await svc.batcher_for(key).decrypt(
        slot, sealed, _blob.aad(head.header, context), tenant
    )


async def re_encrypt(
    svc: KmsService,
    ctx: RequestContext,
    *,
    ciphertext_blob: bytes,
    destination_key_id: str,
    source_encryption_context: Mapping[str, str] | None = None,
    source_key_id: str | None = None,
    destination_encryption_context: Mapping[str, str] | None = None,
    source_encryption_algorithm: str | None = None,
    destination_encryption_algorithm: str | None = None,
    dry_run: bool = False,
) -> ReSealed:
    """AWS ReEncrypt: open under the source key and seal under the destination key;
    the plaintext never leaves the service."""
    svc.quotas.charge(ctx.account, SYMMETRIC)
    head, sealed = _blob.parse(ciphertext_blob)
    source = authorized_blob_key(
        svc, ctx, "kms:ReEncryptFrom", head, source_key_id, source_encryption_context
    )
    destination = svc.authorized(
        ctx,
        "kms:ReEncryptTo",
        destination_key_id,
        encryption_context=destination_encryption_context,
        values=ALGORITHM_VALUES,
    )
    _usable(source, source_encryption_algorithm, False)
    _usable(destination, destination_encryption_algorithm, dry_run)
    plaintext = await _open(
        svc, source, head, sealed, source_encryption_context, ctx.account
    )
    blob, version = await _seal(
        svc, destination, plaintext, destination_encryption_context, ctx.account
    )
    return ReSealed(source, destination, blob, head.material_version, version)


def data_key_bytes(number_of_bytes: int | None, key_spec: str | None) -> int:
    """The size GenerateDataKey asks for: NumberOfBytes or KeySpec, exactly one.

    Raises:
        ValidationError: neither or both, with AWS's message.
    """
    if (number_of_bytes is None) == (key_spec is None):
        raise ValidationError("Please specify either number of bytes or key spec.")
    if key_spec is not None:
        return DATA_KEY_SPECS[key_spec]
    return int(number_of_bytes)  # type: ignore[arg-type]  # not None: checked above


async def generate_data_key(
    svc: KmsService,
    ctx: RequestContext,
    *,
    key_id: str,
    number_of_bytes: int | None = None,
    key_spec: str | None = None,
    encryption_context: Mapping[str, str] | None = None,
    dry_run: bool = False,
    action: str = "kms:GenerateDataKey",
) -> DataKey:
    """AWS GenerateDataKey (and, with its ``action``, GenerateDataKeyWithoutPlaintext):
    a fresh data key, in plaintext and sealed under the key."""
    svc.quotas.charge(ctx.account, SYMMETRIC)
    size = data_key_bytes(number_of_bytes, key_spec)
    key = svc.authorized(ctx, action, key_id, encryption_context=encryption_context)
    _usable(key, None, dry_run)
    version = key.current_version
    head = key.blob_header(version)
    plaintext, sealed = await svc.batcher_for(key).generate_data_key(
        key.slot(version), size, _blob.aad(head, encryption_context), ctx.account
    )
    return DataKey(key, plaintext, head + sealed, version)


def generate_random(
    svc: KmsService, ctx: RequestContext, number_of_bytes: int | None
) -> bytes:
    """AWS GenerateRandom: 1..1024 bytes from the HSM's random source."""
    svc.quotas.charge(ctx.account, SYMMETRIC)
    svc.access.check_account(ctx, "kms:GenerateRandom")
    if number_of_bytes is None:
        raise ValidationError("Please specify number of bytes.")
    return hsm.random_bytes(number_of_bytes)
