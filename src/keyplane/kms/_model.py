"""The service's in-memory keys and aliases; the store holds the durable copy.

Every change is written to the store first and applied here only after the store has
committed it, so a failed write leaves memory as it was, and memory never claims
something a restart would not bring back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyplane.hsm import KeySlot, Partition
from keyplane.kms import _blob
from keyplane.kms._state import KeyState
from keyplane.storage import AliasRecord, KeyRecord

KEY_MANAGER = "CUSTOMER"
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
ORIGIN_AWS_KMS = "AWS_KMS"


@dataclass(slots=True)
class KmsKey:
    """One KMS key: its metadata, and a key slot per version of its material."""

    key_id: str
    account: str
    region: str
    arn: str
    partition: Partition
    created_at: float
    state: KeyState
    description: str = ""
    key_usage: str = ENCRYPT_DECRYPT
    key_spec: str = SYMMETRIC_DEFAULT
    origin: str = ORIGIN_AWS_KMS
    policy: str = ""
    deletion_date: float | None = None
    pending_window_days: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # versions[v - 1] holds material version v; the newest encrypts, all decrypt.
    versions: list[KeySlot] = field(default_factory=list)

    # Blob headers by material version: built once, not parsed from the key id on
    # every request.
    headers: dict[int, bytes] = field(default_factory=dict)

    @property
    def current_version(self) -> int:
        return len(self.versions)

    def blob_header(self, version: int) -> bytes:
        """The ciphertext blob header of this key and material version."""
        header = self.headers.get(version)
        if header is None:
            header = self.headers[version] = _blob.header(self.key_id, version)
        return header

    def metadata(self) -> dict[str, Any]:
        """What the store keeps beside the state (JSON-serialisable)."""
        return {
            "description": self.description,
            "key_usage": self.key_usage,
            "key_spec": self.key_spec,
            "origin": self.origin,
            "policy": self.policy,
            "deletion_date": self.deletion_date,
            "pending_window_days": self.pending_window_days,
        }

    def record(
        self,
        *,
        state: KeyState | None = None,
        tags: dict[str, str] | None = None,
        **changes: Any,
    ) -> KeyRecord:
        """The store record of this key, with ``changes`` applied (not to the key)."""
        metadata = self.metadata()
        unknown = set(changes) - set(metadata)
        if unknown:
            raise KeyError(f"not key metadata: {sorted(unknown)}")
        metadata.update(changes)
        return KeyRecord(
            key_id=self.key_id,
            account=self.account,
            region=self.region,
            partition=partition_name(self.account),
            created_at=self.created_at,
            state=(state or self.state).value,
            metadata=metadata,
            tags=dict(self.tags if tags is None else tags),
        )

    def apply(self, record: KeyRecord) -> None:
        """Take over the state, metadata and tags of a committed record."""
        self.state = KeyState(record.state)
        meta = record.metadata
        self.description = meta.get("description", "")
        self.key_usage = meta.get("key_usage", ENCRYPT_DECRYPT)
        self.key_spec = meta.get("key_spec", SYMMETRIC_DEFAULT)
        self.origin = meta.get("origin", ORIGIN_AWS_KMS)
        self.policy = meta.get("policy", "")
        self.deletion_date = meta.get("deletion_date")
        self.pending_window_days = meta.get("pending_window_days")
        self.tags = dict(record.tags)


@dataclass(slots=True)
class Alias:
    name: str
    account: str
    region: str
    key_id: str
    created_at: float
    updated_at: float

    def record(self) -> AliasRecord:
        return AliasRecord(
            self.account,
            self.region,
            self.name,
            self.key_id,
            self.created_at,
            self.updated_at,
        )


def partition_name(account: str) -> str:
    """The store's name for an account's partition of the shared HSM fleet."""
    return f"shared:{account}"


def material_context(key_id: str, version: int) -> bytes:
    """What wrapped key material is bound to, so a stored blob cannot stand in for
    another key's or another version's."""
    return f"{key_id}/{version}".encode()
