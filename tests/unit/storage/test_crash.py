"""Crash safety: a writer killed with SIGKILL at an arbitrary moment loses nothing it
reported as committed and leaves no half-written state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from keyplane.storage import SQLiteStore

# The writer reports each change on stdout only after the store call returned, that
# is after COMMIT; whatever it printed must be in the database.
WRITER = textwrap.dedent(
    """
    import sys, uuid
    from pathlib import Path
    from keyplane.errors import StoreConflictError
    from keyplane.storage import (
        AliasRecord, GrantRecord, KeyRecord, MaterialRecord, PartitionRecord,
        SQLiteStore,
    )

    store = SQLiteStore(Path(sys.argv[1]))
    try:
        store.put_partition(PartitionRecord("shared:1", "shared", b"wk", 1.0))
    except StoreConflictError:
        pass
    print("ready", flush=True)
    while True:
        key_id = str(uuid.uuid4())
        meta = {"description": "x" * 2000, "n": list(range(50))}
        key = KeyRecord(key_id, "111122223333", "us-east-1", "shared:1", 1.0,
                        "Enabled", meta, {"t": "v"})
        store.create_key(key, MaterialRecord(key_id, 1, b"m" * 600, 1.0))
        print("key", key_id, flush=True)
        store.add_material(MaterialRecord(key_id, 2, b"n" * 600, 2.0))
        print("material", key_id, flush=True)
        store.put_alias(AliasRecord("111122223333", "us-east-1", "alias/last",
                                    key_id, 1.0, 1.0))
        print("alias", key_id, flush=True)
        grant_id = "g-" + key_id
        store.put_grant(GrantRecord(grant_id, key_id, "111122223333", 1.0,
                                    {"operations": ["Decrypt"] * 100}))
        print("grant", grant_id, flush=True)
    """
)


def _kill_after(db: Path, changes: int) -> list[tuple[str, str]]:
    """Run the writer, SIGKILL it once it reported ``changes`` changes, and return
    every change it reported, in order, as (kind, key or grant id)."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        while len(lines) < changes:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        # Lines still in the pipe were printed after a commit, so they count too.
        lines += proc.stdout.read().splitlines(keepends=True)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    # A line cut short by the kill reports nothing.
    return [
        (kind, key_id)
        for kind, key_id in (line.split() for line in lines if line.endswith("\n"))
    ]


def test_sigkill_loses_nothing_committed(tmp_path):
    db = tmp_path / "data" / "keyplane.db"
    keys: set[str] = set()
    versions: set[tuple[str, int]] = set()
    grants: set[str] = set()
    # Different kill points, on the same database each time: every run starts from
    # what the previous crash left.
    for changes in (40, 97, 151):
        reported = _kill_after(db, changes)
        for kind, key_id in reported:
            if kind == "key":
                keys.add(key_id)
                versions.add((key_id, 1))
            elif kind == "material":
                versions.add((key_id, 2))
            elif kind == "grant":
                grants.add(key_id)

        with SQLiteStore(db) as store:
            assert store.integrity_check() == []
            snap = store.load()

        stored_keys = {k.key_id for k in snap.keys}
        stored_versions = {(m.key_id, m.version) for m in snap.materials}
        stored_grants = {g.grant_id for g in snap.grants}
        assert keys <= stored_keys
        assert versions <= stored_versions
        assert grants <= stored_grants
        # At most the one change in flight at the kill is there unreported, and
        # whole: a key never lacks its first material.
        assert len(stored_keys - keys) <= 1
        assert len(stored_versions - versions) <= 1
        assert len(stored_grants - grants) <= 1
        assert {g.key_id for g in snap.grants} <= stored_keys
        assert {(k, 1) for k in stored_keys} <= stored_versions
        [alias] = snap.aliases
        last_alias = [key_id for kind, key_id in reported if kind == "alias"][-1]
        assert alias.key_id in {last_alias, reported[-1][1]}
        keys, versions, grants = stored_keys, stored_versions, stored_grants
