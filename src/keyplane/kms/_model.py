"""The service's in-memory keys and aliases; the store holds the durable copy.

Every change is written to the store first and applied here only after the store has
committed it, so a failed write leaves memory as it was, and memory never claims
something a restart would not bring back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from keyplane.errors import KeyStateError
from keyplane.hsm import KeySlot, Partition
from keyplane.kms import _blob
from keyplane.kms._key_stores import CustomKeyStore
from keyplane.kms._state import KeyState
from keyplane.policy import Decision, Grant, PolicyDocument, parse_policy
from keyplane.storage import AliasRecord, GrantRecord, KeyRecord

KEY_MANAGER = "CUSTOMER"
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
ORIGIN_AWS_KMS = "AWS_KMS"
ORIGIN_EXTERNAL = "EXTERNAL"
ORIGIN_AWS_CLOUDHSM = "AWS_CLOUDHSM"


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
    # Automatic rotation: whether it is on, its period, when it was last turned on or
    # re-timed, and when it next rotates (by the service's clock).
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    rotation_enabled_at: float | None = None
    next_rotation_date: float | None = None
    # One entry per rotation, oldest first: {"version", "date", "type"}. Material
    # version 1 came with the key and has none.
    rotations: list[dict[str, Any]] = field(default_factory=list)
    # versions[v - 1] holds material version v; the current one encrypts, every one up
    # to it decrypts. An imported version whose material was deleted or expired is
    # None, and the key is then PendingImport (or PendingDeletion), which refuses
    # every cryptographic operation before a slot is looked for.
    versions: list[KeySlot | None] = field(default_factory=list)
    # Origin EXTERNAL: one entry per material version (see ``ImportedMaterial``) ...
    imported: list[dict[str, Any]] = field(default_factory=list)
    # ... whether the newest version was imported as NEW_KEY_MATERIAL and waits for
    # RotateKeyOnDemand to make it current ...
    pending_rotation: bool = False
    # ... and the unexpired GetParametersForImport answers, newest last.
    import_parameters: list[dict[str, Any]] = field(default_factory=list)
    # --- origin AWS_CLOUDHSM: the custom key store the key lives in (its id is
    # stored; the store itself is looked up at restore), and the store's name for the
    # key's partition when it is not the account's shared one (a cluster's).
    custom_key_store_id: str | None = None
    key_store: CustomKeyStore | None = None
    stored_partition: str | None = None

    # Blob headers by material version: built once, not parsed from the key id on
    # every request.
    headers: dict[int, bytes] = field(default_factory=dict)
    grants: dict[str, KeyGrant] = field(default_factory=dict)
    # Authorization decisions that hold whatever the request's context, by (caller
    # ARN, action); valid until the key policy or the grants change.
    decisions: dict[tuple[str, str], Decision] = field(default_factory=dict)
    parsed_policy: PolicyDocument | None = None
    grant_rules: tuple[Grant, ...] | None = None

    def policy_document(self) -> PolicyDocument:
        """The key policy, parsed once (it was validated when it was set)."""
        if self.parsed_policy is None:
            self.parsed_policy = parse_policy(self.policy, kind="key")
        return self.parsed_policy

    def policy_grants(self) -> tuple[Grant, ...]:
        if self.grant_rules is None:
            self.grant_rules = tuple(g.rule for g in self.grants.values())
        return self.grant_rules

    def access_changed(self) -> None:
        """Forget what was derived from the key policy and grants."""
        self.parsed_policy = None
        self.grant_rules = None
        self.decisions.clear()

    @property
    def effective_state(self) -> KeyState:
        """The state AWS reports and checks: a custom key store's key is Unavailable
        while its store is not connected, unless it is pending deletion (which it
        stays); the underlying Enabled or Disabled comes back on connect."""
        store = self.key_store
        if store is None or store.connected or self.state is KeyState.PENDING_DELETION:
            return self.state
        return KeyState.UNAVAILABLE

    @property
    def cloud_hsm_cluster_id(self) -> str | None:
        store = self.key_store
        return None if store is None else store.cluster_id

    @property
    def current_version(self) -> int:
        """The version that encrypts; 0 for an imported key that never had material."""
        return len(self.versions) - self.pending_rotation

    def slot(self, version: int) -> KeySlot:
        """The slot of a material version the caller has checked exists.

        Raises:
            KeyStateError: the version's imported material is gone (only reachable
                if a state check was skipped: the key is then PendingImport).
        """
        slot = self.versions[version - 1]
        if slot is None:
            raise KeyStateError(f"{self.arn} is pending import.")
        return slot

    def material_id(self, version: int) -> str:
        """The KeyMaterialId AWS reports for a material version: 64 hex digits.

        Generated material gets an id stable for the key and version; imported
        material keeps the id computed from the material itself when it was imported
        (it names material, never reveals it)."""
        if self.origin == ORIGIN_EXTERNAL:
            return str(self.imported[version - 1]["id"])
        return hashlib.sha256(
            f"keyplane-material:{self.key_id}:{version}".encode()
        ).hexdigest()

    def material_expiry(self) -> tuple[str, float | None] | None:
        """ExpirationModel and ValidTo as DescribeKey reports them for imported
        material: AWS's ValidTo is the earliest expiry of any material the key depends
        on (every version up to the current one that holds material), not only the
        current material's. None for a key that never had imported material."""
        entries = self.imported[: self.current_version]
        if not entries:
            return None
        held = [
            e for e, s in zip(entries, self.versions, strict=False) if s is not None
        ]
        expiring = [e["valid_to"] for e in held or entries if e.get("valid_to")]
        if expiring:
            return "KEY_MATERIAL_EXPIRES", min(expiring)
        return "KEY_MATERIAL_DOES_NOT_EXPIRE", None

    def missing_material(self) -> bool:
        """Whether an imported version the key depends on has no material."""
        return self.current_version == 0 or any(
            slot is None for slot in self.versions[: self.current_version]
        )

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
            "rotation_enabled": self.rotation_enabled,
            "rotation_period_days": self.rotation_period_days,
            "rotation_enabled_at": self.rotation_enabled_at,
            "next_rotation_date": self.next_rotation_date,
            "rotations": [dict(r) for r in self.rotations],
            "imported": [dict(m) for m in self.imported],
            "pending_rotation": self.pending_rotation,
            "import_parameters": [dict(p) for p in self.import_parameters],
            "custom_key_store_id": self.custom_key_store_id,
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
            partition=self.stored_partition or partition_name(self.account),
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
        policy = meta.get("policy", "")
        if policy != self.policy:
            self.policy = policy
            self.access_changed()
        self.deletion_date = meta.get("deletion_date")
        self.pending_window_days = meta.get("pending_window_days")
        self.rotation_enabled = bool(meta.get("rotation_enabled", False))
        self.rotation_period_days = meta.get("rotation_period_days")
        self.rotation_enabled_at = meta.get("rotation_enabled_at")
        self.next_rotation_date = meta.get("next_rotation_date")
        self.rotations = [dict(r) for r in meta.get("rotations", [])]
        self.imported = [dict(m) for m in meta.get("imported", [])]
        self.pending_rotation = bool(meta.get("pending_rotation", False))
        self.import_parameters = [dict(p) for p in meta.get("import_parameters", [])]
        self.custom_key_store_id = meta.get("custom_key_store_id")
        self.tags = dict(record.tags)


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A grant on a key as CreateGrant made it; ``rule`` is what the policy engine
    evaluates."""

    grant_id: str
    key_id: str
    account: str
    created_at: float
    name: str
    grantee: str
    retiring: str | None
    operations: tuple[str, ...]
    constraints: dict[str, dict[str, str]] | None
    issuing_account: str
    rule: Grant
    # Grant tokens carry an HMAC under this, so only tokens this service issued for
    # this grant check out. Stored beside the grant: a token only identifies its grant
    # (it never gives more than the grant), so the store holding it gives no one more.
    token_secret: bytes = field(repr=False, default=b"")

    @classmethod
    def build(
        cls,
        grant_id: str,
        key_id: str,
        account: str,
        created_at: float,
        data: dict[str, Any],
    ) -> KeyGrant:
        constraints = data.get("constraints")
        return cls(
            grant_id=grant_id,
            key_id=key_id,
            account=account,
            created_at=created_at,
            name=data.get("name", ""),
            grantee=data["grantee"],
            retiring=data.get("retiring"),
            operations=tuple(data["operations"]),
            constraints=constraints,
            issuing_account=data["issuing_account"],
            token_secret=bytes.fromhex(data.get("token_secret", "")),
            rule=Grant(
                grant_id,
                data["grantee"],
                frozenset(data["operations"]),
                (constraints or {}).get("EncryptionContextEquals"),
                (constraints or {}).get("EncryptionContextSubset"),
            ),
        )

    @classmethod
    def from_record(cls, record: GrantRecord) -> KeyGrant:
        return cls.build(
            record.grant_id,
            record.key_id,
            record.account,
            record.created_at,
            dict(record.data),
        )

    def record(self) -> GrantRecord:
        return GrantRecord(
            self.grant_id,
            self.key_id,
            self.account,
            self.created_at,
            {
                "name": self.name,
                "grantee": self.grantee,
                "retiring": self.retiring,
                "operations": list(self.operations),
                "constraints": self.constraints,
                "issuing_account": self.issuing_account,
                "token_secret": self.token_secret.hex(),
            },
        )


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
