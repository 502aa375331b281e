"""The emulated HSM: partitions by tenancy, key slots as handles, batch operations.

Shared tenancy (AWS KMS's multi-tenant fleet) puts every shared partition in one native
HSM, so one batch may carry items of many tenants. Dedicated tenancy (a CloudHSM cluster
behind a custom key store) gives a partition a native HSM of its own: its own lock, its
own capacity, and no batch ever mixes it with another tenant. This layer knows
partitions and handles, never accounts, key ids or policies.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Sequence
from typing import Any, NoReturn, cast, final

from keyplane.errors import (
    KeyplaneError,
    PartitionMismatchError,
    RootKeyError,
    ValidationError,
)
from keyplane.native import (
    MAX_CONTEXT_BYTES,
    WRAPPING_ALGORITHMS,
    Aad,
    DataKey,
    NativeHsm,
    Result,
    memory_locked,
)

_log = logging.getLogger(__name__)
_unlocked_reported = threading.Event()

Results = list[Result]
DataKeyResults = list[DataKey | Any]


class Tenancy(enum.Enum):
    """Where a partition's keys live."""

    SHARED = "shared"
    """In the shared HSM fleet, batched together with other tenants' items."""
    DEDICATED = "dedicated"
    """In an HSM of its own, never batched with another tenant."""


