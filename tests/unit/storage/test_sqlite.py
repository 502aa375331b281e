"""The SQLite store: round trips, transaction boundaries, errors, integrity checks,
backups, schema migrations and the files it leaves on disk."""

from __future__ import annotations

import math
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from keyplane.errors import (
    StoreConflictError,
    StoreError,
    StoreNotFoundError,
    ValidationError,
)
from keyplane.storage import (
    SCHEMA_VERSION,
    MaterialRecord,
    PartitionRecord,
    Snapshot,
    SQLiteStore,
    Store,
    _sqlite,
)

from .factories import (
    ACCOUNT,
    REGION,
    SHARED,
    alias,
    grant,
    key,
    material,
    partition,
)
from .factories import raw_connection as raw


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _reopen(store: SQLiteStore) -> Snapshot:
    store.close()
    with SQLiteStore(store.path) as again:
        return again.load()


# --- round trips -------------------------------------------------------------------


def test_every_record_type_survives_close_and_reopen(store):
    dedicated = partition("dedicated:cks-1234", "dedicated")
    store.put_partition(dedicated)
    k1 = key("00000000-0000-4000-8000-000000000001")
    k2 = key(
        "00000000-0000-4000-8000-000000000002",
        partition=dedicated.name,
        state="PendingDeletion",
        metadata={"description": "ünïcödé ✓", "deletion_date": 1.7e9, "n": [1, None]},
        tags={},
    )
    store.create_key(k1, material(k1.key_id, wrapped=bytes(range(256))))
    store.create_key(k2, material(k2.key_id))
    store.add_material(material(k1.key_id, 2))
    store.put_alias(alias("alias/one", k1.key_id))
    store.put_alias(alias("alias/two", k2.key_id, region="eu-west-1"))
    before = store.load()

    after = _reopen(store)

    assert after == before
    assert after.partitions == [dedicated, partition()]
    assert after.keys == [k1, k2]
    assert [(m.key_id, m.version) for m in after.materials] == [
        (k1.key_id, 1),
        (k1.key_id, 2),
        (k2.key_id, 1),
    ]
    assert after.materials[0].wrapped == bytes(range(256))
    assert [(a.region, a.name) for a in after.aliases] == [
        ("eu-west-1", "alias/two"),
        (REGION, "alias/one"),
    ]


def test_load_orders_records_whatever_the_insertion_order(store):
    ids = ["c", "a", "b"]
    for key_id in ids:
        store.create_key(key(key_id), material(key_id))
    for version in (3, 2):
        store.add_material(material("a", version))
    for name in ("alias/z", "alias/m"):
        store.put_alias(alias(name, "a"))
    store.put_alias(alias("alias/a", "a", account="999999999999"))

    snap = store.load()

    assert [k.key_id for k in snap.keys] == ["a", "b", "c"]
    assert [(m.key_id, m.version) for m in snap.materials] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("c", 1),
    ]
    assert [(a.account, a.name) for a in snap.aliases] == [
        (ACCOUNT, "alias/m"),
        (ACCOUNT, "alias/z"),
        ("999999999999", "alias/a"),
    ]


def test_metadata_loads_back_as_plain_json(store):
    k = key(metadata={"tuple": (1, 2), "nested": {"z": 1, "a": [True, -0.5, "x"]}})

    store.create_key(k, material(k.key_id))

    [loaded] = store.load().keys
    assert loaded.metadata == {
        "tuple": [1, 2],
        "nested": {"z": 1, "a": [True, -0.5, "x"]},
    }
    assert list(loaded.metadata["nested"]) == ["a", "z"]  # sorted on the way in


def test_metadata_and_tags_are_stored_as_sorted_json(store):
    k = key(metadata={"b": 1, "a": "é"}, tags={"y": "2", "x": "1"})
    store.create_key(k, material(k.key_id))

    with raw(store.path) as conn:
        row = conn.execute("SELECT metadata, tags FROM keys").fetchone()

    assert row == ('{"a":"é","b":1}', '{"x":"1","y":"2"}')


def test_sqlite_store_is_a_store(store):
    assert isinstance(store, Store)


# --- keys ------------------------------------------------------------------------


def test_create_key_without_material(store):
    k = key()
    store.create_key(k, None)
    assert store.load().keys == [k]
    assert store.load().materials == []


def test_create_key_is_one_transaction(store):
    # A stray material row (planted with foreign keys off) makes the second insert of
    # create_key fail after the first succeeded: the key must go with it.
    k = key()
    with raw(store.path) as conn:
        conn.execute(
            "INSERT INTO materials VALUES (?, 1, x'00', 1.0)",
            (k.key_id,),
        )

    with pytest.raises(StoreConflictError, match="already has material version 1"):
        store.create_key(k, material(k.key_id))

    assert store.load().keys == []
    store.create_key(key(), None)  # the store is usable afterwards


def test_create_key_twice_conflicts_and_changes_nothing(store):
    k = key()
    store.create_key(k, material(k.key_id))
    before = store.load()

    with pytest.raises(StoreConflictError, match="already exists"):
        store.create_key(replace(k, state="Disabled"), material(k.key_id, 7))

    assert store.load() == before


def test_create_key_in_a_missing_partition(store):
    with pytest.raises(StoreNotFoundError, match="partition 'nowhere'"):
        store.create_key(key(partition="nowhere"), None)
    assert store.load().keys == []


def test_create_key_with_material_of_another_key(store):
    with pytest.raises(ValidationError):
        store.create_key(key("a"), material("b"))
    assert store.load().keys == []


def test_update_key_replaces_state_metadata_and_tags(store):
    k = key()
    store.create_key(k, material(k.key_id))
    updated = replace(k, state="Disabled", metadata={"only": "this"}, tags={"new": ""})

    store.update_key(updated)

    assert _reopen(store).keys == [updated]


def test_update_key_of_an_unknown_key(store):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        store.update_key(key())


@pytest.mark.parametrize(
    "change",
    [
        {"account": "999999999999"},
        {"region": "eu-west-1"},
        {"partition": "dedicated:cks-1"},
        {"created_at": 5.0},
    ],
)
def test_update_key_refuses_to_change_an_immutable_field(store, change):
    k = key()
    store.create_key(k, material(k.key_id))

    with pytest.raises(ValidationError, match="cannot change"):
        store.update_key(replace(k, state="Disabled", **change))

    assert store.load().keys == [k]


def test_add_material(store):
    k = key()
    store.create_key(k, material(k.key_id))

    store.add_material(material(k.key_id, 2))

    assert [m.version for m in store.load().materials] == [1, 2]


def test_add_material_with_its_key_is_one_transaction(store):
    k = key()
    store.create_key(k, material(k.key_id))
    rotated = replace(k, metadata={**k.metadata, "rotations": [{"version": 2}]})
    store.add_material(material(k.key_id, 2), rotated)
    snapshot = store.load()
    assert [m.version for m in snapshot.materials] == [1, 2]
    assert snapshot.keys == [rotated]
    # A key record the store refuses takes the material down with it...
    with pytest.raises(ValidationError, match="cannot change"):
        store.add_material(material(k.key_id, 3), replace(rotated, account="1" * 12))
    # ...as does one of another key, and a material the store refuses keeps the key.
    with pytest.raises(ValidationError, match="given with key"):
        store.add_material(material(k.key_id, 3), key("other"))
    with pytest.raises(StoreConflictError):
        store.add_material(material(k.key_id, 2), replace(rotated, state="Disabled"))
    assert store.load() == snapshot


def test_add_material_to_an_unknown_key(store):
    with pytest.raises(StoreNotFoundError, match="key 'ghost' does not exist"):
        store.add_material(material("ghost"))


def test_add_material_twice(store):
    k = key()
    store.create_key(k, material(k.key_id))
    with pytest.raises(StoreConflictError, match="version 1"):
        store.add_material(material(k.key_id, 1, wrapped=b"other"))
    assert store.load().materials == [material(k.key_id)]


def test_delete_key_takes_its_material_aliases_and_grants_and_nothing_else(store):
    doomed, kept = key("doomed"), key("kept")
    for k in (doomed, kept):
        store.create_key(k, material(k.key_id))
        store.add_material(material(k.key_id, 2))
    store.put_alias(alias("alias/doomed-1", "doomed"))
    store.put_alias(alias("alias/doomed-2", "doomed", region="eu-west-1"))
    store.put_alias(alias("alias/kept", "kept"))
    store.put_grant(grant("g-doomed-1", "doomed"))
    store.put_grant(grant("g-doomed-2", "doomed"))
    store.put_grant(grant("g-kept", "kept"))

    store.delete_key("doomed")

    snap = _reopen(store)
    assert snap.keys == [kept]
    assert {m.key_id for m in snap.materials} == {"kept"}
    assert [a.name for a in snap.aliases] == ["alias/kept"]
    assert snap.grants == [grant("g-kept", "kept")]
    assert snap.partitions == [partition()]


def test_delete_an_unknown_key(store):
    with pytest.raises(StoreNotFoundError):
        store.delete_key("ghost")


# --- partitions --------------------------------------------------------------------


def test_put_partition_twice(store):
    with pytest.raises(StoreConflictError, match="already exists"):
        store.put_partition(replace(partition(), wrapped_key=b"other"))
    assert store.load().partitions == [partition()]


# --- aliases ---------------------------------------------------------------------


def test_put_alias_replaces_by_account_region_and_name(store):
    for key_id in ("first", "second"):
        store.create_key(key(key_id), material(key_id))
    store.put_alias(alias("alias/a", "first"))
    moved = alias("alias/a", "second", created_at=7.0, updated_at=9.0)

    store.put_alias(moved)

    assert _reopen(store).aliases == [moved]


def test_same_alias_name_in_another_account_or_region_is_another_alias(store):
    store.create_key(key("k"), material("k"))
    records = [
        alias("alias/a", "k"),
        alias("alias/a", "k", account="999999999999"),
        alias("alias/a", "k", region="eu-west-1"),
    ]
    for record in records:
        store.put_alias(record)
    assert len(store.load().aliases) == 3


def test_put_alias_to_an_unknown_key(store):
    store.create_key(key("k"), material("k"))
    store.put_alias(alias("alias/a", "k"))

    with pytest.raises(StoreNotFoundError, match="key 'ghost'"):
        store.put_alias(alias("alias/a", "ghost"))

    assert [a.key_id for a in store.load().aliases] == ["k"]


def test_delete_alias(store):
    store.create_key(key("k"), material("k"))
    store.put_alias(alias("alias/a", "k"))
    store.put_alias(alias("alias/b", "k"))

    store.delete_alias(ACCOUNT, REGION, "alias/a")

    assert [a.name for a in _reopen(store).aliases] == ["alias/b"]


@pytest.mark.parametrize(
    ("account", "region", "name"),
    [
        (ACCOUNT, REGION, "alias/missing"),
        ("999999999999", REGION, "alias/a"),
        (ACCOUNT, "eu-west-1", "alias/a"),
    ],
)
def test_delete_an_unknown_alias(store, account, region, name):
    store.create_key(key("k"), material("k"))
    store.put_alias(alias("alias/a", "k"))
    with pytest.raises(StoreNotFoundError):
        store.delete_alias(account, region, name)
    assert len(store.load().aliases) == 1


# --- grants ----------------------------------------------------------------------


def test_grants_survive_close_and_reopen(store):
    store.create_key(key("k"), material("k"))
    plain = grant("g-1", "k")
    unusual = grant(
        "g-ü",
        "k",
        account="999999999999",
        created_at=-0.5,
        data={"name": "ünïcödé ✓", "operations": ["Sign"], "empty": {}, "n": None},
    )

    store.put_grant(plain)
    store.put_grant(unusual)

    # Ordered by creation time within the key, not by insertion or grant id.
    assert _reopen(store).grants == [unusual, plain]


def test_grant_data_loads_back_as_plain_json(store):
    store.create_key(key("k"), None)
    store.put_grant(
        grant("g", "k", data=MappingProxyType({"ops": ("Decrypt",), "b": 1, "a": {}}))
    )

    [loaded] = store.load().grants

    assert loaded.data == {"a": {}, "b": 1, "ops": ["Decrypt"]}
    assert isinstance(loaded.data, dict)
    with raw(store.path) as conn:
        assert conn.execute("SELECT data FROM grants").fetchone() == (
            '{"a":{},"b":1,"ops":["Decrypt"]}',
        )


def test_load_orders_grants_by_key_creation_time_and_id(store):
    for key_id in ("b", "a"):
        store.create_key(key(key_id), None)
    for grant_id, key_id, created_at in [
        ("g5", "b", 1.0),
        ("g4", "a", 3.0),
        ("g3", "a", 2.0),
        ("g2", "a", 2.0),
        ("g1", "b", 0.0),
    ]:
        store.put_grant(grant(grant_id, key_id, created_at=created_at))

    grants = store.load().grants

    assert [(g.key_id, g.grant_id) for g in grants] == [
        ("a", "g2"),
        ("a", "g3"),
        ("a", "g4"),
        ("b", "g1"),
        ("b", "g5"),
    ]


def test_put_grant_twice_conflicts_and_changes_nothing(store):
    for key_id in ("k", "other"):
        store.create_key(key(key_id), None)
    store.put_grant(grant("g", "k"))

    # The id is unique across keys, not only within one.
    for again in (grant("g", "k", data={}), grant("g", "other")):
        with pytest.raises(StoreConflictError, match="grant 'g' already exists"):
            store.put_grant(again)

    assert store.load().grants == [grant("g", "k")]


def test_put_grant_on_an_unknown_key(store):
    with pytest.raises(StoreNotFoundError, match="key 'ghost' does not exist"):
        store.put_grant(grant("g", "ghost"))
    assert store.load().grants == []


def test_delete_grant(store):
    store.create_key(key("k"), material("k"))
    for grant_id in ("g1", "g2"):
        store.put_grant(grant(grant_id, "k"))

    store.delete_grant("g1")

    snap = _reopen(store)
    assert snap.grants == [grant("g2", "k")]
    assert [k.key_id for k in snap.keys] == ["k"]


def test_delete_an_unknown_grant(store):
    store.create_key(key("k"), None)
    store.put_grant(grant("g", "k"))
    store.delete_grant("g")

    for grant_id in ("g", "never"):
        with pytest.raises(StoreNotFoundError, match=f"grant {grant_id!r}"):
            store.delete_grant(grant_id)


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"key_id": "\ud800"}, id="lone-surrogate"),
        pytest.param({"account": 111122223333}, id="int-account"),
        pytest.param({"created_at": math.nan}, id="nan-time"),
        pytest.param({"created_at": math.inf}, id="inf-time"),
        pytest.param({"created_at": True}, id="bool-time"),
        pytest.param({"metadata": {1: "int key"}}, id="int-metadata-key"),
        pytest.param({"metadata": {"set": {1, 2}}}, id="set-in-metadata"),
        pytest.param({"metadata": {"nan": math.nan}}, id="nan-in-metadata"),
        pytest.param({"metadata": {"bytes": b"x"}}, id="bytes-in-metadata"),
        pytest.param({"metadata": ["not", "a", "mapping"]}, id="list-metadata"),
        pytest.param({"tags": {"k": 1}}, id="int-tag-value"),
        pytest.param({"tags": {2: "v"}}, id="int-tag-key"),
    ],
)
def test_malformed_keys_are_refused_before_anything_is_written(store, change):
    with pytest.raises(ValidationError):
        store.create_key(key(**change), None)
    assert store.load().keys == []


@pytest.mark.parametrize(
    "bad",
    [
        MaterialRecord("k", 0, b"w", 1.0),
        MaterialRecord("k", -1, b"w", 1.0),
        MaterialRecord("k", True, b"w", 1.0),
        MaterialRecord("k", 2**63, b"w", 1.0),
        MaterialRecord("k", 2, bytearray(b"w"), 1.0),  # type: ignore[arg-type]
        MaterialRecord("k", 2, "w", 1.0),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_malformed_material_is_refused(store, bad):
    store.create_key(key("k"), material("k"))
    with pytest.raises(ValidationError):
        store.add_material(bad)
    assert len(store.load().materials) == 1


@pytest.mark.parametrize(
    "bad",
    [
        PartitionRecord("p", "multi", b"w", 1.0),
        PartitionRecord("p", "shared", memoryview(b"w"), 1.0),  # type: ignore[arg-type]
        PartitionRecord(None, "shared", b"w", 1.0),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_malformed_partitions_are_refused(store, bad):
    with pytest.raises(ValidationError):
        store.put_partition(bad)


def test_malformed_alias_key_id_and_grant_id_arguments_are_refused(store):
    with pytest.raises(ValidationError):
        store.put_alias(alias("alias/a", "k", updated_at=math.nan))
    with pytest.raises(ValidationError):
        store.delete_key(7)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.delete_alias(ACCOUNT, REGION, None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.delete_grant(b"g")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"grant_id": ""}, id="empty-id"),
        pytest.param({"grant_id": "g" * 129}, id="long-id"),
        pytest.param({"grant_id": 7}, id="int-id"),
        pytest.param({"grant_id": "\ud800"}, id="lone-surrogate-id"),
        pytest.param({"key_id": None}, id="none-key-id"),
        pytest.param({"account": 111122223333}, id="int-account"),
        pytest.param({"created_at": math.nan}, id="nan-time"),
        pytest.param({"created_at": -math.inf}, id="inf-time"),
        pytest.param({"created_at": False}, id="bool-time"),
        pytest.param({"created_at": "1.0"}, id="text-time"),
        pytest.param({"data": ["not", "a", "mapping"]}, id="list-data"),
        pytest.param({"data": None}, id="none-data"),
        pytest.param({"data": {1: "int key"}}, id="int-data-key"),
        pytest.param({"data": {"ops": {"Decrypt"}}}, id="set-in-data"),
        pytest.param({"data": {"nan": math.nan}}, id="nan-in-data"),
        pytest.param({"data": {"bytes": b"x"}}, id="bytes-in-data"),
    ],
)
def test_malformed_grants_are_refused_before_anything_is_written(store, change):
    store.create_key(key("k"), None)
    with pytest.raises(ValidationError):
        store.put_grant(replace(grant("g", "k"), **change))
    assert store.load().grants == []


def test_grant_ids_of_one_and_of_128_characters_are_accepted(store):
    store.create_key(key("k"), None)
    for grant_id in ("g", "é" * 128):
        store.put_grant(grant(grant_id, "k"))
    assert len(_reopen(store).grants) == 2


def test_error_messages_never_carry_wrapped_bytes(store):
    secret = b"\xde\xad\xbe\xef-wrapped-material-\x00"
    k = key()
    store.create_key(k, material(k.key_id, wrapped=secret))
    with pytest.raises(StoreConflictError) as info:
        store.add_material(material(k.key_id, wrapped=secret))
    text = f"{info.value} {info.value!r} {info.value.__cause__}"
    assert "wrapped-material" not in text
    assert "dead" not in text


# --- failures of SQLite itself -----------------------------------------------------


def test_a_locked_database_is_a_store_error_and_the_store_recovers(store):
    store._conn.execute("PRAGMA busy_timeout = 50")
    with raw(store.path) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as info:
            store.create_key(key(), None)
        assert type(info.value) is StoreError
        other.execute("ROLLBACK")

    k = key()
    store.create_key(k, None)
    assert store.load().keys == [k]


def test_two_stores_on_one_file_see_each_other(store):
    with SQLiteStore(store.path) as other:
        other.create_key(key("from-other"), material("from-other"))
        store.create_key(key("from-store"), material("from-store"))
        assert other.load() == store.load()
        assert len(store.load().keys) == 2


def test_concurrent_writers_from_many_threads(store):
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(15):
                key_id = f"{prefix}-{i:02}"
                store.create_key(key(key_id), material(key_id))
                store.put_alias(alias(f"alias/{prefix}", key_id))
                store.put_grant(grant(f"grant-{key_id}", key_id))
        except BaseException as exc:  # the test thread reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    snap = store.load()
    assert len(snap.keys) == 60
    assert len(snap.materials) == 60
    assert len(snap.grants) == 60
    assert {a.key_id for a in snap.aliases} == {f"t{n}-14" for n in range(4)}
    assert store.integrity_check() == []


def test_closed_store_refuses_every_call(store):
    store.close()
    store.close()  # idempotent
    calls = [
        store.load,
        store.integrity_check,
        lambda: store.put_partition(partition("p2")),
        lambda: store.create_key(key(), None),
        lambda: store.update_key(key()),
        lambda: store.add_material(material("k")),
        lambda: store.delete_key("k"),
        lambda: store.put_alias(alias("alias/a", "k")),
        lambda: store.delete_alias(ACCOUNT, REGION, "alias/a"),
        lambda: store.put_grant(grant("g", "k")),
        lambda: store.delete_grant("g"),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="closed"):
            call()


# --- integrity check -------------------------------------------------------------


def test_integrity_check_of_a_healthy_store(store):
    k = key()
    store.create_key(k, material(k.key_id))
    store.put_alias(alias("alias/a", k.key_id))
    store.put_grant(grant("g", k.key_id))
    assert store.integrity_check() == []


def test_integrity_check_finds_planted_problems(store):
    store.create_key(key("healthy"), material("healthy"))
    with raw(store.path) as conn:
        conn.execute("INSERT INTO materials VALUES ('gone', 3, x'00', 1.0)")
        conn.execute(
            "INSERT INTO aliases VALUES (?, ?, 'alias/stray', 'gone', 1.0, 1.0)",
            (ACCOUNT, REGION),
        )
        conn.execute(
            "INSERT INTO keys VALUES ('homeless', ?, ?, 'no-such-partition', 1.0,"
            " 'Enabled', '{}', '{}')",
            (ACCOUNT, REGION),
        )
        conn.execute("INSERT INTO materials VALUES ('homeless', 1, x'00', 1.0)")
        conn.execute(
            "INSERT INTO keys VALUES ('bare', ?, ?, ?, 1.0, 'Enabled', '{}', '{}')",
            (ACCOUNT, REGION, SHARED),
        )
        conn.execute(
            "INSERT INTO keys VALUES ('garbled', ?, ?, ?, 1.0, 'Enabled', 'not json',"
            " '{}')",
            (ACCOUNT, REGION, SHARED),
        )
        conn.execute("INSERT INTO materials VALUES ('garbled', 1, x'00', 1.0)")
        conn.execute("UPDATE partitions SET tenancy = 'odd'")

    problems = store.integrity_check()

    assert problems == [
        "material version 3 of key 'gone' belongs to no key",
        f"alias 'alias/stray' of account {ACCOUNT} {REGION} points at missing key"
        " 'gone'",
        "key 'homeless' is in missing partition 'no-such-partition'",
        "key 'bare' has no key material",
        f"partition {SHARED!r} has unknown tenancy 'odd'",
        "the metadata of key 'garbled' is not valid JSON",
    ]


def test_integrity_check_finds_planted_grant_problems(store):
    store.create_key(key("k"), material("k"))
    store.put_grant(grant("healthy", "k"))
    with raw(store.path) as conn:
        plant = "INSERT INTO grants VALUES (?, ?, ?, 1.0, ?)"
        conn.execute(plant, ("orphan", "gone", ACCOUNT, "{}"))
        conn.execute(plant, ("garbled", "k", ACCOUNT, "{not json"))
        conn.execute(plant, ("listed", "k", ACCOUNT, "[1, 2]"))
        conn.execute(plant, ("", "k", ACCOUNT, "{}"))
        conn.execute(plant, ("x" * 129, "k", ACCOUNT, "{}"))

    problems = store.integrity_check()

    assert problems == [
        "grant 'orphan' is on missing key 'gone'",
        "grant id '' is 0 characters long, not 1 to 128",
        "the data of grant 'garbled' is not valid JSON",
        "the data of grant 'listed' is not a JSON object",
        f"grant id {'x' * 128!r} is 129 characters long, not 1 to 128",
    ]


def test_integrity_check_reports_what_sqlite_finds(store):
    store.create_key(key("k"), material("k"))
    # Drop an index entry behind SQLite's back: the table and its index disagree.
    with raw(store.path) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_schema SET sql = 'CREATE INDEX keys_by_partition ON keys"
            " (state)' WHERE name = 'keys_by_partition'"
        )
    # The store's connection must read the changed schema afresh.
    store.close()
    with SQLiteStore(store.path) as again:
        problems = again.integrity_check()
    assert problems
    assert all(p.startswith("sqlite integrity_check: ") for p in problems)


def test_load_refuses_a_malformed_record(store):
    with raw(store.path) as conn:
        conn.execute(
            "INSERT INTO keys VALUES ('k', ?, ?, ?, 1.0, 'Enabled', '[1]', '{}')",
            (ACCOUNT, REGION, SHARED),
        )
    with pytest.raises(StoreError, match="metadata of key 'k' is not a JSON object"):
        store.load()


def test_load_refuses_a_malformed_grant(store):
    store.create_key(key("k"), material("k"))
    with raw(store.path) as conn:
        conn.execute("INSERT INTO grants VALUES ('g', 'k', ?, 1.0, 'null')", (ACCOUNT,))
    with pytest.raises(StoreError, match="data of grant 'g' is not a JSON object"):
        store.load()


# --- backup ----------------------------------------------------------------------


def test_backup_loads_to_the_same_snapshot(store, tmp_path):
    for key_id in ("a", "b"):
        store.create_key(key(key_id), material(key_id))
    store.put_alias(alias("alias/a", "a"))
    grants = [grant("g1", "a"), grant("g2", "b", data={"operations": ["Sign"]})]
    for record in grants:
        store.put_grant(record)
    target = tmp_path / "backups" / "one.db"

    store.backup(target)

    assert _mode(target) == 0o600
    assert _mode(target.parent) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["one.db"]
    with SQLiteStore(target) as copy:
        assert copy.load() == store.load()
        assert copy.load().grants == grants
        assert copy.integrity_check() == []
    store.create_key(key("c"), None)  # the original goes on working
    store.delete_grant("g1")
    with SQLiteStore(target) as copy:
        assert copy.load().grants == grants  # the copy does not follow


