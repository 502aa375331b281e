"""Property: any sequence of operations leaves the SQLite store holding exactly what a
plain in-memory model holds, before and after reopening, and every refused operation
changes nothing."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from keyplane.errors import StoreConflictError, StoreNotFoundError, ValidationError
from keyplane.storage import (
    AliasRecord,
    GrantRecord,
    KeyRecord,
    MaterialRecord,
    PartitionRecord,
    Snapshot,
    SQLiteStore,
)

# Small pools of names, so that operations meet the same records again.
NAMES = st.text(alphabet="ab:é", min_size=1, max_size=3)
ACCOUNTS = st.sampled_from(["111122223333", "444455556666"])
REGIONS = st.sampled_from(["us-east-1", "eu-west-1"])
ALIASES = st.sampled_from(["alias/a", "alias/b", "alias/ü"])
GRANT_IDS = st.text(alphabet="gé0", min_size=1, max_size=2)
TIMES = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TIMES | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
METADATA = st.dictionaries(TEXT, JSON, max_size=4)
TAGS = st.dictionaries(TEXT, TEXT, max_size=3)
WRAPPED = st.binary(max_size=48)


@dataclass
class Model:
    """What the store should hold, kept the obvious way."""

    partitions: dict[str, PartitionRecord] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    materials: dict[tuple[str, int], MaterialRecord] = field(default_factory=dict)
    aliases: dict[tuple[str, str, str], AliasRecord] = field(default_factory=dict)
    grants: dict[str, GrantRecord] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            partitions=[self.partitions[k] for k in sorted(self.partitions)],
            keys=[self.keys[k] for k in sorted(self.keys)],
            materials=[self.materials[k] for k in sorted(self.materials)],
            aliases=[self.aliases[k] for k in sorted(self.aliases)],
            grants=sorted(
                self.grants.values(),
                key=lambda g: (g.key_id, g.created_at, g.grant_id),
            ),
        )

    def next_version(self, key_id: str) -> int:
        return 1 + max((v for k, v in self.materials if k == key_id), default=0)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.path = self.dir / "data" / "keyplane.db"
        self.store = SQLiteStore(self.path)
        self.model = Model()

    def teardown(self) -> None:
        try:
            self.store.close()
            with SQLiteStore(self.path) as reopened:
                assert reopened.load() == self.model.snapshot()
                bare = sorted(
                    k for k in self.model.keys if self.model.next_version(k) == 1
                )
                assert reopened.integrity_check() == [
                    f"key {k!r} has no key material" for k in bare
                ]
        finally:
            shutil.rmtree(self.dir)

    def _refused(self, error: type[Exception], call: Any, *args: Any) -> None:
        with pytest.raises(error):
            call(*args)

    def _some_key(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.model.keys)), label="key_id")

    @initialize()
    def first_partition(self) -> None:
        self.put_partition("shared:1", "shared")

    @rule(name=NAMES, tenancy=st.sampled_from(["shared", "dedicated"]))
    def put_partition(self, name: str, tenancy: str) -> None:
        record = PartitionRecord(name, tenancy, b"wk:" + name.encode(), 1.0)
        if name in self.model.partitions:
            self._refused(StoreConflictError, self.store.put_partition, record)
            return
        self.store.put_partition(record)
        self.model.partitions[name] = record

    @rule(
        data=st.data(),
        key_id=NAMES,
        account=ACCOUNTS,
        region=REGIONS,
        created_at=TIMES,
        state=TEXT,
        metadata=METADATA,
        tags=TAGS,
        wrapped=st.none() | WRAPPED,
    )
    def create_key(
        self,
        data: st.DataObject,
        key_id: str,
        account: str,
        region: str,
        created_at: float,
        state: str,
        metadata: dict[str, Any],
        tags: dict[str, str],
        wrapped: bytes | None,
    ) -> None:
        partition = data.draw(st.sampled_from(sorted(self.model.partitions)))
        key = KeyRecord(
            key_id, account, region, partition, created_at, state, metadata, tags
        )
        material = None if wrapped is None else MaterialRecord(key_id, 1, wrapped, 2.0)
        if key_id in self.model.keys:
            self._refused(StoreConflictError, self.store.create_key, key, material)
            return
        self.store.create_key(key, material)
        self.model.keys[key_id] = key
        if material is not None:
            self.model.materials[(key_id, 1)] = material

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data(), state=TEXT, metadata=METADATA, tags=TAGS)
    def update_key(
        self,
        data: st.DataObject,
        state: str,
        metadata: dict[str, Any],
        tags: dict[str, str],
    ) -> None:
        key_id = self._some_key(data)
        key = replace(
            self.model.keys[key_id], state=state, metadata=metadata, tags=tags
        )
        self.store.update_key(key)
        self.model.keys[key_id] = key

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data(), wrapped=WRAPPED)
    def add_material(self, data: st.DataObject, wrapped: bytes) -> None:
        key_id = self._some_key(data)
        version = self.model.next_version(key_id)
        material = MaterialRecord(key_id, version, wrapped, 3.0)
        self.store.add_material(material)
        self.model.materials[(key_id, version)] = material

    @precondition(lambda self: self.model.materials)
    @rule(data=st.data())
    def add_material_again(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(sorted(self.model.materials)))
        material = replace(self.model.materials[old], wrapped=b"again")
        self._refused(StoreConflictError, self.store.add_material, material)

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data())
    def delete_key(self, data: st.DataObject) -> None:
        key_id = self._some_key(data)
        self.store.delete_key(key_id)
        del self.model.keys[key_id]
        for table in (self.model.materials, self.model.aliases, self.model.grants):
            for k, v in list(table.items()):
                if v.key_id == key_id:
                    del table[k]

    @precondition(lambda self: self.model.keys)
    @rule(
        data=st.data(),
        account=ACCOUNTS,
        region=REGIONS,
        name=ALIASES,
        created_at=TIMES,
        updated_at=TIMES,
    )
    def put_alias(
        self,
        data: st.DataObject,
        account: str,
        region: str,
        name: str,
        created_at: float,
        updated_at: float,
    ) -> None:
        key_id = self._some_key(data)
        record = AliasRecord(account, region, name, key_id, created_at, updated_at)
        self.store.put_alias(record)
        self.model.aliases[(account, region, name)] = record

    @precondition(lambda self: self.model.aliases)
    @rule(data=st.data())
    def delete_alias(self, data: st.DataObject) -> None:
        account, region, name = data.draw(st.sampled_from(sorted(self.model.aliases)))
        self.store.delete_alias(account, region, name)
        del self.model.aliases[(account, region, name)]

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data(), grant_id=GRANT_IDS, created_at=TIMES, details=METADATA)
    def put_grant(
        self,
        data: st.DataObject,
        grant_id: str,
        created_at: float,
        details: dict[str, Any],
    ) -> None:
        key = self.model.keys[self._some_key(data)]
        record = GrantRecord(grant_id, key.key_id, key.account, created_at, details)
        if grant_id in self.model.grants:
            self._refused(StoreConflictError, self.store.put_grant, record)
            return
        self.store.put_grant(record)
        self.model.grants[grant_id] = record

    @precondition(lambda self: self.model.grants)
    @rule(data=st.data())
    def delete_grant(self, data: st.DataObject) -> None:
        grant_id = data.draw(st.sampled_from(sorted(self.model.grants)))
        self.store.delete_grant(grant_id)
        del self.model.grants[grant_id]

    @precondition(lambda self: self.model.keys)
    @rule(
        data=st.data(),
        change=st.sampled_from(
            [
                {"grant_id": ""},
                {"grant_id": "g" * 129},
                {"created_at": math.nan},
                {"data": {"ops": {"Decrypt"}}},
                {"data": {1: "int key"}},
            ]
        ),
    )
    def put_malformed_grant(self, data: st.DataObject, change: dict[str, Any]) -> None:
        # GRANT_IDS never draws "fresh", so only the malformed field can be the
        # reason to refuse.
        record = GrantRecord("fresh", self._some_key(data), "111122223333", 0.0, {})
        self._refused(ValidationError, self.store.put_grant, replace(record, **change))

    @rule(
        key_id=NAMES,
        account=ACCOUNTS,
        region=REGIONS,
        name=ALIASES,
        grant_id=GRANT_IDS,
    )
    def call_with_unknown_names(
        self, key_id: str, account: str, region: str, name: str, grant_id: str
    ) -> None:
        if key_id not in self.model.keys:
            key = KeyRecord(key_id, account, region, "shared:1", 0.0, "", {}, {})
            material = MaterialRecord(key_id, 1, b"", 0.0)
            alias = AliasRecord(account, region, name, key_id, 0.0, 0.0)
            self._refused(StoreNotFoundError, self.store.update_key, key)
            self._refused(StoreNotFoundError, self.store.add_material, material)
            self._refused(StoreNotFoundError, self.store.put_alias, alias)
            self._refused(StoreNotFoundError, self.store.delete_key, key_id)
            missing = replace(key, partition="∅")
            self._refused(StoreNotFoundError, self.store.create_key, missing, None)
            if grant_id not in self.model.grants:
                grant = GrantRecord(grant_id, key_id, account, 0.0, {})
                self._refused(StoreNotFoundError, self.store.put_grant, grant)
        if (account, region, name) not in self.model.aliases:
            self._refused(
                StoreNotFoundError, self.store.delete_alias, account, region, name
            )
        if grant_id not in self.model.grants:
            self._refused(StoreNotFoundError, self.store.delete_grant, grant_id)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SQLiteStore(self.path)

    @invariant()
    def holds_what_the_model_holds(self) -> None:
        assert self.store.load() == self.model.snapshot()


StoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_the_model = StoreMachine.TestCase