@final
class KeySlot:
    """A handle to one key inside a partition: an AES-256 key, or an RSA wrapping key
    for importing key material (``Partition.generate_wrapping_key``).

    It carries no key bytes and cannot be pickled or copied: the material stays in the
    native HSM, and the handle is only a name for it.
    """

    __slots__ = ("__weakref__", "_handle", "_partition")

    def __init__(self, partition: Partition, handle: int) -> None:
        self._partition = partition
        self._handle = handle

    @property
    def handle(self) -> int:
        """The native HSM's name for this slot (never reused, not a secret)."""
        return self._handle

    @property
    def partition(self) -> Partition:
        return self._partition

    def __repr__(self) -> str:
        p = self._partition
        return (
            f"KeySlot(partition={p.id}, tenancy={p.tenancy.value}, "
            f"handle={self._handle:#x})"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            "a KeySlot cannot be pickled: key material never leaves the HSM"
        )

    def __copy__(self) -> NoReturn:
        raise TypeError("a KeySlot cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("a KeySlot cannot be copied")


@final
class Partition:
    """A tenant's isolated key space, in the shared fleet or in an HSM of its own.

    Its batch methods refuse (per item, with ``PartitionMismatchError``) any slot that
    belongs to another partition.
    """

    def __init__(
        self,
        hsm: Hsm,
        native_hsm: NativeHsm,
        partition_id: int,
        tenancy: Tenancy,
    ) -> None:
        self._hsm = hsm
        self._native = native_hsm
        self._id = partition_id
        self._tenancy = tenancy

    @property
    def id(self) -> int:
        return self._id

    @property
    def tenancy(self) -> Tenancy:
        return self._tenancy

    @property
    def native(self) -> NativeHsm:
        """The native HSM that holds this partition (shared or its own)."""
        return self._native

    def __repr__(self) -> str:
        return f"Partition(id={self._id}, tenancy={self._tenancy.value})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Partition cannot be pickled; export() it instead")

    # --- keys -------------------------------------------------------------------------

    def generate_key(self) -> KeySlot:
        """A fresh AES-256 key generated inside the HSM."""
        return KeySlot(self, self._native.keyslot_generate(self._id))

    def import_key(self, wrapped: bytes, context: bytes = b"") -> KeySlot:
        """A key from ``export_key`` of this partition, unwrapped inside the HSM.

        Raises:
            InvalidCiphertextError: wrapped by another partition, for another context,
                or altered.
            ValidationError: the context is too long.
        """
        _check_context(context)
        return KeySlot(self, self._native.keyslot_import(self._id, wrapped, context))

    def export_key(self, slot: KeySlot, context: bytes = b"") -> bytes:
        """The slot's key wrapped under this partition's key, bound to ``context``: the
        only form in which key material leaves the HSM for storage.

        Raises:
            PartitionMismatchError: the slot belongs to another partition.
            KeyUnavailableError: the slot was destroyed.
        """
        _check_context(context)
        self._require_own(slot)
        return self._native.keyslot_export(self._id, slot.handle, context)

    def destroy_key(self, slot: KeySlot) -> None:
        """Destroy the slot's key; every later use of the slot fails.

        Raises:
            PartitionMismatchError: the slot belongs to another partition.
            KeyUnavailableError: the slot was already destroyed.
        """
        self._require_own(slot)
        self._native.keyslot_destroy(self._id, slot.handle)

    def export(self) -> bytes:
        """This partition's wrapping key, wrapped under the root key (for storage).

        Raises:
            RootKeyError: the HSM refuses new partitions (``refuse_new_partitions``).
        """
        self._hsm._check_sealing()
        return self._native.partition_export(self._id)

    def destroy(self) -> None:
        """Destroy the partition and every key in it."""
        self._hsm._forget(self)
        self._native.partition_destroy(self._id)
        if self._tenancy is Tenancy.DEDICATED:
            self._native.close()

    def _require_own(self, slot: KeySlot) -> None:
        if slot.partition is not self:
            raise PartitionMismatchError("the key slot belongs to another partition")

    # --- batches ----------------------------------------------------------------------

    def encrypt_batch(
        self,
        slots: KeySlot | Sequence[KeySlot],
        plaintexts: Sequence[bytes],
        aad: Aad = None,
    ) -> Results:
        """Seal each plaintext under its slot of this partition, in one native call.

        Args:
            slots: one slot for every item, or one per item.
            plaintexts: 1 .. ``keyplane.native.MAX_INPUT_BYTES`` bytes each.
            aad: None, one AAD for every item, or one per item.

        Returns:
            Per item, ``IV || ciphertext || tag``, or the error that failed that item
            alone (``ValidationError``, ``KeyUnavailableError``,
            ``PartitionMismatchError``).

        Raises:
            HsmFaultError: an internal fault of the HSM; the whole batch fails.
        """
        return self._native.encrypt_batch(self._id, _handles(slots), plaintexts, aad)

    def decrypt_batch(
        self,
        slots: KeySlot | Sequence[KeySlot],
        ciphertexts: Sequence[bytes],
        aad: Aad = None,
    ) -> Results:
        """Open each ``IV || ciphertext || tag``; per item the plaintext or its error
        (``InvalidCiphertextError`` for any alteration or a different AAD)."""
        return self._native.decrypt_batch(self._id, _handles(slots), ciphertexts, aad)

    def generate_data_key_batch(
        self,
        slots: KeySlot | Sequence[KeySlot],
        key_bytes: int | Sequence[int],
        n: int,
        aad: Aad = None,
    ) -> DataKeyResults:
        """Make ``n`` data keys: per item ``(plaintext, sealed key)`` or its error."""
        return self._native.generate_data_key_batch(
            self._id, _handles(slots), key_bytes, n, aad
        )

    def generate_data_key_rows(
        self, slot: KeySlot, key_bytes: int, n: int, aad: bytes
    ) -> tuple[Any, dict[int, KeyplaneError]]:
        """``n`` data keys under one slot as matrix rows of ``key || sealed key`` (see
        ``NativeHsm.generate_data_key_rows``), and the errors of items that failed."""
        return self._native.generate_data_key_rows(
            self._id, slot.handle, key_bytes, n, aad
        )

    # --- importing key material -------------------------------------------------------
    # AWS KMS GetParametersForImport / ImportKeyMaterial. A wrapping key is a KeySlot
    # holding an RSA key pair: destroy_key destroys it like any slot, the AES methods
    # refuse it and these refuse an AES slot (InvalidKeyUsageError).

    def generate_wrapping_key(self, bits: int) -> KeySlot:
        """A fresh RSA wrapping key pair (e = 65537) generated inside the HSM. Takes up
        to seconds for 4096 bits; the native call releases the GIL, so run it on a
        worker thread.

        Raises:
            ValidationError: ``bits`` is not 2048, 3072 or 4096.
        """
        return KeySlot(self, self._native.wrapping_key_generate(self._id, bits))

    def wrapping_public_key(self, slot: KeySlot) -> bytes:
        """The wrapping key's public key as DER SubjectPublicKeyInfo (AWS's PublicKey).

        Raises:
            PartitionMismatchError: the slot belongs to another partition.
            KeyUnavailableError: the slot was destroyed.
            InvalidKeyUsageError: the slot is not a wrapping key.
        """
        self._require_own(slot)
        return self._native.wrapping_key_public(self._id, slot.handle)

    def export_wrapping_key(self, slot: KeySlot, context: bytes = b"") -> bytes:
        """The wrapping key's private key sealed under this partition's key and bound to
        ``context``, for storage while its import token is valid.

        Raises:
            PartitionMismatchError: the slot belongs to another partition.
            KeyUnavailableError: the slot was destroyed.
            InvalidKeyUsageError: the slot is not a wrapping key.
            ValidationError: the context is too long.
        """
        _check_context(context)
        self._require_own(slot)
        return self._native.wrapping_key_export(self._id, slot.handle, context)

    def open_wrapping_key(self, wrapped: bytes, context: bytes = b"") -> KeySlot:
        """A wrapping key from ``export_wrapping_key`` of this partition.

        Raises:
            InvalidCiphertextError: sealed by another partition, for another context,
                or altered.
            ValidationError: the context is too long.
        """
        _check_context(context)
        return KeySlot(self, self._native.wrapping_key_open(self._id, wrapped, context))

    def unwrap_import(
        self, wrapping_key: KeySlot, algorithm: str, encrypted: bytes
    ) -> KeySlot:
        """Unwrap EncryptedKeyMaterial into a new AES-256 key of this partition.

        Args:
            wrapping_key: the wrapping key whose public key wrapped the material.
            algorithm: the AWS WrappingAlgorithm: ``RSAES_OAEP_SHA_1``,
                ``RSAES_OAEP_SHA_256``, ``RSA_AES_KEY_WRAP_SHA_1`` or
                ``RSA_AES_KEY_WRAP_SHA_256``.
            encrypted: the client's ciphertext.

        Raises:
            InvalidCiphertextError: it does not unwrap with this key and algorithm.
            ValidationError: an unknown algorithm, or material that is not 256 bits.
            PartitionMismatchError: the wrapping key belongs to another partition.
            KeyUnavailableError: the wrapping key was destroyed.
            InvalidKeyUsageError: ``wrapping_key`` is not a wrapping key.
        """
        code = WRAPPING_ALGORITHMS.get(algorithm)
        if code is None:
            raise ValidationError("unknown wrapping algorithm")
        self._require_own(wrapping_key)
        handle = self._native.keyslot_unwrap_import(
            self._id, wrapping_key.handle, code, encrypted
        )
        return KeySlot(self, handle)

    def material_id(self, slot: KeySlot, context: bytes) -> bytes:
        """32 bytes that name the slot's key material for ``context`` (e.g. the KMS key
        id) without revealing it: HMAC-SHA-256 keyed with the material.

        Raises:
            PartitionMismatchError: the slot belongs to another partition.
            KeyUnavailableError: the slot was destroyed.
            InvalidKeyUsageError: the slot is a wrapping key.
            ValidationError: the context is too long.
        """
        _check_context(context)
        self._require_own(slot)
        return self._native.keyslot_material_id(self._id, slot.handle, context)


