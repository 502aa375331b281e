"""``keyplane backup`` and ``keyplane restore`` against real servers: a backup taken
while a server takes writes restores into a fresh data directory, and everything made
before it decrypts there, under the original root key and no other."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ServerProcess

ADMIN_ARN = "arn:aws:iam::111122223333:user/admin"
# How the server refuses a store under another root key.
REFUSED = r"cannot start: .*written under another root key"


def keyplane(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m keyplane ...`` with no keyplane settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "keyplane", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def encodings(secret: bytes) -> list[bytes]:
    """``secret`` as it could sit in a file: raw, hex, and base64 (standard and URL
    alphabet) at each of the three alignments it can have inside a longer base64
    text, keeping only the characters that depend on nothing but ``secret``."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for offset in range(3):
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(secret)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(bytes(offset) + secret)[first:last])
    return forms


@dataclass
class Source:
    """A store populated through a running server and backed up while it took
    writes; the server is stopped by the time the tests see it."""

    data_dir: Path
    backup: Path
    backup_out: subprocess.CompletedProcess
    root_key: bytes
    keys: dict[str, str]
    alias: str
    grant: dict[str, Any]
    # (key id, ciphertext, encryption context, plaintext), all made before the backup.
    sealed: list[tuple[str, bytes, dict[str, str], bytes]]
    # (ciphertext, plaintext) of data keys made before the backup.
    data_keys: list[tuple[bytes, bytes]]
    # Keys the concurrent writer created, each with one ciphertext and its plaintext.
    written: dict[str, tuple[bytes, bytes]]
    writes_during_backup: int
    made_after_backup: str
    secrets: list[bytes] = field(default_factory=list)


class Writer(threading.Thread):
    """Creates keys and encrypts under them until stopped, as a busy client would."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.kms = server.client()
        self.stop_event = threading.Event()
        self.written: dict[str, tuple[bytes, bytes]] = {}
        self.error: BaseException | None = None
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                key_id = self.kms.create_key(Description="written during backup")[
                    "KeyMetadata"
                ]["KeyId"]
                plaintext = os.urandom(32)
                blob = self.kms.encrypt(KeyId=key_id, Plaintext=plaintext)
                with self.progress:
                    self.written[key_id] = (blob["CiphertextBlob"], plaintext)
                    self.progress.notify_all()
                self.stop_event.wait(0.005)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(
                lambda: len(self.written) >= count or self.error is not None, 60
            )
        assert self.error is None, self.error


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    base = tmp_path_factory.mktemp("backup")
    server = ServerProcess(base / "data")
    server.start()
    try:
        kms = server.client()
        keys = {
            name: kms.create_key(Description=name)["KeyMetadata"]["KeyId"]
            for name in ("aliased", "rotated", "granted", "disabled")
        }
        alias = f"alias/backup-{uuid.uuid4().hex[:8]}"
        kms.create_alias(AliasName=alias, TargetKeyId=keys["aliased"])
        sealed = []

        def seal(key: str, context: dict[str, str]) -> None:
            plaintext = os.urandom(32)
            blob = kms.encrypt(
                KeyId=key, Plaintext=plaintext, EncryptionContext=context
            )
            sealed.append((key, blob["CiphertextBlob"], context, plaintext))

        for name, key in keys.items():
            seal(key, {"purpose": name})
        seal(alias, {})
        # A ciphertext of the first material version, then one of the second.
        kms.rotate_key_on_demand(KeyId=keys["rotated"])
        seal(keys["rotated"], {"after": "rotation"})
        data_keys = []
        for key in (keys["aliased"], keys["rotated"]):
            made = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
            data_keys.append((made["CiphertextBlob"], made["Plaintext"]))
        grant = kms.create_grant(
            KeyId=keys["granted"],
            GranteePrincipal=ADMIN_ARN,
            Operations=["Encrypt", "Decrypt"],
            Constraints={"EncryptionContextSubset": {"purpose": "granted"}},
        )
        kms.disable_key(KeyId=keys["disabled"])

        writer = Writer(server)
        writer.start()
        try:
            writer.wait_for(3)
            before = len(writer.written)
            backup = base / "backups" / "keyplane-backup.db"
            backup_out = keyplane("backup", backup, "--data-dir", server.data_dir)
            during = len(writer.written) - before
            writer.wait_for(len(writer.written) + 3)
        finally:
            writer.stop_event.set()
            writer.join(30)
        assert writer.error is None, writer.error
        made_after_backup = kms.create_key(Description="after the backup")[
            "KeyMetadata"
        ]["KeyId"]
    finally:
        server.stop()
    root_key = base64.b64decode((server.data_dir / "root.key").read_text())
    secrets = [p for _, _, _, p in sealed] + [p for _, p in data_keys]
    secrets += [p for _, p in writer.written.values()] + [root_key]
    return Source(
        data_dir=server.data_dir,
        backup=backup,
        backup_out=backup_out,
        root_key=root_key,
        keys=keys,
        alias=alias,
        grant=grant,
        sealed=sealed,
        data_keys=data_keys,
        written=dict(writer.written),
        writes_during_backup=during,
        made_after_backup=made_after_backup,
        secrets=secrets,
    )


def restore_into(source: Source, data_dir: Path) -> subprocess.CompletedProcess:
    out = keyplane("restore", source.backup, "--data-dir", data_dir)
    assert out.returncode == 0, out.stderr
    return out


def put_root_key(data_dir: Path, key: bytes) -> None:
    path = data_dir / "root.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(base64.b64encode(key).decode() + "\n")


def listed_keys(kms: Any) -> set[str]:
    pages = kms.get_paginator("list_keys").paginate()
    return {k["KeyId"] for page in pages for k in page["Keys"]}


def test_backup_taken_while_serving_writes_reports_what_it_wrote(source):
    out = source.backup_out
    assert out.returncode == 0, out.stderr
    assert source.writes_during_backup > 0  # the server kept taking writes meanwhile
    assert f"to {source.backup} (" in out.stdout
    assert f"({source.backup.stat().st_size} bytes, integrity check passed)" in (
        out.stdout
    )
    assert "does NOT contain the root key" in out.stdout
    assert "root.key" in out.stdout
    assert mode(source.backup) == 0o600
    # Only the backup is left: no SQLite side files next to it or in the data dir.
    assert sorted(p.name for p in source.backup.parent.iterdir()) == [
        source.backup.name
    ]
    assert not (source.data_dir / "keyplane.db-journal").exists()


def test_restore_brings_back_everything_made_before_the_backup(source, tmp_path):
    data_dir = tmp_path / "restored" / "data"
    out = restore_into(source, data_dir)
    assert "no root key was restored" in out.stdout
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "keyplane.db") == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["keyplane.db"]
    put_root_key(data_dir, source.root_key)

    server = ServerProcess(data_dir)
    server.start()
    try:
        kms = server.client()
        disabled = kms.describe_key(KeyId=source.keys["disabled"])["KeyMetadata"]
        assert disabled["KeyState"] == "Disabled"
        kms.enable_key(KeyId=source.keys["disabled"])
        for key, blob, context, plaintext in source.sealed:
            out = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
            assert out["Plaintext"] == plaintext, key
        for blob, plaintext in source.data_keys:
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
        aliased = kms.describe_key(KeyId=source.alias)["KeyMetadata"]["KeyId"]
        assert aliased == source.keys["aliased"]
        (grant,) = kms.list_grants(KeyId=source.keys["granted"])["Grants"]
        assert grant["GrantId"] == source.grant["GrantId"]
        assert grant["Constraints"] == {
            "EncryptionContextSubset": {"purpose": "granted"}
        }
        kms.encrypt(
            KeyId=source.keys["granted"],
            Plaintext=b"x",
            EncryptionContext={"purpose": "granted"},
            GrantTokens=[source.grant["GrantToken"]],
        )

        # The snapshot is one consistent state: every key made before the backup,
        # some of those written during it, none made after it, and exactly as many
        # keys as the backup reported.
        restored = listed_keys(kms)
        assert set(source.keys.values()) <= restored
        assert source.made_after_backup not in restored
        assert restored - set(source.keys.values()) <= set(source.written)
        assert f"  {len(restored)} keys " in source.backup_out.stdout
        for key in restored & set(source.written):
            blob, plaintext = source.written[key]
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
        # The restored store takes writes.
        kms.create_key(Description="after the restore")
    finally:
        server.stop()


def test_restored_store_refuses_any_other_root_key(source, tmp_path):
    data_dir = tmp_path / "data"
    restore_into(source, data_dir)
    before = digest(data_dir / "keyplane.db")

    # With no root key the server makes a new one, and then refuses the store.
    server = ServerProcess(data_dir)
    with pytest.raises(RuntimeError, match=REFUSED):
        server.start()
    assert (data_dir / "root.key").exists()

    (data_dir / "root.key").unlink()
    put_root_key(data_dir, os.urandom(32))
    with pytest.raises(RuntimeError, match=REFUSED):
        server.start()
    assert digest(data_dir / "keyplane.db") == before

    (data_dir / "root.key").unlink()
    put_root_key(data_dir, source.root_key)
    server.start()
    try:
        _, blob, context, plaintext = source.sealed[0]
        out = server.client().decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert out["Plaintext"] == plaintext
    finally:
        server.stop()


def test_backup_holds_no_plaintext_data_key_or_root_key(source):
    raw = source.backup.read_bytes()
    printed = (source.backup_out.stdout + source.backup_out.stderr).encode()
    assert len(source.secrets) > 10
    for secret in source.secrets:
        for form in encodings(secret):
            assert form not in raw
            assert form not in printed


def test_backup_refuses_an_existing_path(source, tmp_path):
    before = digest(source.backup)
    out = keyplane("backup", source.backup, "--data-dir", source.data_dir)
    assert out.returncode == 2
    assert out.stderr.startswith("keyplane: ")
    assert "exists" in out.stderr
    assert digest(source.backup) == before

    other = tmp_path / "not-a-backup"
    other.write_text("keep me")
    out = keyplane("backup", other, "--data-dir", source.data_dir)
    assert out.returncode == 2
    assert other.read_text() == "keep me"


def test_restore_refuses_a_data_dir_that_has_a_store(source, tmp_path):
    database = source.data_dir / "keyplane.db"
    before = digest(database)
    out = keyplane("restore", source.backup, "--data-dir", source.data_dir)
    assert out.returncode == 2
    assert out.stderr.startswith("keyplane: ")
    assert "already has a store" in out.stderr
    assert digest(database) == before

    # A write-ahead log left behind would be taken for the restored store's own.
    leftover = tmp_path / "leftover"
    leftover.mkdir()
    (leftover / "keyplane.db-wal").write_bytes(b"stale")
    out = keyplane("restore", source.backup, "--data-dir", leftover)
    assert out.returncode == 2
    assert not (leftover / "keyplane.db").exists()


def test_restore_refuses_a_damaged_backup_and_leaves_nothing(source, tmp_path):
    truncated = tmp_path / "truncated.db"
    data = source.backup.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(len(data)))
    # A healthy SQLite database that is not a keyplane store is no backup either.
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()
    for damaged in (truncated, garbage, foreign):
        data_dir = tmp_path / f"from-{damaged.stem}"
        out = keyplane("restore", damaged, "--data-dir", data_dir)
        assert out.returncode == 1, out.stdout
        assert out.stderr.startswith("keyplane: restore failed: ")
        assert str(damaged) in out.stderr
        assert not data_dir.exists()

    # An existing data directory is left as it was found.
    existing = tmp_path / "existing"
    existing.mkdir()
    out = keyplane("restore", truncated, "--data-dir", existing)
    assert out.returncode == 1
    assert list(existing.iterdir()) == []


def test_restore_refuses_a_live_store(tmp_path):
    live = tmp_path / "live.db"
    live.write_bytes(b"")
    (tmp_path / "live.db-wal").write_bytes(b"frames")
    out = keyplane("restore", live, "--data-dir", tmp_path / "data")
    assert out.returncode == 1
    assert "live store" in out.stderr
    assert not (tmp_path / "data").exists()


def test_missing_store_or_backup_fails_and_creates_nothing(tmp_path):
    out = keyplane("backup", tmp_path / "b.db", "--data-dir", tmp_path / "none")
    assert out.returncode == 1
    assert out.stderr.startswith("keyplane: backup failed: ")
    assert not (tmp_path / "b.db").exists()
    assert not (tmp_path / "none").exists()

    out = keyplane("restore", tmp_path / "b.db", "--data-dir", tmp_path / "data")
    assert out.returncode == 1
    assert "no backup file" in out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("version", [0, 1], ids=["empty", "older-schema"])
def test_backup_leaves_a_store_it_cannot_back_up_unchanged(tmp_path, version):
    # Opening a store of an older schema would upgrade it; backup must change
    # nothing, so it refuses instead (and an empty file is not a store yet).
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "keyplane.db"
    with closing(sqlite3.connect(database)) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    before = digest(database)
    out = keyplane("backup", tmp_path / "b.db", "--data-dir", data_dir)
    assert out.returncode == 1
    assert out.stderr.startswith("keyplane: backup failed: ")
    assert digest(database) == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["keyplane.db"]
    assert not (tmp_path / "b.db").exists()


def test_data_dir_comes_from_the_configuration(source, tmp_path):
    copy = tmp_path / "copy.db"
    config = tmp_path / "keyplane.toml"
    config.write_text(f'[store]\ndata_dir = "{source.data_dir}"\n')
    out = keyplane("backup", copy, "--config", config)
    assert out.returncode == 0, out.stderr

    restored = tmp_path / "restored"
    config.write_text(f'[store]\ndata_dir = "{restored}"\n')
    out = keyplane("restore", copy, "--config", config)
    assert out.returncode == 0, out.stderr
    assert (restored / "keyplane.db").exists()

    # Without either, the data directory is ./.keyplane.
    out = keyplane("restore", copy, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert mode(tmp_path / ".keyplane" / "keyplane.db") == 0o600


@pytest.mark.parametrize(
    "args",
    [
        ("backup",),
        ("restore",),
        ("backup", "x.db", "--config", "/nonexistent/keyplane.toml"),
    ],
    ids=["backup-without-path", "restore-without-path", "unreadable-config"],
)
def test_usage_errors_exit_2(args, tmp_path):
    out = keyplane(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert not (tmp_path / "x.db").exists()