def test_backup_refuses_an_existing_file(store, tmp_path):
    target = tmp_path / "taken.db"
    target.write_bytes(b"precious")
    with pytest.raises(StoreConflictError):
        store.backup(target)
    assert target.read_bytes() == b"precious"


def test_failed_backup_leaves_no_file(store, tmp_path):
    store.close()
    target = tmp_path / "never.db"
    with pytest.raises(StoreError, match="closed"):
        store.backup(target)
    assert list(tmp_path.glob("never.db*")) == []


# --- files and schema ------------------------------------------------------------


def test_files_are_private(store):
    store.create_key(key(), None)  # a write while open: the -wal and -shm exist
    files = sorted(p.name for p in store.path.parent.iterdir())
    assert files == ["keyplane.db", "keyplane.db-shm", "keyplane.db-wal"]
    for name in files:
        assert _mode(store.path.parent / name) == 0o600, name
    assert _mode(store.path.parent) == 0o700


def test_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        with SQLiteStore(tmp_path / "a" / "b" / "keyplane.db") as store:
            store.put_partition(partition())
            for p in store.path.parent.iterdir():
                assert _mode(p) == 0o600, p
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "b") == 0o700


def test_an_existing_directory_keeps_its_mode(tmp_path):
    tmp_path.chmod(0o755)
    with SQLiteStore(tmp_path / "keyplane.db"):
        pass
    assert _mode(tmp_path) == 0o755


def test_durability_settings(store):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_every_schema_version_has_its_migration():
    assert len(_sqlite._MIGRATIONS) == SCHEMA_VERSION


