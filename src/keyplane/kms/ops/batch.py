"""keyplane's batch extension: many Encrypt, Decrypt or GenerateDataKey items in one
request, each with the semantics of its single-item operation and its own outcome.

Items are resolved and checked one by one (a bad item fails alone), then grouped by
key, and each group goes to the HSM as one native batch call rather than through the
micro-batcher's per-item futures: a request of a thousand items costs one call per key.

Every item counts against the caller's request quota, as if sent alone. A request is
worked through in slices, each after a turn from the shared HSM's scheduler, so one
account's requests of thousands of items do not hold the event loop while another
account's requests wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from keyplane.errors import (
    InvalidCiphertextError,
    KeyplaneError,
    ValidationError,
)
from keyplane.kms import _blob
from keyplane.kms._model import KmsKey
from keyplane.kms._quota import SYMMETRIC
from keyplane.kms._service import KmsService, RequestContext, with_request_alias
from keyplane.kms.ops.crypto import (
    ALGORITHM_VALUES,
    MAX_PLAINTEXT_BYTES,
    Opened,
    Sealed,
    _usable,
    authorized_blob_key,
    data_key_bytes,
)

# A request may carry at most this many items; more belongs in several requests.
MAX_ITEMS: Final = 10_000
# Data keys of one repeated item are made in slices this large, each after a turn from
# the shared HSM's scheduler: a slice's native call takes well under a millisecond.
ALIKE_SLICE_ITEMS: Final = 1024


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


async def _run_group(
    svc: KmsService,
    results: list[Any],
    group: _Group,
    fn: Callable[..., Sequence[Any]],
    *args: Any,
) -> Sequence[Any] | None:
    """One group's native batch call, or None once every item of the group has
    failed: its key's custom key store stopped serving (disconnected, or its cluster
    lost its HSMs) after the items were checked. The other groups go on."""
    try:
        return await svc.run_batch_for(
            group.key, fn, group.slot, *args, items=len(group.values)
        )
    except KeyplaneError as exc:
        for index in group.indices:
            results[index] = exc
        return None


def _check_count(n: int) -> None:
    if not 1 <= n <= MAX_ITEMS:
        raise ValidationError(f"A batch carries 1 to {MAX_ITEMS} items, not {n}.")


class _Groups:
    """Items that passed their checks, grouped by key and material version, keeping
    each item's index so results land back in request order. The blob header is
    computed once per group, and when no item of a group has an encryption context the
    group shares one AAD, which the native call then reads once for all items."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], _Group] = {}

    def add(
        self,
        key: KmsKey,
        version: int,
        index: int,
        value: Any,
        context: Mapping[str, str] | None,
    ) -> None:
        group = self.groups.get((key.key_id, version))
        if group is None:
            group = self.groups[(key.key_id, version)] = _Group(key, version)
        group.indices.append(index)
        group.values.append(value)
        group.contexts.append(context)
        if context:
            group.any_context = True


class _Group:
    __slots__ = (
        "any_context",
        "contexts",
        "header",
        "indices",
        "key",
        "values",
        "version",
    )

    def __init__(self, key: KmsKey, version: int) -> None:
        self.key = key
        self.version = version
        self.header = key.blob_header(version)
        self.indices: list[int] = []
        self.values: list[Any] = []
        self.contexts: list[Mapping[str, str] | None] = []
        self.any_context = False

    def aad(self) -> bytes | list[bytes]:
        if not self.any_context:
            return _blob.aad(self.header, None)
        return [_blob.aad(self.header, c) for c in self.contexts]

    @property
    def slot(self) -> Any:
        return self.key.slot(self.version)


def _resolver(
    svc: KmsService,
    ctx: RequestContext,
    action: str,
    values: Mapping[str, object] | None = None,
) -> Any:
    """Resolve KeyId members once per distinct value (a batch usually names one key),
    then authorize each item with its own encryption context: decisions that do not
    depend on the context are cached on the key, so that costs a lookup per item."""
    seen: dict[str, KmsKey | KeyplaneError] = {}

    def resolve(key_id: str, context: Mapping[str, str] | None) -> KmsKey:
        found = seen.get(key_id)
        if found is None:
            try:
                found = svc.resolve(ctx, key_id)
            except KeyplaneError as exc:
                found = exc
            seen[key_id] = found
        if isinstance(found, KeyplaneError):
            raise found
        svc.access.check_key(
            ctx,
            action,
            found,
            encryption_context=context,
            values=with_request_alias(key_id, values),
        )
        _usable(found, None, False)
        svc.charge_key_store(found)
        return found

    return resolve


