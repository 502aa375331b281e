"""The SQLite store: the default ``Store``, one database file in a private directory.

This module owns the SQLite schema, its version, the durability settings, and the
mapping of SQLite failures to the storage errors. Every mutating call is one
``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction that returns only once the commit is on
disk. It must not interpret what it stores: key states, metadata, tags and grant details
are opaque, wrapped bytes are never looked into and never appear in a message or log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from keyplane.errors import (
    StoreConflictError,
    StoreError,
    StoreNotFoundError,
    ValidationError,
)
from keyplane.storage._files import (
    create_private_file,
    fsync_dir,
    make_private_dir,
)
from keyplane.storage._records import (
    AliasRecord,
    ClusterRecord,
    CustomKeyStoreRecord,
    GrantRecord,
    KeyRecord,
    MaterialRecord,
    PartitionRecord,
    Snapshot,
)

_log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 3
"""The ``PRAGMA user_version`` this code writes; newer files are refused."""

BUSY_TIMEOUT_S: Final = 10.0
"""How long a call waits for another connection's write lock before failing."""

TENANCIES: Final = frozenset({"shared", "dedicated"})

GRANT_ID_MAX_CHARS: Final = 128
"""The longest grant id; AWS KMS API Reference, RevokeGrant, ``GrantId``: 1 to 128."""

# _MIGRATIONS[n] brings a database from schema version n to n + 1; every step a file
# needs runs in one transaction. Version 0 is an empty file. A released step is never
# edited, because files written by older code run only the steps after their version:
# change the schema by appending a step. Tenancy and the grant id length are checked
# in Python rather than by a CHECK constraint, because SQLite can only change a CHECK
# by rebuilding the table.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE partitions (
            name        TEXT PRIMARY KEY NOT NULL CHECK (typeof(name) = 'text'),
            tenancy     TEXT NOT NULL CHECK (typeof(tenancy) = 'text'),
            wrapped_key BLOB NOT NULL CHECK (typeof(wrapped_key) = 'blob'),
            created_at  REAL NOT NULL CHECK (typeof(created_at) = 'real')
        )
        """,
        """
        CREATE TABLE keys (
            key_id     TEXT PRIMARY KEY NOT NULL CHECK (typeof(key_id) = 'text'),
            account    TEXT NOT NULL CHECK (typeof(account) = 'text'),
            region     TEXT NOT NULL CHECK (typeof(region) = 'text'),
            partition  TEXT NOT NULL REFERENCES partitions (name),
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            state      TEXT NOT NULL CHECK (typeof(state) = 'text'),
            metadata   TEXT NOT NULL CHECK (typeof(metadata) = 'text'),
            tags       TEXT NOT NULL CHECK (typeof(tags) = 'text')
        )
        """,
        "CREATE INDEX keys_by_partition ON keys (partition)",
        """
        CREATE TABLE materials (
            key_id     TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            version    INTEGER NOT NULL
                       CHECK (typeof(version) = 'integer' AND version >= 1),
            wrapped    BLOB NOT NULL CHECK (typeof(wrapped) = 'blob'),
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            PRIMARY KEY (key_id, version)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE aliases (
            account    TEXT NOT NULL CHECK (typeof(account) = 'text'),
            region     TEXT NOT NULL CHECK (typeof(region) = 'text'),
            name       TEXT NOT NULL CHECK (typeof(name) = 'text'),
            key_id     TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            updated_at REAL NOT NULL CHECK (typeof(updated_at) = 'real'),
            PRIMARY KEY (account, region, name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX aliases_by_key ON aliases (key_id)",
    ),
    (
        """
        CREATE TABLE grants (
            grant_id   TEXT PRIMARY KEY NOT NULL CHECK (typeof(grant_id) = 'text'),
            key_id     TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            account    TEXT NOT NULL CHECK (typeof(account) = 'text'),
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            data       TEXT NOT NULL CHECK (typeof(data) = 'text')
        ) WITHOUT ROWID
        """,
        # Leads with key_id for the cascade from keys, and carries the rest of the
        # load order so that load reads the grants without sorting them.
        "CREATE INDEX grants_by_key ON grants (key_id, created_at, grant_id)",
    ),
    (
        # Emulated CloudHSM clusters, and the custom key stores associated with them.
        # A cluster's keys live in its partition; a key store names its cluster.
        """
        CREATE TABLE clusters (
            cluster_id TEXT PRIMARY KEY NOT NULL CHECK (typeof(cluster_id) = 'text'),
            account    TEXT NOT NULL CHECK (typeof(account) = 'text'),
            partition  TEXT NOT NULL REFERENCES partitions (name),
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            data       TEXT NOT NULL CHECK (typeof(data) = 'text')
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE custom_key_stores (
            store_id   TEXT PRIMARY KEY NOT NULL CHECK (typeof(store_id) = 'text'),
            account    TEXT NOT NULL CHECK (typeof(account) = 'text'),
            region     TEXT NOT NULL CHECK (typeof(region) = 'text'),
            name       TEXT NOT NULL CHECK (typeof(name) = 'text'),
            cluster_id TEXT NOT NULL REFERENCES clusters (cluster_id),
            created_at REAL NOT NULL CHECK (typeof(created_at) = 'real'),
            data       TEXT NOT NULL CHECK (typeof(data) = 'text'),
            UNIQUE (account, region, name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX custom_key_stores_by_cluster ON custom_key_stores (cluster_id)",
    ),
)

_UNIQUE: Final = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})
_FOREIGN_KEY: Final = "SQLITE_CONSTRAINT_FOREIGNKEY"

_INSERT_PARTITION: Final = (
    "INSERT INTO partitions (name, tenancy, wrapped_key, created_at)"
    " VALUES (?, ?, ?, ?)"
)
_INSERT_KEY: Final = (
    "INSERT INTO keys (key_id, account, region, partition, created_at, state,"
    " metadata, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_MATERIAL: Final = (
    "INSERT INTO materials (key_id, version, wrapped, created_at) VALUES (?, ?, ?, ?)"
)
_UPSERT_ALIAS: Final = (
    "INSERT INTO aliases (account, region, name, key_id, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (account, region, name) DO UPDATE SET key_id = excluded.key_id,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at"
)
_INSERT_GRANT: Final = (
    "INSERT INTO grants (grant_id, key_id, account, created_at, data)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SELECT_GRANTS: Final = (
    "SELECT grant_id, key_id, account, created_at, data FROM grants"
    " ORDER BY key_id, created_at, grant_id"
)
_SELECT_CLUSTERS: Final = (
    "SELECT cluster_id, account, partition, created_at, data FROM clusters"
    " ORDER BY cluster_id"
)
_SELECT_CUSTOM_KEY_STORES: Final = (
    "SELECT store_id, account, region, name, cluster_id, created_at, data"
    " FROM custom_key_stores ORDER BY store_id"
)


class SQLiteStore:
    """A ``Store`` in one SQLite database file.

    The database runs in WAL mode with ``synchronous=FULL``, so a commit survives a
    process crash and power loss, and readers never block the writer. One connection
    serves every call, guarded by a lock, so the store may be used from any thread.
    """

    def __init__(self, path: Path) -> None:
        """Open the database at ``path``, creating it (and its directory) if missing.

        A missing directory is created with mode 0700 and a missing database file with
        mode 0600; SQLite gives its -wal and -shm files the database file's mode.

        Raises:
            StoreError: The file cannot be created or opened, is not a keyplane
                database, or has a schema version newer than this code knows.
        """
        self._path = Path(path)
        self._lock = threading.Lock()
        self._closed = True
        try:
            make_private_dir(self._path.parent)
            with suppress(FileExistsError):
                os.close(create_private_file(self._path))
                fsync_dir(self._path.parent)
        except OSError as exc:
            raise StoreError(
                f"cannot create the database {self._path}: {exc.strerror}"
            ) from exc
        try:
            # isolation_level=None: the module never opens transactions implicitly;
            # every transaction here is an explicit BEGIN ... COMMIT.
            self._conn = sqlite3.connect(
                self._path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _store_error(f"open the database {self._path}", exc) from exc
        try:
            version = self._configure()
            self._closed = False
            if version < SCHEMA_VERSION:
                self._migrate()
        except BaseException:
            self._closed = True
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # --- reads ------------------------------------------------------------------

    def load(self) -> Snapshot:
        """Return every record, ordered by name, key id, (key id, version),
        (account, region, name) and (key id, creation time, grant id).

        Raises:
            StoreError: The store is closed, cannot be read, or holds a malformed
                record.
        """
        with self._read("load the store") as conn:
            partitions = [
                PartitionRecord(name, tenancy, wrapped, created_at)
                for name, tenancy, wrapped, created_at in conn.execute(
                    "SELECT name, tenancy, wrapped_key, created_at FROM partitions"
                    " ORDER BY name"
                )
            ]
            keys = [
                _key_from_row(row)
                for row in conn.execute(
                    "SELECT key_id, account, region, partition, created_at, state,"
                    " metadata, tags FROM keys ORDER BY key_id"
                )
            ]
            materials = [
                MaterialRecord(key_id, version, wrapped, created_at)
                for key_id, version, wrapped, created_at in conn.execute(
                    "SELECT key_id, version, wrapped, created_at FROM materials"
                    " ORDER BY key_id, version"
                )
            ]
            aliases = [
                AliasRecord(*row)
                for row in conn.execute(
                    "SELECT account, region, name, key_id, created_at, updated_at"
                    " FROM aliases ORDER BY account, region, name"
                )
            ]
            grants = [_grant_from_row(row) for row in conn.execute(_SELECT_GRANTS)]
            clusters = [
                _cluster_from_row(row) for row in conn.execute(_SELECT_CLUSTERS)
            ]
            stores = [
                _custom_key_store_from_row(row)
                for row in conn.execute(_SELECT_CUSTOM_KEY_STORES)
            ]
        return Snapshot(partitions, keys, materials, aliases, grants, clusters, stores)

    def integrity_check(self) -> list[str]:
        """Return the problems found; an empty list means the store is healthy.

        Runs SQLite's own ``integrity_check``, then looks for material, aliases and
        grants of missing keys, keys in missing partitions, keys without material,
        and records that would not load or that a write would refuse. A database too
        damaged to be read is reported as a problem, not raised.

        Raises:
            StoreError: The store is closed.
        """
        problems: list[str] = []
        with self._read("check the store") as conn:
            try:
                problems += _sqlite_problems(conn)
                problems += _referential_problems(conn)
                problems += _record_problems(conn)
            except sqlite3.DatabaseError as exc:
                problems.append(f"the database cannot be read: {_describe(exc)}")
        return problems

    # --- writes -----------------------------------------------------------------

    def put_partition(self, record: PartitionRecord) -> None:
        """Add a partition.

        Raises:
            StoreConflictError: A partition with that name exists.
            ValidationError: The record is malformed.
            StoreError: The store is closed or failed.
        """
        row = _partition_row(record)
        with self._write(f"add partition {record.name!r}") as conn:
            _execute(
                conn,
                _INSERT_PARTITION,
                row,
                conflict=f"partition {record.name!r} already exists",
            )

    def rewrap_partitions(
        self, rewrap: Callable[[list[bytes]], Sequence[bytes]]
    ) -> int:
        """Replace every partition's wrapped key with what ``rewrap`` makes of it, in
        one transaction: the commit point of a root key rotation. The keys are read and
        written under one write lock, so the re-wrap covers exactly the partitions
        stored, and the store ends up sealed under the old root key or the new one,
        never partly under each. Storage does not look into the bytes; ``rewrap`` does.

        Args:
            rewrap: Given every partition's wrapped key (ordered by name), returns
                their replacements in the same order. What it raises rolls the
                transaction back and comes out of this call.

        Returns:
            How many partitions were re-wrapped.

        Raises:
            ValidationError: ``rewrap`` returned the wrong number of keys, or a key
                that is not bytes.
            StoreError: The store is closed or failed.
        """
        with self._write("re-wrap the partition keys") as conn:
            names, old = [], []
            for name, wrapped in conn.execute(
                "SELECT name, wrapped_key FROM partitions ORDER BY name"
            ):
                names.append(name)
                old.append(wrapped)
            new = list(rewrap(old))
            if len(new) != len(names):
                raise ValidationError(
                    f"{len(new)} re-wrapped keys for {len(names)} partitions"
                )
            conn.executemany(
                "UPDATE partitions SET wrapped_key = ? WHERE name = ?",
                [
                    (_blob(w, "PartitionRecord.wrapped_key"), name)
                    for w, name in zip(new, names, strict=True)
                ],
            )
        return len(names)

    def create_key(self, key: KeyRecord, material: MaterialRecord | None) -> None:
        """Add a key and, in the same transaction, its first material version.

        Raises:
            StoreConflictError: A key with that id exists.
            StoreNotFoundError: The key's partition does not exist.
            ValidationError: A record is malformed, or the material belongs to
                another key.
            StoreError: The store is closed or failed.
        """
        key_row = _key_row(key)
        material_row = None
        if material is not None:
            material_row = _material_row(material)
            if material.key_id != key.key_id:
                raise ValidationError(
                    "the first material of a key must carry the key's own id"
                )
        with self._write(f"create key {key.key_id!r}") as conn:
            _execute(
                conn,
                _INSERT_KEY,
                key_row,
                conflict=f"key {key.key_id!r} already exists",
                missing=f"partition {key.partition!r} does not exist",
            )
            if material_row is not None:
                # Only stray rows of a damaged store can conflict here, and the
                # rollback then takes the key back out with them.
                _execute(
                    conn,
                    _INSERT_MATERIAL,
                    material_row,
                    conflict=f"key {key.key_id!r} already has material version "
                    f"{material_row[1]}",
                )

    def update_key(self, key: KeyRecord) -> None:
        """Replace a key's state, metadata and tags.

        The key's account, region, partition and creation time never change, so a
        record that differs in them is refused rather than partly ignored.

        Raises:
            StoreNotFoundError: No key has that id.
            ValidationError: The record is malformed or changes an immutable field.
            StoreError: The store is closed or failed.
        """
        row = _key_row(key)
        with self._write(f"update key {key.key_id!r}") as conn:
            _update_key(conn, row)

    def add_material(
        self, material: MaterialRecord, key: KeyRecord | None = None
    ) -> None:
        """Add a material version to an existing key and, in the same transaction,
        replace the key's record when ``key`` is given (a rotation adds a version and
        moves the key's rotation dates together, or not at all).

        Raises:
            StoreNotFoundError: No key has that id.
            StoreConflictError: The key already has that version.
            ValidationError: A record is malformed, ``key`` is another key, or it
                changes an immutable field.
            StoreError: The store is closed or failed.
        """
        row = _material_row(material)
        key_row = None
        if key is not None:
            key_row = _key_row(key)
            if key.key_id != material.key_id:
                raise ValidationError(
                    f"material of key {material.key_id!r} given with key {key.key_id!r}"
                )
        with self._write(f"add material to key {material.key_id!r}") as conn:
            _execute(
                conn,
                _INSERT_MATERIAL,
                row,
                conflict=f"key {material.key_id!r} already has material version "
                f"{material.version}",
                missing=f"key {material.key_id!r} does not exist",
            )
            if key_row is not None:
                _update_key(conn, key_row)

    def remove_material(self, key_id: str, version: int, key: KeyRecord) -> None:
        """Delete one material version of a key and, in the same transaction, replace
        the key's record.

        Raises:
            StoreNotFoundError: The key has no such version.
            ValidationError: A record is malformed, ``key`` is another key, or it
                changes an immutable field.
            StoreError: The store is closed or failed.
        """
        _text(key_id, "key_id")
        if type(version) is not int or version < 1:
            raise ValidationError("material version must be an integer of at least 1")
        if key.key_id != key_id:
            raise ValidationError(
                f"material of key {key_id!r} removed with key {key.key_id!r}"
            )
        key_row = _key_row(key)
        with self._write(f"remove material from key {key_id!r}") as conn:
            cursor = conn.execute(
                "DELETE FROM materials WHERE key_id = ? AND version = ?",
                (key_id, version),
            )
            if cursor.rowcount == 0:
                raise StoreNotFoundError(
                    f"key {key_id!r} has no material version {version}"
                )
            _update_key(conn, key_row)

    def delete_key(self, key_id: str) -> None:
        """Delete a key, its material, its grants and every alias that points at it.

        The schema's ``ON DELETE CASCADE`` removes the material, aliases and grants
        within the same statement, so they go or stay together with the key.

        Raises:
            StoreNotFoundError: No key has that id.
            ValidationError: ``key_id`` is not a string.
            StoreError: The store is closed or failed.
        """
        _text(key_id, "key_id")
        with self._write(f"delete key {key_id!r}") as conn:
            cursor = conn.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))
            if cursor.rowcount == 0:
                raise StoreNotFoundError(f"key {key_id!r} does not exist")

    def put_alias(self, alias: AliasRecord) -> None:
        """Insert an alias, or replace the one with the same account, region, name.

        Raises:
            StoreNotFoundError: The alias's key does not exist.
            ValidationError: The record is malformed.
            StoreError: The store is closed or failed.
        """
        row = _alias_row(alias)
        with self._write(f"put alias {alias.name!r}") as conn:
            _execute(
                conn,
                _UPSERT_ALIAS,
                row,
                missing=f"key {alias.key_id!r} does not exist",
            )

    def delete_alias(self, account: str, region: str, name: str) -> None:
        """Delete an alias.

        Raises:
            StoreNotFoundError: No such alias.
            ValidationError: An argument is not a string.
            StoreError: The store is closed or failed.
        """
        row = (_text(account, "account"), _text(region, "region"), _text(name, "name"))
        with self._write(f"delete alias {name!r}") as conn:
            cursor = conn.execute(
                "DELETE FROM aliases WHERE account = ? AND region = ? AND name = ?",
                row,
            )
            if cursor.rowcount == 0:
                raise StoreNotFoundError(
                    f"alias {name!r} does not exist in account {account} {region}"
                )

    def put_grant(self, record: GrantRecord) -> None:
        """Add a grant to an existing key.

        Raises:
            StoreConflictError: A grant with that id exists.
            StoreNotFoundError: The grant's key does not exist.
            ValidationError: The record is malformed.
            StoreError: The store is closed or failed.
        """
        row = _grant_row(record)
        with self._write(f"add grant {record.grant_id!r}") as conn:
            _execute(
                conn,
                _INSERT_GRANT,
                row,
                conflict=f"grant {record.grant_id!r} already exists",
                missing=f"key {record.key_id!r} does not exist",
            )

    def delete_grant(self, grant_id: str) -> None:
        """Delete a grant.

        Raises:
            StoreNotFoundError: No grant has that id.
            ValidationError: ``grant_id`` is not a string.
            StoreError: The store is closed or failed.
        """
        _text(grant_id, "grant_id")
        with self._write(f"delete grant {grant_id!r}") as conn:
            cursor = conn.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))
            if cursor.rowcount == 0:
                raise StoreNotFoundError(f"grant {grant_id!r} does not exist")

    # --- custom key stores --------------------------------------------------------

    def put_cluster(
        self, record: ClusterRecord, partition: PartitionRecord | None = None
    ) -> None:
        """Insert a cluster or replace the one with its id; with ``partition``, add
        that partition in the same transaction.

        Raises:
            StoreConflictError: ``partition`` exists already.
            StoreNotFoundError: The cluster's partition does not exist.
            ValidationError: A record is malformed, or a replacement changes the
                cluster's account, partition or creation time.
            StoreError: The store is closed or failed.
        """
        row = _cluster_row(record)
        partition_row = None if partition is None else _partition_row(partition)
        with self._write(f"put cluster {record.cluster_id!r}") as conn:
            if partition_row is not None:
                _execute(
                    conn,
                    _INSERT_PARTITION,
                    partition_row,
                    conflict=f"partition {partition_row[0]!r} already exists",
                )
            fixed = conn.execute(
                "SELECT account, partition, created_at FROM clusters"
                " WHERE cluster_id = ?",
                (row[0],),
            ).fetchone()
            if fixed is None:
                _execute(
                    conn,
                    "INSERT INTO clusters (cluster_id, account, partition,"
                    " created_at, data) VALUES (?, ?, ?, ?, ?)",
                    row,
                    missing=f"partition {record.partition!r} does not exist",
                )
                return
            if fixed != row[1:4]:
                raise ValidationError(
                    f"cluster {record.cluster_id!r}: an update cannot change the"
                    " account, partition or creation time"
                )
            conn.execute(
                "UPDATE clusters SET data = ? WHERE cluster_id = ?", (row[4], row[0])
            )

    def put_custom_key_store(self, record: CustomKeyStoreRecord) -> None:
        """Insert a custom key store or replace the one with its id.

        Raises:
            StoreConflictError: Another key store of the account and region has
                that name.
            StoreNotFoundError: The key store's cluster does not exist.
            ValidationError: The record is malformed, or a replacement changes the
                key store's account, region or creation time.
            StoreError: The store is closed or failed.
        """
        row = _custom_key_store_row(record)
        store_id, account, region, name, cluster_id, created_at, data = row
        conflict = f"a custom key store named {name!r} exists in {account} {region}"
        missing = f"cluster {cluster_id!r} does not exist"
        with self._write(f"put custom key store {store_id!r}") as conn:
            fixed = conn.execute(
                "SELECT account, region, created_at FROM custom_key_stores"
                " WHERE store_id = ?",
                (store_id,),
            ).fetchone()
            if fixed is None:
                _execute(
                    conn,
                    "INSERT INTO custom_key_stores (store_id, account, region, name,"
                    " cluster_id, created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                    conflict=conflict,
                    missing=missing,
                )
                return
            if fixed != (account, region, created_at):
                raise ValidationError(
                    f"custom key store {store_id!r}: an update cannot change the"
                    " account, region or creation time"
                )
            _execute(
                conn,
                "UPDATE custom_key_stores SET name = ?, cluster_id = ?, data = ?"
                " WHERE store_id = ?",
                (name, cluster_id, data, store_id),
                conflict=conflict,
                missing=missing,
            )

    def delete_custom_key_store(self, store_id: str) -> None:
        """Delete a custom key store.

        Raises:
            StoreNotFoundError: No key store has that id.
            ValidationError: ``store_id`` is not a string.
            StoreError: The store is closed or failed.
        """
        _text(store_id, "store_id")
        with self._write(f"delete custom key store {store_id!r}") as conn:
            cursor = conn.execute(
                "DELETE FROM custom_key_stores WHERE store_id = ?", (store_id,)
            )
            if cursor.rowcount == 0:
                raise StoreNotFoundError(
                    f"custom key store {store_id!r} does not exist"
                )

    # --- backup and lifetime ----------------------------------------------------

    def backup(self, path: Path) -> None:
        """Write a consistent snapshot of the store to the new file ``path``.

        The copy is taken with SQLite's online backup API while writes wait, is
        created with mode 0600 (its directory 0700 if missing) and is flushed to
        disk before the call returns. It opens with ``SQLiteStore`` like the original.

        Raises:
            StoreConflictError: ``path`` exists.
            StoreError: The store is closed, or the backup failed (no partial file is
                left behind).
        """
        path = Path(path)
        try:
            make_private_dir(path.parent)
            os.close(create_private_file(path))
        except FileExistsError as exc:
            raise StoreConflictError(f"the backup target {path} exists") from exc
        except OSError as exc:
            raise StoreError(
                f"cannot create the backup {path}: {exc.strerror}"
            ) from exc
        try:
            with self._lock:
                conn = self._connection()
                target = sqlite3.connect(path, isolation_level=None)
                try:
                    conn.backup(target)
                finally:
                    target.close()
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(path.parent)
        except BaseException as exc:
            for leftover in (path, *_companions(path)):
                with suppress(FileNotFoundError):
                    leftover.unlink()
            if isinstance(exc, sqlite3.Error):
                raise _store_error(f"back up to {path}", exc) from exc
            if isinstance(exc, OSError):
                raise StoreError(f"cannot back up to {path}: {exc.strerror}") from exc
            raise

    def close(self) -> None:
        """Close the database; further calls raise ``StoreError``. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # --- internals --------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection; the caller holds the lock."""
        if self._closed:
            raise StoreError(f"the store {self._path} is closed")
        return self._conn

    def _configure(self) -> int:
        """Check the schema version and set the connection up; return the version."""
        conn = self._conn
        try:
            version = _user_version(conn)
            # Refuse before changing anything (even the journal mode) in a file that
            # a newer keyplane wrote.
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self._path} has schema version {version}, newer"
                    f" than this keyplane knows ({SCHEMA_VERSION}); upgrade keyplane"
                )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the database {self._path} cannot use WAL mode (it stays in"
                    f" {mode!r} mode); put it on a local file system"
                )
            # FULL syncs the WAL on every commit, which makes a commit survive power
            # loss and not only a process crash. fullfsync matters only on macOS,
            # where plain fsync does not reach the platters.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA fullfsync = ON")
            conn.execute("PRAGMA foreign_keys = ON")
            (foreign_keys,) = conn.execute("PRAGMA foreign_keys").fetchone()
            if foreign_keys != 1:
                raise StoreError("this SQLite build does not enforce foreign keys")
        except sqlite3.Error as exc:
            raise _store_error(f"open the database {self._path}", exc) from exc
        return version

    def _migrate(self) -> None:
        with self._write("migrate the schema") as conn:
            # Read again under the write lock: another process may have migrated the
            # schema since this one first looked.
            version = _user_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self._path} has schema version {version}, newer"
                    f" than this keyplane knows ({SCHEMA_VERSION}); upgrade keyplane"
                )
            for steps in _MIGRATIONS[version:]:
                for statement in steps:
                    conn.execute(statement)
            # user_version lives in the database header, so it commits (or rolls
            # back) with the tables above.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction, committed durably before the block's caller
        returns, rolled back on any exception. IMMEDIATE takes the write lock up
        front, so a transaction never fails half-way for want of it."""
        return self._transaction(what, "BEGIN IMMEDIATE")

    def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """One read transaction, so every query in the block sees the same state."""
        return self._transaction(what, "BEGIN")

    @contextmanager
    def _transaction(self, what: str, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(begin)
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(what, exc) from exc
                raise


# --- SQLite plumbing ---------------------------------------------------------------


def _update_key(
    conn: sqlite3.Connection, row: tuple[str, str, str, str, float, str, str, str]
) -> None:
    key_id, account, region, partition, created_at, state, metadata, tags = row
    fixed = conn.execute(
        "SELECT account, region, partition, created_at FROM keys WHERE key_id = ?",
        (key_id,),
    ).fetchone()
    if fixed is None:
        raise StoreNotFoundError(f"key {key_id!r} does not exist")
    if fixed != (account, region, partition, created_at):
        raise ValidationError(
            f"key {key_id!r}: an update cannot change the account, region,"
            " partition or creation time"
        )
    conn.execute(
        "UPDATE keys SET state = ?, metadata = ?, tags = ? WHERE key_id = ?",
        (state, metadata, tags, key_id),
    )


def _user_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _companions(path: Path) -> tuple[Path, ...]:
    suffixes = ("-journal", "-wal", "-shm")
    return tuple(path.with_name(path.name + suffix) for suffix in suffixes)


def _describe(exc: sqlite3.Error) -> str:
    # SQLite's messages name tables and constraints, never bound values, so they are
    # safe to show: wrapped bytes cannot leak through them.
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"could not {what}: {_describe(exc)}")


def _rollback(conn: sqlite3.Connection) -> None:
    # Some failures (a full disk, an I/O error) already rolled the transaction back;
    # rolling back again would raise and hide the first error.
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        _log.error("rollback failed: %s", _describe(exc))


def _execute(
    conn: sqlite3.Connection,
    sql: str,
    params: tuple[object, ...],
    *,
    conflict: str | None = None,
    missing: str | None = None,
) -> sqlite3.Cursor:
    """Run one statement, turning a broken unique or foreign key constraint into the
    storage error the caller names for it."""
    try:
        return conn.execute(sql, params)
    except sqlite3.IntegrityError as exc:
        if conflict is not None and exc.sqlite_errorname in _UNIQUE:
            raise StoreConflictError(conflict) from exc
        if missing is not None and exc.sqlite_errorname == _FOREIGN_KEY:
            raise StoreNotFoundError(missing) from exc
        raise


# --- records to rows and back -------------------------------------------------------


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode") from None
    return value


def _time(value: object, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise ValidationError(f"{what} must be a finite number of seconds")
    return float(value)


def _blob(value: object, what: str) -> bytes:
    # Only immutable bytes: a bytearray would load back as bytes and could change
    # under the record after the write.
    if not isinstance(value, bytes):
        raise ValidationError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _plain_json(value: object, what: str) -> object:
    """Return ``value`` as plain JSON types, refusing anything that would not load
    back equal to what was written (non-string keys, NaN, unknown types)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _text(value, what)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{what} holds a number that JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        plain: dict[str, object] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{what} has a key that is not a string")
            plain[_text(k, what)] = _plain_json(v, what)
        return plain
    if isinstance(value, list | tuple):
        return [_plain_json(item, what) for item in value]
    raise ValidationError(f"{what} holds a {type(value).__name__}, which is not JSON")


def _json_text(value: object) -> str:
    # Sorted keys and fixed separators: the same record always gives the same bytes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _partition_row(record: PartitionRecord) -> tuple[str, str, bytes, float]:
    tenancy = _text(record.tenancy, "PartitionRecord.tenancy")
    if tenancy not in TENANCIES:
        raise ValidationError(
            f"PartitionRecord.tenancy must be one of {sorted(TENANCIES)}"
        )
    return (
        _text(record.name, "PartitionRecord.name"),
        tenancy,
        _blob(record.wrapped_key, "PartitionRecord.wrapped_key"),
        _time(record.created_at, "PartitionRecord.created_at"),
    )


def _key_row(key: KeyRecord) -> tuple[str, str, str, str, float, str, str, str]:
    if not isinstance(key.metadata, Mapping):
        raise ValidationError("KeyRecord.metadata must be a mapping")
    if not isinstance(key.tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in key.tags.items()
    ):
        raise ValidationError("KeyRecord.tags must map strings to strings")
    return (
        _text(key.key_id, "KeyRecord.key_id"),
        _text(key.account, "KeyRecord.account"),
        _text(key.region, "KeyRecord.region"),
        _text(key.partition, "KeyRecord.partition"),
        _time(key.created_at, "KeyRecord.created_at"),
        _text(key.state, "KeyRecord.state"),
        _json_text(_plain_json(key.metadata, "KeyRecord.metadata")),
        _json_text(_plain_json(key.tags, "KeyRecord.tags")),
    )


def _material_row(material: MaterialRecord) -> tuple[str, int, bytes, float]:
    version = material.version
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationError("MaterialRecord.version must be an integer")
    if not 1 <= version < 2**63:
        raise ValidationError("MaterialRecord.version must be at least 1")
    return (
        _text(material.key_id, "MaterialRecord.key_id"),
        version,
        _blob(material.wrapped, "MaterialRecord.wrapped"),
        _time(material.created_at, "MaterialRecord.created_at"),
    )


def _alias_row(alias: AliasRecord) -> tuple[str, str, str, str, float, float]:
    return (
        _text(alias.account, "AliasRecord.account"),
        _text(alias.region, "AliasRecord.region"),
        _text(alias.name, "AliasRecord.name"),
        _text(alias.key_id, "AliasRecord.key_id"),
        _time(alias.created_at, "AliasRecord.created_at"),
        _time(alias.updated_at, "AliasRecord.updated_at"),
    )


def _grant_row(record: GrantRecord) -> tuple[str, str, str, float, str]:
    grant_id = _text(record.grant_id, "GrantRecord.grant_id")
    if not 1 <= len(grant_id) <= GRANT_ID_MAX_CHARS:
        raise ValidationError(
            f"GrantRecord.grant_id must be 1 to {GRANT_ID_MAX_CHARS} characters long"
        )
    if not isinstance(record.data, Mapping):
        raise ValidationError("GrantRecord.data must be a mapping")
    return (
        grant_id,
        _text(record.key_id, "GrantRecord.key_id"),
        _text(record.account, "GrantRecord.account"),
        _time(record.created_at, "GrantRecord.created_at"),
        _json_text(_plain_json(record.data, "GrantRecord.data")),
    )


def _cluster_row(record: ClusterRecord) -> tuple[str, str, str, float, str]:
    if not isinstance(record.data, Mapping):
        raise ValidationError("ClusterRecord.data must be a mapping")
    return (
        _text(record.cluster_id, "ClusterRecord.cluster_id"),
        _text(record.account, "ClusterRecord.account"),
        _text(record.partition, "ClusterRecord.partition"),
        _time(record.created_at, "ClusterRecord.created_at"),
        _json_text(_plain_json(record.data, "ClusterRecord.data")),
    )


def _custom_key_store_row(
    record: CustomKeyStoreRecord,
) -> tuple[str, str, str, str, str, float, str]:
    if not isinstance(record.data, Mapping):
        raise ValidationError("CustomKeyStoreRecord.data must be a mapping")
    return (
        _text(record.store_id, "CustomKeyStoreRecord.store_id"),
        _text(record.account, "CustomKeyStoreRecord.account"),
        _text(record.region, "CustomKeyStoreRecord.region"),
        _text(record.name, "CustomKeyStoreRecord.name"),
        _text(record.cluster_id, "CustomKeyStoreRecord.cluster_id"),
        _time(record.created_at, "CustomKeyStoreRecord.created_at"),
        _json_text(_plain_json(record.data, "CustomKeyStoreRecord.data")),
    )


