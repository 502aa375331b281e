"""Root key rotation (``keyplane root-key rotate``), in a running server or offline, and
settling at start-up a rotation that a stop cut short.

A rotation re-wraps every partition key under a new root key and changes nothing else:
no key material, key id, ciphertext or data key. Its steps, each durable before the
next:

1. a new key is staged in ``root.key.next`` (mode 0600, flushed with its directory);
2. one store transaction replaces every partition's wrapped key with its re-wrap under
   the new key: the commit point;
3. ``root.key.next`` is renamed over ``root.key``;
4. the HSM switches to the new key, so partitions created from then on are stored
   under it (the caller keeps partitions from being created during 1 to 4).

A stop before step 2 commits leaves the store under the old key, which ``root.key``
still holds; a stop after it leaves the store under the new key, which is in
``root.key.next`` until step 3 and in ``root.key`` after. So at start-up exactly one of
the two keys opens the store, and ``settle`` keeps that one, after checking that it
opens every partition. Only a root key file can rotate: a server cannot change the
``KEYPLANE_ROOT_KEY`` it was started with.

A commit that fails may still have landed. When the store, read back, cannot say
whether it did, the HSM is left on the old key and refuses new partitions until a
restart (``Hsm.refuse_new_partitions``): a partition stored under either key now could
be the one that the next start's key does not open.

This module must never put a root key, in any form, in a log, message or answer; it
reports counts.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from keyplane.errors import (
    ConflictError,
    InvalidCiphertextError,
    MalformedNativeCallError,
    RootKeyError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from keyplane.hsm import Hsm, Tenancy
from keyplane.storage import (
    ROOT_KEY_ENV,
    PartitionRecord,
    Snapshot,
    SQLiteStore,
    discard_staged_root_key,
    load_root_key,
    load_staged_root_key,
    lock_key_directory,
    promote_staged_root_key,
    stage_root_key,
    staged_root_key_path,
)

_log = logging.getLogger(__name__)

FROM_ENVIRONMENT: Final = (
    f"The root key comes from {ROOT_KEY_ENV}, and keyplane cannot change the"
    " environment it was started with: only a root key file (<data_dir>/root.key)"
    " can be rotated."
)

Rotation = Callable[[], int]


def rotate(key_file: Path, store: SQLiteStore, hsm: Hsm) -> int:
    """Re-wrap every partition key in ``store`` under a new root key, in the order the
    module describes, and switch ``hsm`` to it. Blocking.

    The caller keeps partitions from being created (and stored) until this returns.

    Returns:
        How many partition keys were re-wrapped.

    Raises:
        ConflictError: A staged key from an unfinished rotation is in the way.
        RootKeyError: A stored partition key is not wrapped under ``hsm``'s root key;
            or a key file cannot be written or renamed. If the rename failed, the
            rotation has committed and the HSM uses the new key, and the next start
            finishes the rename.
        StoreError: The store failed; nothing changed. Or, if that cannot be told,
            the staged key is kept for the next start to settle, and ``hsm`` refuses
            new partitions until then.
    """
    started = time.perf_counter()
    new_key = stage_root_key(key_file)
    written: list[bytes] = []

    def rewrap(wrapped: list[bytes]) -> list[bytes]:
        try:
            written[:] = hsm.rewrap_partition_keys(wrapped, new_key)
        except InvalidCiphertextError as exc:
            raise RootKeyError(
                "a stored partition key does not unwrap under the root key in use:"
                " the store was altered, or written under another root key; nothing"
                " was changed"
            ) from exc
        return written

    try:
        try:
            count = store.rewrap_partitions(rewrap)
        except BaseException:
            landed = _store_holds(store, written, key_file)
            if landed is None:
                hsm.refuse_new_partitions(
                    "a root key rotation cannot tell whether the store took the new"
                    " root key: no partition is created until the server restarts,"
                    " which settles it"
                )
            if not landed:
                raise
            # A commit that reported a failure but landed (an I/O error after the
            # log was written, say): the store is under the new key, so go on.
            count = len(written)
            _log.warning(
                "the store reported a failure re-wrapping the partition keys, but the"
                " re-wrap is there: finishing the root key rotation"
            )
        try:
            promote_staged_root_key(key_file)
        finally:
            # The store is sealed under the new key whatever the rename did; a stop
            # before the rename is finished the next start (the staged key opens).
            hsm.set_root_key(new_key)
    finally:
        new_key[:] = bytes(len(new_key))
    _log.info(
        "rotated the root key: re-wrapped %d partition keys in %.1f ms",
        count,
        (time.perf_counter() - started) * 1000,
    )
    return count


def _store_holds(
    store: SQLiteStore, written: list[bytes], key_file: Path
) -> bool | None:
    """After a failed re-wrap: whether the store holds it anyway, or None when that
    cannot be told. When it does not, the staged key is removed; when that cannot be
    told, it is kept (the next start settles which key opens the store)."""
    try:
        stored = [p.wrapped_key for p in store.load().partitions]
    except Exception:  # whatever the reason, the outcome is unknown: fail closed
        _log.error(
            "re-wrapping the partition keys failed and the store cannot be read back;"
            " %s is kept, no partition is created until a restart, and the restart"
            " settles which root key opens the store: restart the server",
            staged_root_key_path(key_file),
        )
        return None
    if written and stored == written:
        return True
    try:
        discard_staged_root_key(key_file)
    except RootKeyError as exc:
        # The original failure matters more; the next start removes the file.
        _log.error("%s", exc)
    return False


def in_service(
    key_file: Path, store: SQLiteStore, hsm: Hsm, *, from_environment: bool
) -> Rotation:
    """The ``KmsService.root_key_rotation`` of a server whose root key is in
    ``key_file``, or one that refuses when the key came from the environment."""
    if from_environment:
        return _refuse_environment
    return functools.partial(rotate, key_file, store, hsm)


def _refuse_environment() -> int:
    raise UnsupportedOperationError(FROM_ENVIRONMENT)


def settle(key_file: Path, root_key: bytearray, snapshot: Snapshot) -> bytearray:
    """The root key ``snapshot`` is sealed under, once a rotation that a stop cut short
    is finished or undone; without a staged key, ``root_key`` as it is.

    With a staged key beside ``key_file``, every partition is tried under both keys.
    All open under the key file's: the rotation had not committed, and the staged key
    is removed. All open under the staged key: it had, and the staged key is renamed
    over the key file. Either way no file that opens a partition is removed or
    overwritten. When some open under neither, both files are left as they are and
    ``root_key`` is returned for the caller to fail on as usual.

    Args:
        key_file: The root key file.
        root_key: Its key; zeroed here if the staged one is returned instead.
        snapshot: The store's records.

    Returns:
        The key to open the store with, for the caller to zero once the HSM holds it.

    Raises:
        RootKeyError: Some partitions open only under the key file's key and others
            only under the staged one (nothing is touched); or a key file cannot be
            renamed or removed.
    """
    staged_path = staged_root_key_path(key_file)
    problem: RootKeyError | None = None
    try:
        staged = load_staged_root_key(key_file)
    except RootKeyError as exc:
        staged, problem = None, exc
    if staged is None and problem is None:
        return root_key
    try:
        current = _opened_by(root_key, snapshot.partitions)
        by_staged = (
            _opened_by(staged, snapshot.partitions) if staged is not None else set()
        )
    except BaseException:
        _zero(staged)
        raise
    names = {p.name for p in snapshot.partitions}
    only_current, only_staged = current - by_staged, by_staged - current
    if only_current and only_staged:
        _zero(staged)
        raise RootKeyError(
            f"the store is sealed partly under {key_file} ({len(only_current)}"
            f" partitions open only under it) and partly under {staged_path}"
            f" ({len(only_staged)} only under it): a root key rotation and partitions"
            " stored under the old key crossed. Both files are left as they are; keep"
            " both, and restore the data directory from a backup"
        )
    if current == names:
        # The staged key opens no partition that the key file's does not.
        _zero(staged)
        discard_staged_root_key(key_file)
        _log.warning(
            "%s was left by a root key rotation that had not committed: removed it;"
            " the root key is unchanged%s",
            staged_path,
            f" ({problem})" if problem is not None else "",
        )
        return root_key
    if staged is not None and by_staged == names:
        # The key file's key opens no partition that the staged one does not.
        root_key[:] = bytes(len(root_key))
        promote_staged_root_key(key_file)
        _log.warning(
            "finished a root key rotation that had committed before the server"
            " stopped: renamed %s to %s",
            staged_path,
            key_file,
        )
        return staged
    _zero(staged)
    _log.error(
        "%d partitions open under neither %s nor %s; both are left as they are",
        len(names - current - by_staged),
        key_file,
        staged_path,
    )
    return root_key


def _opened_by(root_key: bytearray, partitions: Sequence[PartitionRecord]) -> set[str]:
    """The names of the ``partitions`` whose keys unwrap under ``root_key`` (not
    consumed)."""
    hsm = Hsm(bytearray(root_key))  # Hsm zeroes the copy it is given
    opened: set[str] = set()
    try:
        for record in partitions:
            try:
                partition = hsm.open_partition(
                    record.wrapped_key, Tenancy(record.tenancy)
                )
            except (InvalidCiphertextError, MalformedNativeCallError):
                continue
            partition.destroy()
            opened.add(record.name)
    finally:
        hsm.close()
    return opened


def _zero(key: bytearray | None) -> None:
    if key is not None:
        key[:] = bytes(len(key))


def rotate_offline(
    key_file: Path, database: Path, environ: Mapping[str, str] = os.environ
) -> int:
    """Rotate the root key of a data directory that no server is using.

    Holds the directory's lock for the whole rotation, so a server cannot start on it
    meanwhile, and refuses when a server holds it.

    Args:
        key_file: The root key file.
        database: The store's database file, in the same directory.
        environ: Where ``KEYPLANE_ROOT_KEY`` would be.

    Returns:
        How many partition keys were re-wrapped.

    Raises:
        UnsupportedOperationError: The root key comes from the environment.
        StoreNotFoundError: There is no store.
        ConflictError: A server is using the directory.
        RootKeyError: No usable root key file, or the store is sealed under another
            root key.
        StoreError: The store failed; nothing changed.
    """
    if environ.get(ROOT_KEY_ENV) is not None:
        raise UnsupportedOperationError(FROM_ENVIRONMENT)
    directory = key_file.parent
    if not database.is_file():
        raise StoreNotFoundError(
            f"there is no store to rotate the root key of: {database} does not exist"
            " (is the data directory right?)"
        )
    lock = lock_key_directory(directory)
    if lock is None:
        raise ConflictError(
            f"a keyplane server is running on {directory}: rotate its root key through"
            " it with `keyplane root-key rotate --endpoint URL`"
        )
    try:
        root_key = load_root_key(key_file, create=False, environ=environ)
        with SQLiteStore(database) as store:
            snapshot = store.load()
            hsm = Hsm(settle(key_file, root_key, snapshot))
            try:
                return rotate(key_file, store, hsm)
            finally:
                hsm.close()
    finally:
        os.close(lock)
