"""Storage of emulated CloudHSM clusters and custom key stores (schema version 3): a
cluster comes with its partition in one transaction, replacements cannot move what
never changes, key store names are unique per account and Region, and a version 2
file gains the tables and keeps every record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keyplane.errors import (
    StoreConflictError,
    StoreNotFoundError,
    ValidationError,
)
from keyplane.storage import (
    SCHEMA_VERSION,
    ClusterRecord,
    CustomKeyStoreRecord,
    Snapshot,
    SQLiteStore,
    _sqlite,
)

from .factories import ACCOUNT, REGION, key, material, partition
from .factories import raw_connection as raw

DEDICATED = "dedicated:cluster-abcdefghijk"


def cluster(cluster_id: str = "cluster-abcdefghijk", **changes: Any) -> ClusterRecord:
    fields: dict[str, Any] = {
        "cluster_id": cluster_id,
        "account": ACCOUNT,
        "partition": DEDICATED,
        "created_at": 1700000000.5,
        "data": {"hsm_count": 2, "users": {"kmsuser": {"role": "CU"}}},
    }
    fields.update(changes)
    return ClusterRecord(**fields)


def key_store(store_id: str = "cks-1234567890abcdef0", **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "store_id": store_id,
        "account": ACCOUNT,
        "region": REGION,
        "name": "store",
        "cluster_id": "cluster-abcdefghijk",
        "created_at": 1700000001.5,
        "data": {"connection_state": "DISCONNECTED", "credential": "ab"},
    }
    fields.update(changes)
    return CustomKeyStoreRecord(**fields)


@pytest.fixture
def with_cluster(store: SQLiteStore) -> SQLiteStore:
    store.put_cluster(cluster(), partition(DEDICATED, "dedicated"))
    return store


def test_a_cluster_and_its_partition_are_stored_together(store):
    store.put_cluster(cluster(), partition(DEDICATED, "dedicated"))
    snapshot = store.load()
    assert snapshot.clusters == [cluster()]
    assert [p.name for p in snapshot.partitions] == [DEDICATED, partition().name]
    # The same partition again fails the whole transaction: no second cluster.
    with pytest.raises(StoreConflictError):
        store.put_cluster(
            cluster("cluster-bcdefghijkl"), partition(DEDICATED, "dedicated")
        )
    assert store.load().clusters == [cluster()]


def test_a_cluster_needs_its_partition(store):
    with pytest.raises(StoreNotFoundError):
        store.put_cluster(cluster(partition="dedicated:nowhere"))
    assert store.load().clusters == []


def test_a_cluster_is_replaced_but_never_moved(with_cluster):
    changed = cluster(data={"hsm_count": 0})
    with_cluster.put_cluster(changed)
    assert with_cluster.load().clusters == [changed]
    for moved in (
        cluster(account="444455556666"),
        cluster(partition=partition().name),
        cluster(created_at=5.0),
    ):
        with pytest.raises(ValidationError):
            with_cluster.put_cluster(moved)
    assert with_cluster.load().clusters == [changed]


def test_key_stores_are_unique_by_name_in_an_account_and_region(with_cluster):
    first = key_store()
    with_cluster.put_custom_key_store(first)
    with pytest.raises(StoreConflictError):
        with_cluster.put_custom_key_store(key_store("cks-00000000000000001"))
    # Another account or region may use the name.
    other = key_store("cks-00000000000000002", account="444455556666")
    elsewhere = key_store("cks-00000000000000003", region="eu-west-1")
    with_cluster.put_custom_key_store(other)
    with_cluster.put_custom_key_store(elsewhere)
    assert with_cluster.load().custom_key_stores == [other, elsewhere, first]


def test_a_key_store_is_updated_renamed_and_deleted(with_cluster):
    with_cluster.put_custom_key_store(key_store())
    renamed = key_store(name="renamed", data={"connection_state": "CONNECTED"})
    with_cluster.put_custom_key_store(renamed)
    assert with_cluster.load().custom_key_stores == [renamed]
    with_cluster.put_custom_key_store(key_store("cks-00000000000000001"))
    # Renaming onto another store's name is a conflict, and changes nothing.
    with pytest.raises(StoreConflictError):
        with_cluster.put_custom_key_store(
            key_store("cks-00000000000000001", name="renamed")
        )
    with pytest.raises(ValidationError):
        with_cluster.put_custom_key_store(key_store(account="444455556666"))
    with pytest.raises(StoreNotFoundError):
        with_cluster.put_custom_key_store(
            key_store(name="renamed", cluster_id="cluster-nowherexxxxx")
        )
    with_cluster.delete_custom_key_store("cks-1234567890abcdef0")
    with pytest.raises(StoreNotFoundError):
        with_cluster.delete_custom_key_store("cks-1234567890abcdef0")
    assert [s.store_id for s in with_cluster.load().custom_key_stores] == [
        "cks-00000000000000001"
    ]


def test_a_key_store_needs_its_cluster(store):
    with pytest.raises(StoreNotFoundError):
        store.put_custom_key_store(key_store())


def test_keys_in_a_clusters_partition_pass_the_integrity_check(with_cluster):
    k = key("k", partition=DEDICATED)
    with_cluster.create_key(k, material("k"))
    with_cluster.put_custom_key_store(key_store())
    assert with_cluster.integrity_check() == []
    assert with_cluster.load().keys == [k]


def test_the_integrity_check_reads_cluster_and_key_store_data(with_cluster, db_path):
    with_cluster.put_custom_key_store(key_store())
    with raw(db_path) as conn:
        conn.execute("UPDATE clusters SET data = 'not json'")
        conn.execute("UPDATE custom_key_stores SET data = '[]'")
    problems = with_cluster.integrity_check()
    assert any("cluster 'cluster-abcdefghijk'" in p for p in problems), problems
    assert any("custom key store 'cks-" in p for p in problems), problems


def test_a_version_2_database_gains_the_tables_and_keeps_every_record(db_path):
    db_path.parent.mkdir(mode=0o700)
    with raw(db_path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for steps in _sqlite._MIGRATIONS[:2]:
            for statement in steps:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(_sqlite._INSERT_PARTITION, _sqlite._partition_row(partition()))
        conn.execute(_sqlite._INSERT_KEY, _sqlite._key_row(key("k")))
        conn.execute(_sqlite._INSERT_MATERIAL, _sqlite._material_row(material("k")))
    assert SCHEMA_VERSION == 3
    with SQLiteStore(db_path) as store:
        assert store.load() == Snapshot([partition()], [key("k")], [material("k")], [])
        store.put_cluster(cluster(), partition(DEDICATED, "dedicated"))
        store.put_custom_key_store(key_store())
    with SQLiteStore(db_path) as store:
        snapshot = store.load()
        assert snapshot.clusters == [cluster()]
        assert snapshot.custom_key_stores == [key_store()]
        assert store.integrity_check() == []


def test_records_are_checked_before_they_are_written(with_cluster):
    with pytest.raises(ValidationError):
        with_cluster.put_cluster(cluster(data={"x": float("nan")}))
    with pytest.raises(ValidationError):
        with_cluster.put_custom_key_store(key_store(name=3))
    with pytest.raises(ValidationError):
        with_cluster.put_custom_key_store(key_store(data=["not", "a", "mapping"]))
    with pytest.raises(ValidationError):
        with_cluster.delete_custom_key_store(5)  # type: ignore[arg-type]


def test_backup_keeps_clusters_and_key_stores(with_cluster, tmp_path: Path):
    with_cluster.put_custom_key_store(key_store())
    with_cluster.backup(tmp_path / "copy.db")
    with SQLiteStore(tmp_path / "copy.db") as copy:
        assert copy.load() == with_cluster.load()