def _cluster_from_row(row: tuple[Any, ...]) -> ClusterRecord:
    cluster_id, account, partition, created_at, data = row
    return ClusterRecord(
        cluster_id=cluster_id,
        account=account,
        partition=partition,
        created_at=created_at,
        data=_json_object(data, f"the data of cluster {cluster_id!r}"),
    )


def _custom_key_store_from_row(row: tuple[Any, ...]) -> CustomKeyStoreRecord:
    store_id, account, region, name, cluster_id, created_at, data = row
    return CustomKeyStoreRecord(
        store_id=store_id,
        account=account,
        region=region,
        name=name,
        cluster_id=cluster_id,
        created_at=created_at,
        data=_json_object(data, f"the data of custom key store {store_id!r}"),
    )


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise StoreError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise StoreError(f"{what} is not a JSON object")
    return value


def _key_from_row(row: tuple[Any, ...]) -> KeyRecord:
    key_id, account, region, partition, created_at, state, metadata, tags = row
    tag_map = _json_object(tags, f"the tags of key {key_id!r}")
    if not all(isinstance(v, str) for v in tag_map.values()):
        raise StoreError(f"the tags of key {key_id!r} are not all strings")
    return KeyRecord(
        key_id=key_id,
        account=account,
        region=region,
        partition=partition,
        created_at=created_at,
        state=state,
        metadata=_json_object(metadata, f"the metadata of key {key_id!r}"),
        tags=tag_map,
    )