def _create_at_version(path: Path, version: int) -> None:
    """Create the database that the code of schema ``version`` would have created."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        for steps in _sqlite._MIGRATIONS[:version]:
            for statement in steps:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")


def _tables(path: Path) -> set[str]:
    with raw(path) as conn:
        return {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
            )
        }


def test_a_version_1_database_gains_grants_and_keeps_every_record(db_path):
    # Version 1 is the last schema without grants; its file is built from its own
    # migration steps and filled with rows as the version 1 code wrote them.
    _create_at_version(db_path, 1)
    k, m, a = key("k"), material("k"), alias("alias/a", "k")
    with raw(db_path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(_sqlite._INSERT_PARTITION, _sqlite._partition_row(partition()))
        conn.execute(_sqlite._INSERT_KEY, _sqlite._key_row(k))
        conn.execute(_sqlite._INSERT_MATERIAL, _sqlite._material_row(m))
        conn.execute(_sqlite._UPSERT_ALIAS, _sqlite._alias_row(a))
    assert "grants" not in _tables(db_path)

    with SQLiteStore(db_path) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone() == (
            SCHEMA_VERSION,
        )
        assert store.load() == Snapshot([partition()], [k], [m], [a], [])
        assert store.integrity_check() == []
        store.put_grant(grant("g", "k"))

    with SQLiteStore(db_path) as store:
        assert store.load() == Snapshot([partition()], [k], [m], [a], [grant("g", "k")])
        # The migrated table cascades like one created fresh.
        store.delete_key("k")
        assert store.load() == Snapshot([partition()], [], [], [], [])


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_older_schema_migrates_to_that_of_a_new_database(tmp_path, version):
    def schema(path: Path) -> list[tuple[str, ...]]:
        with raw(path) as conn:
            return sorted(
                conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema")
            )

    old, new = tmp_path / "old" / "keyplane.db", tmp_path / "new" / "keyplane.db"
    _create_at_version(old, version)

    SQLiteStore(old).close()
    SQLiteStore(new).close()

    assert schema(old) == schema(new)


def test_a_failed_migration_changes_nothing(db_path):
    _create_at_version(db_path, 1)
    with raw(db_path) as conn:
        conn.execute(_sqlite._INSERT_PARTITION, _sqlite._partition_row(partition()))
        # Taking the name of the migration's second statement makes it fail after
        # its first one created the grants table.
        conn.execute("CREATE INDEX grants_by_key ON keys (state)")

    with pytest.raises(StoreError, match="could not migrate the schema"):
        SQLiteStore(db_path)

    assert "grants" not in _tables(db_path)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        conn.execute("DROP INDEX grants_by_key")
    with SQLiteStore(db_path) as store:
        assert store.load() == Snapshot([partition()], [], [], [], [])


def test_a_newer_schema_is_refused_untouched(db_path):
    db_path.parent.mkdir()
    with raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE future (x)")

    with pytest.raises(StoreError, match="newer than this keyplane knows"):
        SQLiteStore(db_path)

    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)


def test_a_file_that_is_not_a_database(db_path):
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="could not open"):
        SQLiteStore(db_path)


def test_an_empty_file_becomes_a_store(db_path):
    db_path.parent.mkdir()
    db_path.touch(mode=0o600)
    with SQLiteStore(db_path) as store:
        assert store.load() == Snapshot([], [], [], [], [])
        assert store.load() == Snapshot([], [], [], [])  # grants default to none


def test_reopening_keeps_the_schema_and_data(store):
    k = key()
    store.create_key(k, material(k.key_id))
    for _ in range(2):
        snap = _reopen(store)
    assert snap.keys == [k]


def test_read_only_mappings_round_trip(store):
    # The service may hand in read-only mappings; they compare equal to the dicts
    # that load returns.
    k = key(metadata=MappingProxyType({"a": {"b": 1}}), tags=MappingProxyType({}))
    store.create_key(k, None)
    [loaded] = store.load().keys
    assert loaded == k
    assert isinstance(loaded.metadata, dict)