async def batch_encrypt(
    svc: KmsService, ctx: RequestContext, items: Sequence[EncryptItem]
) -> list[Sealed | KeyplaneError]:
    """Encrypt every item; per item a Sealed or the error that failed it alone.

    Raises:
        ThrottlingError: the items are more than the caller's quota has left.
    """
    _check_count(len(items))
    svc.quotas.charge(ctx.account, SYMMETRIC, len(items))
    results: list[Sealed | KeyplaneError] = [ValidationError("")] * len(items)
    resolve = _resolver(svc, ctx, "kms:Encrypt", ALGORITHM_VALUES)
    async for start, stop in svc.batcher.slices(ctx.account, len(items)):
        groups = _Groups()
        for i in range(start, stop):
            item = items[i]
            try:
                if not 1 <= len(item.plaintext) <= MAX_PLAINTEXT_BYTES:
                    raise ValidationError(
                        f"Plaintext must be 1 to {MAX_PLAINTEXT_BYTES} bytes long."
                    )
                key = resolve(item.key_id, item.encryption_context)
            except KeyplaneError as exc:
                results[i] = exc
                continue
            groups.add(
                key, key.current_version, i, item.plaintext, item.encryption_context
            )
        for group in groups.groups.values():
            sealed = await _run_group(
                svc,
                results,
                group,
                group.slot.partition.encrypt_batch,
                group.values,
                group.aad(),
            )
            if sealed is None:
                continue
            head, key = group.header, group.key
            for index, out in zip(group.indices, sealed, strict=True):
                results[index] = (
                    out if isinstance(out, KeyplaneError) else Sealed(key, head + out)
                )
    return results


async def batch_decrypt(
    svc: KmsService, ctx: RequestContext, items: Sequence[DecryptItem]
) -> list[Opened | KeyplaneError]:
    """Decrypt every item; per item an Opened or the error that failed it alone.

    Raises:
        ThrottlingError: the items are more than the caller's quota has left.
    """
    _check_count(len(items))
    svc.quotas.charge(ctx.account, SYMMETRIC, len(items))
    results: list[Opened | KeyplaneError] = [ValidationError("")] * len(items)
    # A KeyId here only has to name the blob's key; its state is checked on the blob's
    # key itself, as single-item Decrypt does.
    names: dict[str, KmsKey] = {}

    def named(key_id: str) -> KmsKey:
        key = names.get(key_id)
        if key is None:
            key = names[key_id] = svc.resolve(ctx, key_id)
        return key

    async for start, stop in svc.batcher.slices(ctx.account, len(items)):
        groups = _Groups()
        for i in range(start, stop):
            item = items[i]
            try:
                head, sealed = _blob.parse(item.ciphertext_blob)
                key = authorized_blob_key(
                    svc,
                    ctx,
                    "kms:Decrypt",
                    head,
                    item.key_id,
                    item.encryption_context,
                    resolve=named,
                )
                _usable(key, None, False)
                svc.charge_key_store(key)
                if not 1 <= head.material_version <= key.current_version:
                    raise InvalidCiphertextError("")
            except KeyplaneError as exc:
                results[i] = exc
                continue
            groups.add(key, head.material_version, i, sealed, item.encryption_context)
        for group in groups.groups.values():
            opened = await _run_group(
                svc,
                results,
                group,
                group.slot.partition.decrypt_batch,
                group.values,
                group.aad(),
            )
            if opened is None:
                continue
            for index, out in zip(group.indices, opened, strict=True):
                results[index] = (
                    out
                    if isinstance(out, KeyplaneError)
                    else Opened(group.key, out, group.version)
                )
    return results


# A data key made in a batch: (the key that sealed it, plaintext, ciphertext blob).
DataKeyTuple = tuple[KmsKey, bytes, bytes]


def _tuples(made: DataKeyRows) -> list[DataKeyTuple | KeyplaneError]:
    try:
        return list(made.as_tuples())
    finally:
        made.rows.fill(0)


async def batch_generate_data_keys_alike(
    svc: KmsService, ctx: RequestContext, item: DataKeyItem, n: int
) -> DataKeyRows | list[DataKeyTuple | KeyplaneError]:
    """``n`` data keys for one repeated item: rows to encode in bulk when every key
    was made, else per-item results.

    Raises:
        ThrottlingError: the items are more than the caller's quota has left.
    """
    _check_count(n)
    svc.quotas.charge(ctx.account, SYMMETRIC, n)
    return await _data_keys_alike(svc, ctx, item, n)