def _grant_from_row(row: tuple[Any, ...]) -> GrantRecord:
    grant_id, key_id, account, created_at, data = row
    return GrantRecord(
        grant_id=grant_id,
        key_id=key_id,
        account=account,
        created_at=created_at,
        data=_json_object(data, f"the data of grant {grant_id!r}"),
    )


# --- integrity checks ---------------------------------------------------------------


def _sqlite_problems(conn: sqlite3.Connection) -> list[str]:
    return [
        f"sqlite integrity_check: {message}"
        for (message,) in conn.execute("PRAGMA integrity_check")
        if message != "ok"
    ]


def _referential_problems(conn: sqlite3.Connection) -> list[str]:
    problems = [
        f"material version {version} of key {key_id!r} belongs to no key"
        for key_id, version in conn.execute(
            "SELECT key_id, version FROM materials AS m WHERE NOT EXISTS"
            " (SELECT 1 FROM keys AS k WHERE k.key_id = m.key_id)"
            " ORDER BY key_id, version"
        )
    ]
    problems += [
        f"alias {name!r} of account {account} {region} points at missing key {key_id!r}"
        for account, region, name, key_id in conn.execute(
            "SELECT account, region, name, key_id FROM aliases AS a WHERE NOT EXISTS"
            " (SELECT 1 FROM keys AS k WHERE k.key_id = a.key_id)"
            " ORDER BY account, region, name"
        )
    ]
    problems += [
        f"grant {grant_id!r} is on missing key {key_id!r}"
        for grant_id, key_id in conn.execute(
            "SELECT grant_id, key_id FROM grants AS g WHERE NOT EXISTS"
            " (SELECT 1 FROM keys AS k WHERE k.key_id = g.key_id)"
            " ORDER BY key_id, created_at, grant_id"
        )
    ]
    problems += [
        f"key {key_id!r} is in missing partition {partition!r}"
        for key_id, partition in conn.execute(
            "SELECT key_id, partition FROM keys AS k WHERE NOT EXISTS"
            " (SELECT 1 FROM partitions AS p WHERE p.name = k.partition)"
            " ORDER BY key_id"
        )
    ]
    # A key whose material is imported may have none (before the first import, or
    # after it was deleted or expired). This is the one place the store reads a
    # field of the metadata it otherwise keeps opaque: the alternative, a column of
    # its own, would cost a table rebuild for one boolean.
    problems += [
        f"key {key_id!r} has no key material"
        for (key_id,) in conn.execute(
            "SELECT key_id FROM keys AS k WHERE NOT EXISTS"
            " (SELECT 1 FROM materials AS m WHERE m.key_id = k.key_id)"
            " AND json_valid(k.metadata)"
            " AND coalesce(json_extract(k.metadata, '$.origin'), '') != 'EXTERNAL'"
            " ORDER BY key_id"
        )
    ]
    return problems


