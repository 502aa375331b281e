"""Durable storage of partitions, key metadata, wrapped key material, aliases and
grants.

SQLite is the default backend; every backend implements ``Store``. The root key that
makes the stored material usable comes from ``load_root_key``. Storage keeps records
and knows nothing of KMS semantics: no key states, no policies. It imports nothing of
keyplane but ``keyplane.errors``.
"""

from keyplane.storage._files import fsync_dir
from keyplane.storage._records import (
    AliasRecord,
    ClusterRecord,
    CustomKeyStoreRecord,
    GrantRecord,
    KeyRecord,
    MaterialRecord,
    PartitionRecord,
    Snapshot,
    Store,
)
from keyplane.storage._root_key import (
    ROOT_KEY_BYTES,
    ROOT_KEY_ENV,
    discard_staged_root_key,
    load_root_key,
    load_staged_root_key,
    lock_key_directory,
    promote_staged_root_key,
    stage_root_key,
    staged_root_key_path,
)
from keyplane.storage._sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "ROOT_KEY_BYTES",
    "ROOT_KEY_ENV",
    "SCHEMA_VERSION",
    "AliasRecord",
    "ClusterRecord",
    "CustomKeyStoreRecord",
    "GrantRecord",
    "KeyRecord",
    "MaterialRecord",
    "PartitionRecord",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "discard_staged_root_key",
    "fsync_dir",
    "load_root_key",
    "load_staged_root_key",
    "lock_key_directory",
    "promote_staged_root_key",
    "stage_root_key",
    "staged_root_key_path",
]