class Hsm:
    """The emulated HSM of one keyplane service: a shared fleet plus dedicated HSMs.

    Thread-safe: batches may run on several threads at once (the native calls release
    the GIL); creating and destroying partitions takes a lock.
    """

    def __init__(self, root_key: bytearray) -> None:
        """Start an HSM whose partition keys are wrapped under ``root_key``.

        Args:
            root_key: 32 bytes. The HSM keeps its own copy in locked memory and zeroes
                this one, so the root key lives in exactly one place.

        Raises:
            ValidationError: the root key is not 32 bytes.
        """
        try:
            self._shared = NativeHsm(root_key)
        finally:
            root_key[:] = bytes(len(root_key))
        self._lock = threading.Lock()
        # Held while a dedicated HSM copies the root key until it is adopted, and while
        # the root key changes: no new dedicated HSM can miss a change.
        self._root_lock = threading.Lock()
        self._partitions: dict[tuple[int, int], Partition] = {}
        # Why partitions may no longer be created and stored, once that is so.
        self._sealing_refused: str | None = None
        _report_unlocked_memory()

    def __repr__(self) -> str:
        return f"<Hsm partitions={len(self._partitions)}>"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("an Hsm cannot be pickled")

    @property
    def shared(self) -> NativeHsm:
        """The native HSM of the shared fleet."""
        return self._shared

    def partitions(self) -> list[Partition]:
        with self._lock:
            return list(self._partitions.values())

    def create_partition(self, tenancy: Tenancy = Tenancy.SHARED) -> Partition:
        """A new partition with a wrapping key generated inside the HSM.

        Raises:
            RootKeyError: the HSM refuses new partitions (``refuse_new_partitions``).
        """
        self._check_sealing()
        with self._root_lock:
            target = self._native_for(tenancy)
            return self._adopt(target, target.partition_create(), tenancy)

    def open_partition(
        self, wrapped: bytes, tenancy: Tenancy = Tenancy.SHARED
    ) -> Partition:
        """Recreate a partition from ``Partition.export()``, as storage keeps it.

        Raises:
            InvalidCiphertextError: wrapped under another root key, or altered.
            MalformedNativeCallError: not a wrapped partition key at all.
        """
        with self._root_lock:
            target = self._native_for(tenancy)
            try:
                partition_id = target.partition_open(wrapped)
            except BaseException:
                if target is not self._shared:
                    target.close()
                raise
            return self._adopt(target, partition_id, tenancy)

    def rewrap_partition_keys(
        self, wrapped: Sequence[bytes], root_key: bytes | bytearray
    ) -> list[bytes]:
        """Partition keys as storage keeps them (``Partition.export()``), re-wrapped
        from this HSM's root key to ``root_key``, the one it is about to be given
        (``set_root_key``). A root key rotation stores these before it switches.

        Raises:
            InvalidCiphertextError: a key is not wrapped under this HSM's root key, or
                was altered.
            MalformedNativeCallError: an item is not a wrapped partition key at all.
            ValidationError: the root key is not 32 bytes.
        """
        results = self._shared.partition_rewrap_batch(wrapped, root_key)
        for result in results:
            if isinstance(result, KeyplaneError):
                raise result
        return cast(list[bytes], results)

    def set_root_key(self, root_key: bytearray) -> None:
        """Wrap and open partition keys under ``root_key`` from now on, in the shared
        fleet and every dedicated HSM. Open partitions keep their keys, so no slot or
        ciphertext changes.

        Args:
            root_key: 32 bytes; zeroed here once the HSMs hold it, as in ``__init__``.

        Raises:
            ValidationError: the root key is not 32 bytes.
        """
        try:
            # Both locks for the whole change: a dedicated partition destroyed now
            # closes its HSM only after this is done with it (it must _forget first).
            with self._root_lock, self._lock:
                dedicated = {
                    id(p.native): p.native
                    for p in self._partitions.values()
                    if p.tenancy is Tenancy.DEDICATED
                }
                for native in (self._shared, *dedicated.values()):
                    native.set_root_key(root_key)
        finally:
            root_key[:] = bytes(len(root_key))

    def refuse_new_partitions(self, reason: str) -> None:
        """From now on, refuse to create partitions or to export one for storage,
        with a ``RootKeyError`` that says ``reason``. For when it cannot be told
        which root key the store is sealed under (a root key rotation whose commit
        had an unknown outcome): a partition stored under the wrong one would be lost
        at the next start. Open partitions keep serving; a restart settles the store
        and starts a fresh HSM.
        """
        self._sealing_refused = reason

    def _check_sealing(self) -> None:
        if self._sealing_refused is not None:
            raise RootKeyError(self._sealing_refused)

    def close(self) -> None:
        """Destroy every partition and cleanse every key."""
        with self._lock:
            dedicated = [
                p.native
                for p in self._partitions.values()
                if p.tenancy is Tenancy.DEDICATED
            ]
            self._partitions.clear()
        for hsm in dedicated:
            hsm.close()
        self._shared.close()

    def _native_for(self, tenancy: Tenancy) -> NativeHsm:
        _report_unlocked_memory()
        if tenancy is Tenancy.SHARED:
            return self._shared
        return self._shared.sibling()

    def _adopt(
        self, target: NativeHsm, partition_id: int, tenancy: Tenancy
    ) -> Partition:
        partition = Partition(self, target, partition_id, tenancy)
        with self._lock:
            self._partitions[(id(target), partition_id)] = partition
        return partition

    def _forget(self, partition: Partition) -> None:
        with self._lock:
            self._partitions.pop((id(partition.native), partition.id), None)


