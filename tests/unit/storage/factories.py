"""Records for the storage tests, valid unless a test changes them."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from keyplane.storage import (
    AliasRecord,
    GrantRecord,
    KeyRecord,
    MaterialRecord,
    PartitionRecord,
)

ACCOUNT = "111122223333"
REGION = "us-east-1"
SHARED = f"shared:{ACCOUNT}"


def partition(name: str = SHARED, tenancy: str = "shared") -> PartitionRecord:
    return PartitionRecord(
        name=name, tenancy=tenancy, wrapped_key=b"\x01wrapped-partition", created_at=1.5
    )


def key(key_id: str | None = None, **changes: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": key_id or str(uuid.uuid4()),
        "account": ACCOUNT,
        "region": REGION,
        "partition": SHARED,
        "created_at": 1700000000.25,
        "state": "Enabled",
        "metadata": {
            "description": "test key",
            "key_usage": "ENCRYPT_DECRYPT",
            "policy": {"Version": "2012-10-17", "Statement": []},
        },
        "tags": {"team": "storage"},
    }
    fields.update(changes)
    return KeyRecord(**fields)


def material(key_id: str, version: int = 1, wrapped: bytes = b"") -> MaterialRecord:
    return MaterialRecord(
        key_id=key_id,
        version=version,
        wrapped=wrapped or f"wrapped-{key_id}-{version}".encode(),
        created_at=1700000000.5 + version,
    )


def alias(name: str, key_id: str, **changes: Any) -> AliasRecord:
    fields: dict[str, Any] = {
        "account": ACCOUNT,
        "region": REGION,
        "name": name,
        "key_id": key_id,
        "created_at": 1700000001.0,
        "updated_at": 1700000001.0,
    }
    fields.update(changes)
    return AliasRecord(**fields)


def grant(grant_id: str, key_id: str, **changes: Any) -> GrantRecord:
    fields: dict[str, Any] = {
        "grant_id": grant_id,
        "key_id": key_id,
        "account": ACCOUNT,
        "created_at": 1700000002.0,
        "data": {
            "name": "test grant",
            "grantee_principal": f"arn:aws:iam::{ACCOUNT}:role/reader",
            "operations": ["Decrypt", "Encrypt"],
            "constraints": {"encryption_context_subset": {"app": "storage"}},
        },
    }
    fields.update(changes)
    return GrantRecord(**fields)


@contextmanager
def raw_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection with foreign keys off, to plant what the store refuses."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn
