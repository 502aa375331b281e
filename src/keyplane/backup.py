"""Backups of a data directory's store, and restoring one into a fresh data directory.

This module owns ``keyplane backup`` and ``keyplane restore``: taking a consistent,
checked snapshot of ``<data_dir>/keyplane.db`` (also while a server is using it), and
putting such a snapshot in place in a data directory that has no store yet. A backup is
as sealed as the store it was taken from: key material stays wrapped under partition
keys, which stay wrapped under the root key. This module must never read, copy or
create a root key, never unwrap anything, and never overwrite or change an existing
store or backup.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyplane.errors import StoreConflictError, StoreError, StoreNotFoundError
from keyplane.storage import SCHEMA_VERSION, Snapshot, SQLiteStore, fsync_dir

DATABASE_NAME: Final = "keyplane.db"
"""The store's file name in a data directory (``Config.database``)."""

# The files SQLite keeps next to a database while it is in use. A leftover one next to
# a new database would be taken for that database's own, so restore refuses them too.
_COMPANION_SUFFIXES: Final = ("-wal", "-shm", "-journal")

# How many integrity problems a message lists before it only counts the rest.
_PROBLEMS_SHOWN: Final = 5

_COPY_CHUNK_BYTES: Final = 1 << 20

# How long reading the schema version waits for a server's write lock.
_BUSY_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup or a restore wrote, in counts only: never any key material."""

    path: Path
    size_bytes: int
    keys: int
    material_versions: int
    aliases: int
    grants: int
    partitions: int

    @classmethod
    def of(cls, path: Path, snapshot: Snapshot) -> BackupSummary:
        """The summary of the store file ``path``, whose records are ``snapshot``."""
        return cls(
            path=path,
            size_bytes=path.stat().st_size,
            keys=len(snapshot.keys),
            material_versions=len(snapshot.materials),
            aliases=len(snapshot.aliases),
            grants=len(snapshot.grants),
            partitions=len(snapshot.partitions),
        )


def backup(data_dir: Path, target: Path) -> BackupSummary:
    """Write a consistent snapshot of the store in ``data_dir`` to the new file
    ``target``, and check the snapshot.

    The store may be in use by a running server: SQLite's online backup API copies one
    committed state while the server keeps committing (WAL mode lets a reader and the
    writer run together). Nothing in ``data_dir`` is changed. The snapshot is created
    with mode 0600 and flushed to disk, then opened and checked; a snapshot that fails
    the check is deleted.

    Args:
        data_dir: The data directory of the store to back up.
        target: The backup file to create; it must not exist.

    Returns:
        The backup's path, size and record counts.

    Raises:
        StoreConflictError: ``target`` exists.
        StoreNotFoundError: ``data_dir`` holds no store.
        StoreError: The store cannot be read, has an older schema version (opening it
            would upgrade it), or the snapshot fails the integrity check.
    """
    database = data_dir / DATABASE_NAME
    if os.path.lexists(target):
        raise StoreConflictError(
            f"the backup target {target} exists; choose a new file name"
        )
    if not database.is_file():
        raise StoreNotFoundError(
            f"there is no store to back up: {database} does not exist"
            " (is the data directory right?)"
        )
    # SQLiteStore upgrades an older schema when it opens a store. Backing up must
    # not change the store (a running older server would not expect it), so look at
    # the version without opening it for writing first.
    version = _schema_version(database, f"the store {database}")
    if version == 0:
        raise StoreError(
            f"{database} holds no keyplane store yet (it has no schema); there is"
            " nothing to back up"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the store {database} has schema version {version}, older than this"
            f" keyplane's ({SCHEMA_VERSION}); back it up with the keyplane that wrote"
            " it, or start this keyplane's server on it once (which upgrades it)"
        )
    # With the schema current, opening runs no migration: it only sets up this
    # connection (busy timeout, synchronous, foreign keys) and confirms WAL mode,
    # which the store is already in, so the running server sees no change.
    with SQLiteStore(database) as store:
        store.backup(target)
    try:
        return _checked(target, f"the backup {target}")
    except BaseException:
        _remove_with_companions(target)
        raise


def restore(source: Path, data_dir: Path) -> BackupSummary:
    """Put the backup ``source`` in place as the store of ``data_dir``.

    ``data_dir`` must hold no store; it is created with mode 0700 if missing (an
    existing directory keeps its mode). The backup is copied into a private (0600)
    file in ``data_dir``, checked there, and only then given the store's name, without
    ever replacing a file of that name. The backup itself is only read. No root key
    is copied or created: the server needs the one the backup was made under.

    Args:
        source: A file written by ``backup``.
        data_dir: The data directory to restore into.

    Returns:
        The restored store's path, size and record counts.

    Raises:
        StoreConflictError: ``data_dir`` already holds a store (or SQLite files of
            one).
        StoreNotFoundError: ``source`` is not a file.
        StoreError: ``source`` is not a keyplane store, fails the integrity check, is
            a live store rather than a backup, or cannot be copied.
    """
    database = data_dir / DATABASE_NAME
    if not source.is_file():
        raise StoreNotFoundError(f"there is no backup file at {source}")
    _refuse_existing_store(database)
    live_log = _companion(source, "-wal")
    if live_log.exists() and live_log.stat().st_size > 0:
        raise StoreError(
            f"{source} has a write-ahead log next to it ({live_log}), so it is a live"
            " store, not a backup; take a backup of it with `keyplane backup`"
        )
    created_dir = not data_dir.exists()
    staging = data_dir / f".{DATABASE_NAME}.restore-{secrets.token_hex(4)}"
    try:
        _make_private_dir(data_dir)
        _copy_private(source, staging)
        # Every keyplane store has a schema version of 1 or more; SQLiteStore would
        # take any other SQLite file for an empty store and add its tables to it.
        if _schema_version(staging, f"the backup {source}") == 0:
            raise StoreError(
                f"the backup {source} is not a keyplane store (it has no keyplane"
                " schema)"
            )
        summary = _checked(staging, f"the backup {source}")
        try:
            # link, unlike rename, never replaces an existing file: a store that
            # appeared since the check above stays as it is.
            os.link(staging, database)
        except FileExistsError:
            _refuse_existing_store(database)
            raise
        staging.unlink()
        fsync_dir(data_dir)
    except OSError as exc:
        _undo_restore(staging, data_dir, created_dir)
        raise StoreError(f"cannot restore into {data_dir}: {exc.strerror}") from exc
    except BaseException:
        _undo_restore(staging, data_dir, created_dir)
        raise
    return BackupSummary(
        path=database,
        size_bytes=summary.size_bytes,
        keys=summary.keys,
        material_versions=summary.material_versions,
        aliases=summary.aliases,
        grants=summary.grants,
        partitions=summary.partitions,
    )


def _checked(path: Path, what: str) -> BackupSummary:
    """Open the store file ``path``, run the integrity check, and count its records.

    Raises:
        StoreError: ``path`` is not a keyplane store or has problems.
    """
    try:
        with SQLiteStore(path) as store:
            problems = store.integrity_check()
            snapshot = None if problems else store.load()
    except StoreError as exc:
        raise StoreError(f"{what} is not a usable keyplane store: {exc}") from exc
    if snapshot is None:
        shown = "; ".join(problems[:_PROBLEMS_SHOWN])
        if len(problems) > _PROBLEMS_SHOWN:
            shown += f"; and {len(problems) - _PROBLEMS_SHOWN} more"
        raise StoreError(f"{what} fails the integrity check: {shown}")
    return BackupSummary.of(path, snapshot)


def _schema_version(database: Path, what: str) -> int:
    """The schema version of the SQLite file ``database``, read without setting
    anything up; ``what`` names the file in messages.

    A plain connection, with none of the store's settings, changes nothing: reading
    the version takes only a read lock, which a running server's writes do not wait
    for.

    Raises:
        StoreError: The file cannot be read as a SQLite database.
    """
    try:
        conn = sqlite3.connect(database, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {what}: {exc}") from exc
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{what} is not a keyplane store: {exc}") from exc
    finally:
        conn.close()
    return int(version)


def _companion(database: Path, suffix: str) -> Path:
    return database.with_name(database.name + suffix)


def _refuse_existing_store(database: Path) -> None:
    for path in (database, *(_companion(database, s) for s in _COMPANION_SUFFIXES)):
        if os.path.lexists(path):
            raise StoreConflictError(
                f"{database.parent} already has a store ({path.name}); restore only"
                " into a fresh data directory, or move the existing store away first"
            )


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700 unless it exists (then leave it as is)."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        return
    # mkdir's mode is filtered by the umask; set it exactly.
    os.chmod(directory, 0o700)
    fsync_dir(directory.parent)


def _copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` into the new file ``target``, mode 0600, flushed to disk."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        # The mode is set at creation, and then exactly, whatever the umask.
        os.fchmod(out.fileno(), 0o600)
        with source.open("rb") as src:
            shutil.copyfileobj(src, out, _COPY_CHUNK_BYTES)
        out.flush()
        os.fsync(out.fileno())


def _remove_with_companions(path: Path) -> None:
    for leftover in (path, *(_companion(path, s) for s in _COMPANION_SUFFIXES)):
        with suppress(FileNotFoundError):
            leftover.unlink()


def _undo_restore(staging: Path, data_dir: Path, created_dir: bool) -> None:
    """Leave ``data_dir`` as restore found it (best effort)."""
    _remove_with_companions(staging)
    if created_dir:
        with suppress(OSError):
            data_dir.rmdir()
