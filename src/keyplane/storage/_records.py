"""The records the store keeps, and the ``Store`` protocol every backend implements.

This module owns the shape of what is stored: plain frozen records and the interface
of a store. It holds no behaviour of any backend and no KMS semantics: a key's state,
metadata and tags and a grant's details are opaque values here, and wrapped bytes are
never looked into.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """An HSM partition and its wrapping key, wrapped under the root key.

    Attributes:
        name: Unique name, e.g. ``"shared:111122223333"`` or ``"dedicated:cks-1234"``.
        tenancy: ``"shared"`` or ``"dedicated"``.
        wrapped_key: The partition's wrapping key, wrapped under the root key.
        created_at: Creation time in epoch seconds.
    """

    name: str
    tenancy: str
    wrapped_key: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A KMS key's durable metadata; its material is kept in ``MaterialRecord``s.

    Attributes:
        key_id: The key's identity (a UUID string).
        account: The owning 12-digit account id.
        region: The region the key lives in.
        partition: The ``PartitionRecord.name`` that holds the key's material.
        created_at: Creation time in epoch seconds.
        state: The key state; opaque to storage.
        metadata: JSON-serialisable metadata (description, usage, spec, policy, ...);
            mappings must have string keys, and sequences load back as lists.
        tags: Tag keys to tag values.
    """

    key_id: str
    account: str
    region: str
    partition: str
    created_at: float
    state: str
    metadata: Mapping[str, Any]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class MaterialRecord:
    """One version of a key's material, wrapped under its partition's key.

    Attributes:
        key_id: The ``KeyRecord.key_id`` this material belongs to.
        version: 1, 2, ...; unique per key.
        wrapped: The wrapped material (opaque bytes).
        created_at: Creation time in epoch seconds.
    """

    key_id: str
    version: int
    wrapped: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """An alias name that points at a key, unique per account and region.

    Attributes:
        account: The owning 12-digit account id.
        region: The region the alias lives in.
        name: The alias name, ``"alias/..."``.
        key_id: The ``KeyRecord.key_id`` the alias points at.
        created_at: Creation time in epoch seconds.
        updated_at: Time of the last change in epoch seconds.
    """

    account: str
    region: str
    name: str
    key_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """A grant on a key.

    Attributes:
        grant_id: The grant's unique id (an opaque string of 1 to 128 characters).
        key_id: The ``KeyRecord.key_id`` the grant is on.
        account: The key's 12-digit account id; opaque to storage.
        created_at: Creation time in epoch seconds.
        data: JSON-serialisable grant details (name, grantee and retiring
            principals, operations, constraints, issuing account, ...); opaque to
            storage. Mappings must have string keys, and sequences load back as
            lists.
    """

    grant_id: str
    key_id: str
    account: str
    created_at: float
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    """An emulated CloudHSM cluster: its settings and users, opaque to storage.

    Attributes:
        cluster_id: The cluster's id (``cluster-...``).
        account: The 12-digit account that owns the cluster; opaque to storage.
        partition: The ``PartitionRecord.name`` that holds the cluster's keys.
        created_at: Creation time in epoch seconds.
        data: JSON-serialisable settings (HSM count, trust anchor, users with
            password verifiers, ...); opaque to storage. Never a password.
    """

    cluster_id: str
    account: str
    partition: str
    created_at: float
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CustomKeyStoreRecord:
    """A KMS custom key store, unique by (account, region, name).

    Attributes:
        store_id: The key store's id (``cks-...``).
        account: The owning 12-digit account id.
        region: The region the key store lives in.
        name: The key store's name.
        cluster_id: The ``ClusterRecord.cluster_id`` the key store is associated with.
        created_at: Creation time in epoch seconds.
        data: JSON-serialisable details (connection state, trust anchor, the
            password's verifier, ...); opaque to storage. Never a password.
    """

    store_id: str
    account: str
    region: str
    name: str
    cluster_id: str
    created_at: float
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a store holds, in a deterministic order.

    Attributes:
        partitions: Ordered by name.
        keys: Ordered by key id.
        materials: Ordered by (key id, version).
        aliases: Ordered by (account, region, name).
        grants: Ordered by (key id, creation time, grant id).
    """

    partitions: list[PartitionRecord]
    keys: list[KeyRecord]
    materials: list[MaterialRecord]
    aliases: list[AliasRecord]
    # Last and defaulted, so that snapshots built before grants were stored still
    # construct the same way.
    grants: list[GrantRecord] = field(default_factory=list)
    # Ordered by cluster id, and by store id.
    clusters: list[ClusterRecord] = field(default_factory=list)
    custom_key_stores: list[CustomKeyStoreRecord] = field(default_factory=list)


@runtime_checkable
class Store(Protocol):
    """A durable store of partitions, keys, key material, aliases and grants.

    Every mutating method is one transaction and returns only once it is committed
    durably, so a caller may acknowledge the change as soon as the call returns.
    Records that are malformed (wrong types, non-finite times, metadata that would
    not load back as written) are refused with ``ValidationError``.
    """

    def load(self) -> Snapshot:
        """Return every record the store holds, in a deterministic order.

        Raises:
            StoreError: The store cannot be read or holds a malformed record.
        """
        ...

    def put_partition(self, record: PartitionRecord) -> None:
        """Add a partition.

        Raises:
            StoreConflictError: A partition with that name exists.
            ValidationError: The record is malformed.
            StoreError: The store failed.
        """
        ...

    def create_key(self, key: KeyRecord, material: MaterialRecord | None) -> None:
        """Add a key and, in the same transaction, its first material version.

        Raises:
            StoreConflictError: A key with that id exists.
            StoreNotFoundError: The key's partition does not exist.
            ValidationError: A record is malformed, or the material belongs to
                another key.
            StoreError: The store failed.
        """
        ...

    def update_key(self, key: KeyRecord) -> None:
        """Replace a key's state, metadata and tags.

        Raises:
            StoreNotFoundError: No key has that id.
            ValidationError: The record is malformed or changes an immutable field.
            StoreError: The store failed.
        """
        ...

    def add_material(
        self, material: MaterialRecord, key: KeyRecord | None = None
    ) -> None:
        """Add a material version to an existing key and, when ``key`` is given,
        replace the key's record in the same transaction.

        Raises:
            StoreNotFoundError: No key has that id.
            StoreConflictError: The key already has that version.
            ValidationError: A record is malformed, ``key`` is another key, or it
                changes an immutable field.
            StoreError: The store failed.
        """
        ...

    def remove_material(self, key_id: str, version: int, key: KeyRecord) -> None:
        """Delete one material version of a key and replace the key's record, in one
        transaction (imported material deleted, expired or abandoned).

        Raises:
            StoreNotFoundError: The key has no such version.
            ValidationError: A record is malformed, ``key`` is another key, or it
                changes an immutable field.
            StoreError: The store failed.
        """
        ...

    def delete_key(self, key_id: str) -> None:
        """Delete a key, its material, its grants and every alias that points at it,
        in one transaction.

        Raises:
            StoreNotFoundError: No key has that id.
            StoreError: The store failed.
        """
        ...

    def put_alias(self, alias: AliasRecord) -> None:
        """Insert an alias, or replace the one with the same account, region, name.

        Raises:
            StoreNotFoundError: The alias's key does not exist.
            ValidationError: The record is malformed.
            StoreError: The store failed.
        """
        ...

    def delete_alias(self, account: str, region: str, name: str) -> None:
        """Delete an alias.

        Raises:
            StoreNotFoundError: No such alias.
            StoreError: The store failed.
        """
        ...

    def put_grant(self, record: GrantRecord) -> None:
        """Add a grant to an existing key.

        Raises:
            StoreConflictError: A grant with that id exists.
            StoreNotFoundError: The grant's key does not exist.
            ValidationError: The record is malformed.
            StoreError: The store failed.
        """
        ...

    def delete_grant(self, grant_id: str) -> None:
        """Delete a grant.

        Raises:
            StoreNotFoundError: No grant has that id.
            StoreError: The store failed.
        """
        ...

    def put_cluster(
        self, record: ClusterRecord, partition: PartitionRecord | None = None
    ) -> None:
        """Insert a cluster or replace the one with its id; with ``partition``, add
        that partition in the same transaction (a new cluster and its key space).

        Raises:
            StoreConflictError: ``partition`` exists already.
            StoreNotFoundError: The cluster's partition does not exist.
            ValidationError: A record is malformed, or a replacement changes the
                cluster's account, partition or creation time.
            StoreError: The store failed.
        """
        ...

    def put_custom_key_store(self, record: CustomKeyStoreRecord) -> None:
        """Insert a custom key store or replace the one with its id.

        Raises:
            StoreConflictError: Another key store of the account and region has
                that name.
            StoreNotFoundError: The key store's cluster does not exist.
            ValidationError: The record is malformed, or a replacement changes the
                key store's account, region or creation time.
            StoreError: The store failed.
        """
        ...

    def delete_custom_key_store(self, store_id: str) -> None:
        """Delete a custom key store.

        Raises:
            StoreNotFoundError: No key store has that id.
            StoreError: The store failed.
        """
        ...

    def integrity_check(self) -> list[str]:
        """Return the problems found in the store; an empty list means healthy.

        Raises:
            StoreError: The store is closed.
        """
        ...

    def backup(self, path: Path) -> None:
        """Write a consistent snapshot of the store to a new file.

        Raises:
            StoreConflictError: ``path`` exists.
            StoreError: The backup failed.
        """
        ...

    def close(self) -> None:
        """Release the store; further calls raise ``StoreError``."""
        ...
