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
    GrantRecord,
    KeyRecord,
    MaterialRecord,
    PartitionRecord,
    Snapshot,
    Store,
)
from keyplane.storage._root_key import ROOT_KEY_BYTES, ROOT_KEY_ENV, load_root_key
from keyplane.storage._sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "ROOT_KEY_BYTES",
    "ROOT_KEY_ENV",
    "SCHEMA_VERSION",
    "AliasRecord",
    "GrantRecord",
    "KeyRecord",
    "MaterialRecord",
    "PartitionRecord",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "fsync_dir",
    "load_root_key",
]