def _record_problems(conn: sqlite3.Connection) -> list[str]:
    """Rows the constraints let through but ``load`` or a write would refuse."""
    problems = [
        f"partition {name!r} has unknown tenancy {tenancy!r}"
        for name, tenancy in conn.execute(
            "SELECT name, tenancy FROM partitions ORDER BY name"
        )
        if tenancy not in TENANCIES
    ]
    for row in conn.execute(
        "SELECT key_id, account, region, partition, created_at, state, metadata,"
        " tags FROM keys ORDER BY key_id"
    ):
        try:
            _key_from_row(row)
        except StoreError as exc:
            problems.append(str(exc))
    for row in conn.execute(_SELECT_CLUSTERS):
        try:
            _cluster_from_row(row)
        except StoreError as exc:
            problems.append(str(exc))
    for row in conn.execute(_SELECT_CUSTOM_KEY_STORES):
        try:
            _custom_key_store_from_row(row)
        except StoreError as exc:
            problems.append(str(exc))
    for row in conn.execute(_SELECT_GRANTS):
        grant_id = row[0]
        # A planted id can be of any length, so the message quotes only its start.
        if not 1 <= len(grant_id) <= GRANT_ID_MAX_CHARS:
            problems.append(
                f"grant id {grant_id[:GRANT_ID_MAX_CHARS]!r} is {len(grant_id)}"
                f" characters long, not 1 to {GRANT_ID_MAX_CHARS}"
            )
        try:
            _grant_from_row(row)
        except StoreError as exc:
            problems.append(str(exc))
    return problems