def _report_unlocked_memory() -> None:
    """Warn once per process if key memory could not be locked against swapping.

    Not fatal: keys still work, but they may reach swap. The usual cause is a low
    RLIMIT_MEMLOCK (``ulimit -l``) for a process without CAP_IPC_LOCK.
    """
    if not _unlocked_reported.is_set() and not memory_locked():
        _unlocked_reported.set()
        _log.warning(
            "key memory could not be locked against swapping "
            "(raise RLIMIT_MEMLOCK, `ulimit -l`); keys may be swapped to disk"
        )


def encrypt_batch(
    slots: KeySlot | Sequence[KeySlot],
    plaintexts: Sequence[bytes],
    aad: Aad = None,
) -> Results:
    """Seal items of any partitions of one native HSM (the shared fleet mixes tenants).

    Raises:
        PartitionMismatchError: the slots span more than one native HSM.
    """
    target, handles = _across(slots)
    return target.encrypt_batch(0, handles, plaintexts, aad)


def decrypt_batch(
    slots: KeySlot | Sequence[KeySlot],
    ciphertexts: Sequence[bytes],
    aad: Aad = None,
) -> Results:
    """Open items of any partitions of one native HSM."""
    target, handles = _across(slots)
    return target.decrypt_batch(0, handles, ciphertexts, aad)