async def batch_generate_data_key(
    svc: KmsService, ctx: RequestContext, items: Sequence[DataKeyItem]
) -> list[DataKeyTuple | KeyplaneError]:
    """Make a data key per item; per item (key, plaintext, blob) or its error.

    Tuples rather than objects: at a thousand items a request, building one object
    per item costs about as much as making the key. A request of one item repeated
    is better served by ``batch_generate_data_keys_alike``, whose rows the API layer
    encodes in bulk.

    Raises:
        ThrottlingError: the items are more than the caller's quota has left.
    """
    _check_count(len(items))
    svc.quotas.charge(ctx.account, SYMMETRIC, len(items))
    results: list[DataKeyTuple | KeyplaneError] = [ValidationError("")] * len(items)
    resolve = _resolver(svc, ctx, "kms:GenerateDataKey")
    parsed: dict[int, tuple[int, KmsKey] | KeyplaneError] = {}
    async for start, stop in svc.batcher.slices(ctx.account, len(items)):
        groups = _Groups()
        for i in range(start, stop):
            item = items[i]
            # Requests usually repeat one item; check each distinct item object once.
            known = parsed.get(id(item))
            if known is None:
                try:
                    known = (
                        data_key_bytes(item.number_of_bytes, item.key_spec),
                        resolve(item.key_id, item.encryption_context),
                    )
                except KeyplaneError as exc:
                    known = exc
                parsed[id(item)] = known
            if isinstance(known, KeyplaneError):
                results[i] = known
                continue
            size, key = known
            groups.add(key, key.current_version, i, size, item.encryption_context)
        for group in groups.groups.values():
            sizes = group.values
            key_bytes: int | list[int] = (
                sizes[0] if sizes.count(sizes[0]) == len(sizes) else sizes
            )
            made = await _run_group(
                svc,
                results,
                group,
                group.slot.partition.generate_data_key_batch,
                key_bytes,
                len(sizes),
                group.aad(),
            )
            if made is None:
                continue
            head, key = group.header, group.key
            for index, out in zip(group.indices, made, strict=True):
                results[index] = (
                    out
                    if isinstance(out, KeyplaneError)
                    else (key, out[0], head + out[1])
                )
    return results


@dataclass(frozen=True, slots=True)
class DataKeyRows:
    """Data keys made together under one key, for the API to encode in bulk: row i of
    ``rows`` is ``plaintext key || IV || sealed key || tag``, and item i's ciphertext
    blob is ``header || rows[i, key_bytes:]``."""

    key: KmsKey
    header: bytes
    key_bytes: int
    rows: Any  # numpy uint8 matrix; the caller zeroes it when done

    def as_tuples(self) -> list[DataKeyTuple]:
        k = self.key_bytes
        return [
            (self.key, bytes(row[:k]), self.header + bytes(row[k:]))
            for row in self.rows
        ]


async def _data_keys_alike(
    svc: KmsService, ctx: RequestContext, item: DataKeyItem, n: int
) -> DataKeyRows | list[DataKeyTuple | KeyplaneError]:
    """``n`` data keys for one item repeated: the common shape of a batch request, done
    with one check and a native call per slice of ``ALIKE_SLICE_ITEMS``, and no
    per-item bookkeeping."""
    try:
        size = data_key_bytes(item.number_of_bytes, item.key_spec)
        key = _resolver(svc, ctx, "kms:GenerateDataKey")(
            item.key_id, item.encryption_context
        )
        # The resolver counted one request against a custom key store's quota.
        svc.charge_key_store(key, n - 1)
    except KeyplaneError as exc:
        return [exc] * n
    version = key.current_version
    slot = key.slot(version)
    head = key.blob_header(version)
    aad = _blob.aad(head, item.encryption_context)
    parts: list[Any] = []
    failures: dict[int, KeyplaneError] = {}
    # Set when the key's custom key store stopped serving part way: the items from
    # there on fail with it, the keys made before stand.
    stopped: tuple[int, KeyplaneError] | None = None
    try:
        async for start, stop in svc.batcher.slices(ctx.account, n, ALIKE_SLICE_ITEMS):
            try:
                rows, failed = await svc.run_batch_for(
                    key,
                    slot.partition.generate_data_key_rows,
                    slot,
                    size,
                    stop - start,
                    aad,
                    items=stop - start,
                )
            except KeyplaneError as exc:
                stopped = (start, exc)
                break
            parts.append(rows)
            failures.update((start + i, e) for i, e in failed.items())
        if stopped is not None and not parts:
            return [stopped[1]] * n
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
    finally:
        if len(parts) > 1:
            for part in parts:
                part.fill(0)  # plaintext keys, now copied into ``rows`` (or failed)
    made = DataKeyRows(key, head, size, rows)
    if not failures and stopped is None:
        return made
    tuples: list[DataKeyTuple | KeyplaneError] = _tuples(made)
    if stopped is not None:
        tuples += [stopped[1]] * (n - stopped[0])
    return [failures.get(i, t) for i, t in enumerate(tuples)]
