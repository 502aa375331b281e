"""keyplane's batch extension: many Encrypt, Decrypt or GenerateDataKey items in one
request, each with the semantics of its single-item operation and its own outcome.

Items are resolved and checked one by one (a bad item fails alone), then grouped by
key, and each group goes to the HSM as one native batch call rather than through the
micro-batcher's per-item futures: a request of a thousand items costs one call per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from keyplane.errors import (
    IncorrectKeyError,
    InvalidCiphertextError,
    KeyplaneError,
    ValidationError,
)
from keyplane.kms import _blob
from keyplane.kms._model import KmsKey
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms.ops.crypto import (
    MAX_PLAINTEXT_BYTES,
    DataKey,
    Opened,
    Sealed,
    _key_of_blob,
    _usable,
    data_key_bytes,
)

# A request may carry at most this many items; more belongs in several requests.
MAX_ITEMS: Final = 10_000


@dataclass(frozen=True, slots=True)
class EncryptItem:
    key_id: str
    plaintext: bytes
    encryption_context: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class DecryptItem:
    ciphertext_blob: bytes
    encryption_context: Mapping[str, str] | None = None
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class DataKeyItem:
    key_id: str
    number_of_bytes: int | None = None
    key_spec: str | None = None
    encryption_context: Mapping[str, str] | None = None


def _check_count(n: int) -> None:
    if not 1 <= n <= MAX_ITEMS:
        raise ValidationError(f"A batch carries 1 to {MAX_ITEMS} items, not {n}.")


class _Groups:
    """Items that passed their checks, grouped by key and material version, keeping
    each item's index so results land back in request order."""

    def __init__(self) -> None:
        self.groups: dict[
            tuple[str, int],
            tuple[KmsKey, list[int], list[Any], list[bytes], list[bytes]],
        ] = {}

    def add(
        self,
        key: KmsKey,
        version: int,
        index: int,
        value: Any,
        header: bytes,
        aad: bytes,
    ) -> None:
        group = self.groups.get((key.key_id, version))
        if group is None:
            group = self.groups[(key.key_id, version)] = (key, [], [], [], [])
        group[1].append(index)
        group[2].append(value)
        group[3].append(header)
        group[4].append(aad)


def _resolver(svc: KmsService, ctx: RequestContext) -> Any:
    """Resolve KeyId members once per distinct value: a batch usually names one key."""
    seen: dict[str, KmsKey | KeyplaneError] = {}

    def resolve(key_id: str) -> KmsKey:
        found = seen.get(key_id)
        if found is None:
            try:
                found = svc.resolve(ctx, key_id)
                _usable(found, None, False)
            except KeyplaneError as exc:
                found = exc
            seen[key_id] = found
        if isinstance(found, KeyplaneError):
            raise found
        return found

    return resolve


async def batch_encrypt(
    svc: KmsService, ctx: RequestContext, items: Sequence[EncryptItem]
) -> list[Sealed | KeyplaneError]:
    """Encrypt every item; per item a Sealed or the error that failed it alone."""
    _check_count(len(items))
    results: list[Sealed | KeyplaneError] = [ValidationError("")] * len(items)
    resolve = _resolver(svc, ctx)
    groups = _Groups()
    for i, item in enumerate(items):
        try:
            if not 1 <= len(item.plaintext) <= MAX_PLAINTEXT_BYTES:
                raise ValidationError(
                    f"Plaintext must be 1 to {MAX_PLAINTEXT_BYTES} bytes long."
                )
            key = resolve(item.key_id)
        except KeyplaneError as exc:
            results[i] = exc
            continue
        version = key.current_version
        head = _blob.header(key.key_id, version)
        groups.add(
            key,
            version,
            i,
            item.plaintext,
            head,
            _blob.aad(head, item.encryption_context),
        )
    for (_, version), (key, indices, plaintexts, heads, aads) in groups.groups.items():
        sealed = await svc.run_batch(
            key.versions[version - 1].partition.encrypt_batch,
            key.versions[version - 1],
            plaintexts,
            aads,
        )
        for index, head, out in zip(indices, heads, sealed, strict=True):
            results[index] = (
                out if isinstance(out, KeyplaneError) else Sealed(key, head + out)
            )
    return results


async def batch_decrypt(
    svc: KmsService, ctx: RequestContext, items: Sequence[DecryptItem]
) -> list[Opened | KeyplaneError]:
    """Decrypt every item; per item an Opened or the error that failed it alone."""
    _check_count(len(items))
    results: list[Opened | KeyplaneError] = [ValidationError("")] * len(items)
    resolve = _resolver(svc, ctx)
    groups = _Groups()
    for i, item in enumerate(items):
        try:
            head, sealed = _blob.parse(item.ciphertext_blob)
            key = _key_of_blob(svc, ctx, head)
            if item.key_id is not None and resolve(item.key_id) is not key:
                raise IncorrectKeyError(
                    "The key ID in the request does not identify a CMK that can "
                    "perform this operation."
                )
            _usable(key, None, False)
            if not 1 <= head.material_version <= key.current_version:
                raise InvalidCiphertextError("")
        except KeyplaneError as exc:
            results[i] = exc
            continue
        groups.add(
            key,
            head.material_version,
            i,
            sealed,
            head.header,
            _blob.aad(head.header, item.encryption_context),
        )
    for (_, version), (key, indices, sealed_items, _, aads) in groups.groups.items():
        slot = key.versions[version - 1]
        opened = await svc.run_batch(
            slot.partition.decrypt_batch, slot, sealed_items, aads
        )
        for index, out in zip(indices, opened, strict=True):
            results[index] = out if isinstance(out, KeyplaneError) else Opened(key, out)
    return results


async def batch_generate_data_key(
    svc: KmsService, ctx: RequestContext, items: Sequence[DataKeyItem]
) -> list[DataKey | KeyplaneError]:
    """Make a data key per item; per item a DataKey or the error that failed it."""
    _check_count(len(items))
    results: list[DataKey | KeyplaneError] = [ValidationError("")] * len(items)
    resolve = _resolver(svc, ctx)
    groups = _Groups()
    for i, item in enumerate(items):
        try:
            size = data_key_bytes(item.number_of_bytes, item.key_spec)
            key = resolve(item.key_id)
        except KeyplaneError as exc:
            results[i] = exc
            continue
        version = key.current_version
        head = _blob.header(key.key_id, version)
        groups.add(
            key, version, i, size, head, _blob.aad(head, item.encryption_context)
        )
    for (_, version), (key, indices, sizes, heads, aads) in groups.groups.items():
        slot = key.versions[version - 1]
        made = await svc.run_batch(
            lambda s, n, a, p=slot.partition: p.generate_data_key_batch(
                s, n, len(n), a
            ),
            slot,
            sizes,
            aads,
        )
        for index, head, out in zip(indices, heads, made, strict=True):
            results[index] = (
                out
                if isinstance(out, KeyplaneError)
                else DataKey(key, out[0], head + out[1])
            )
    return results