def generate_data_key_batch(
    slots: KeySlot | Sequence[KeySlot],
    key_bytes: int | Sequence[int],
    n: int,
    aad: Aad = None,
) -> DataKeyResults:
    """Make data keys under slots of any partitions of one native HSM."""
    target, handles = _across(slots)
    return target.generate_data_key_batch(0, handles, key_bytes, n, aad)


def _handles(slots: KeySlot | Sequence[KeySlot]) -> int | list[int]:
    """Handles for a native call; a slot of another native HSM is left for the HSM to
    refuse per item (its handle names another HSM)."""
    if isinstance(slots, KeySlot):
        return slots.handle
    return [slot.handle for slot in slots]


def _across(
    slots: KeySlot | Sequence[KeySlot],
) -> tuple[NativeHsm, int | list[int]]:
    if isinstance(slots, KeySlot):
        return slots.partition.native, slots.handle
    if not slots:
        raise ValidationError("a batch needs at least one slot")
    target = slots[0].partition.native
    if any(slot.partition.native is not target for slot in slots):
        raise PartitionMismatchError("one batch cannot span several HSMs")
    return target, [slot.handle for slot in slots]


def _check_context(context: bytes) -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValidationError(
            f"a key's wrapping context is at most {MAX_CONTEXT_BYTES} bytes"
        )
