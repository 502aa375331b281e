"""``keyplane root-key rotate`` against real servers: the root key changes under a
server that keeps encrypting and decrypting, every ciphertext and data key made before
still decrypts (also after SIGTERM and SIGKILL restarts, and after a SIGKILL in the
middle of a rotation), the old root key no longer opens the store, and no root key
shows up anywhere."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.credentials import Credentials

from keyplane import root_rotation
from keyplane.client import BatchClient, BatchRequestError
from keyplane.errors import ConflictError
from tests.integration.conftest import (
    ACCESS_KEY,
    ACCOUNT,
    SECRET_KEY,
    ServerProcess,
    kms_client,
)

OTHER_ACCOUNT = "444455556666"
OTHER = ("AKIAOTHERACCOUNTEXA1", "other-account-secret")
OPERATOR = ("AKIAOPERATOREXAMPLE2", "operator-secret")


def _user(name: str, key: tuple[str, str], *actions: str) -> str:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
            ],
        }
    )
    return (
        f'[[accounts.principals]]\ntype = "user"\nname = "{name}"\n'
        f'access_keys = [{{ id = "{key[0]}", secret = "{key[1]}" }}]\n'
        f"policies = [{{ name = \"p\", document = '{policy}' }}]\n"
    )


# Two accounts, so two partitions. "admin" may rotate the root key (keyplane:*);
# "operator" may do anything in KMS, which does not include that.
CONFIG = (
    f'[[accounts]]\nid = "{ACCOUNT}"\n'
    + _user("admin", (ACCESS_KEY, SECRET_KEY), "kms:*", "keyplane:*")
    + _user("operator", OPERATOR, "kms:*")
    + f'[[accounts]]\nid = "{OTHER_ACCOUNT}"\n'
    + _user("admin", OTHER, "kms:*")
)
PARTITIONS = 2


@dataclass
class Made:
    """Ciphertexts and data keys made before any rotation, by account."""

    blobs: list[tuple[str, bytes, bytes, dict[str, str]]] = field(default_factory=list)

    def check(self, server: ServerProcess) -> None:
        """Every one of them decrypts, through the server as it is now."""
        clients = {
            ACCOUNT: server.client(),
            OTHER_ACCOUNT: kms_client(server.endpoint, *OTHER),
        }
        for account, blob, plaintext, context in self.blobs:
            opened = clients[account].decrypt(
                CiphertextBlob=blob, EncryptionContext=context
            )
            assert opened["Plaintext"] == plaintext


def rotate(server: ServerProcess, key: tuple[str, str] = (ACCESS_KEY, SECRET_KEY)):
    """``keyplane root-key rotate`` against the running server, signed with ``key``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYPLANE_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=key[0],
        AWS_SECRET_ACCESS_KEY=key[1],
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
    )
    return keyplane("root-key", "rotate", "--endpoint", server.endpoint, env=env)


def rotate_now(server: ServerProcess) -> dict[str, int]:
    """RotateRootKey straight from a client: the CLI's request without its start-up."""
    with BatchClient(
        server.endpoint, credentials=Credentials(ACCESS_KEY, SECRET_KEY)
    ) as client:
        return client._post("RotateRootKey", {})


def keyplane(*args: str, env: dict[str, str] | None = None):
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "keyplane", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def root_key(server: ServerProcess) -> bytes:
    return base64.b64decode((server.data_dir / "root.key").read_text())


def forms(key: bytes) -> list[bytes]:
    b64, url = base64.b64encode(key), base64.urlsafe_b64encode(key)
    return [key, b64, b64.rstrip(b"="), url, key.hex().encode(), repr(key).encode()]


def wait_frozen(pid: int) -> None:
    """Wait until every thread of ``pid`` has stopped (SIGSTOP does not wait)."""
    for _ in range(2000):
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat_line = (task / "stat").read_text()
            except FileNotFoundError:
                continue  # a thread that ended
            states.append(stat_line.rsplit(")", 1)[1].split()[0])
        if all(state in "tT" for state in states):
            return
        threading.Event().wait(0.001)
    pytest.fail(f"process {pid} did not stop")


def start_by_hand(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """A start that is expected to fail (ServerProcess.start waits for it to listen)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keyplane",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--config",
            str(data_dir / "config.toml"),
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("rootkey"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def made(server: ServerProcess) -> Made:
    made = Made()
    for account, kms in (
        (ACCOUNT, server.client()),
        (OTHER_ACCOUNT, kms_client(server.endpoint, *OTHER)),
    ):
        for i in range(2):
            key = kms.create_key(Description=f"key {i}")["KeyMetadata"]["KeyId"]
            plaintext, context = os.urandom(48), {"n": str(i)}
            blob = kms.encrypt(
                KeyId=key, Plaintext=plaintext, EncryptionContext=context
            )["CiphertextBlob"]
            made.blobs.append((account, blob, plaintext, context))
            data_key = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
            made.blobs.append(
                (account, data_key["CiphertextBlob"], data_key["Plaintext"], {})
            )
    return made


class Traffic:
    """A client thread that encrypts, decrypts and makes data keys without pause."""

    def __init__(self, server: ServerProcess) -> None:
        self.kms = server.client()
        self.key = self.kms.create_key()["KeyMetadata"]["KeyId"]
        self.errors: list[BaseException] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                plaintext = os.urandom(32)
                blob = self.kms.encrypt(KeyId=self.key, Plaintext=plaintext)
                opened = self.kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])
                assert opened["Plaintext"] == plaintext
                data_key = self.kms.generate_data_key(KeyId=self.key, NumberOfBytes=32)
                opened = self.kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
                assert opened["Plaintext"] == data_key["Plaintext"]
                self.rounds += 1
            except BaseException as exc:  # every failure is the test's to report
                self.errors.append(exc)
                return

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_rotation_under_load_changes_only_the_root_key(server, made):
    made.check(server)
    old = root_key(server)
    with Traffic(server) as traffic:
        result = rotate(server)
        rotate_now(server)
        while traffic.rounds < 5 and not traffic.errors:
            threading.Event().wait(0.01)
    assert traffic.errors == []
    assert result.returncode == 0, result.stderr
    assert f"re-wrapped {PARTITIONS} partition keys" in result.stdout
    new = root_key(server)
    assert new != old
    key_file = server.data_dir / "root.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (server.data_dir / "root.key.next").exists()
    made.check(server)
    # No root key, old or new, in what the command printed or /metrics shows.
    with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
        metrics = response.read()
    shown = (result.stdout + result.stderr).encode() + metrics
    assert not any(f in shown for k in (old, new) for f in forms(k))


def test_the_answer_is_a_count_and_needs_the_permission(server):
    credentials = Credentials(*OPERATOR)
    before = root_key(server)
    with (
        BatchClient(server.endpoint, credentials=credentials) as client,
        pytest.raises(BatchRequestError) as refused,
    ):
        client._post("RotateRootKey", {})
    assert refused.value.code == "AccessDeniedException"
    assert "keyplane:RotateRootKey" in refused.value.message
    assert root_key(server) == before
    assert rotate_now(server) == {"PartitionsRewrapped": PARTITIONS}
    assert root_key(server) != before


def test_everything_decrypts_after_restarts(server, made):
    rotate_now(server)
    # A key made after the rotation lives in the same partitions, and survives too.
    kms = server.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"after")["CiphertextBlob"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        server.restart(sig)
        made.check(server)
        assert server.client().decrypt(CiphertextBlob=blob)["Plaintext"] == b"after"


def test_the_old_root_key_no_longer_opens_the_store(server, made):
    old = (server.data_dir / "root.key").read_text()
    rotate_now(server)
    new = (server.data_dir / "root.key").read_text()
    server.stop()
    try:
        (server.data_dir / "root.key").write_text(old)
        refused = start_by_hand(server.data_dir)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "another root key" in refused.stderr
        printed = (refused.stdout + refused.stderr).encode()
        keys = [base64.b64decode(old), base64.b64decode(new)]
        assert not any(f in printed for k in keys for f in forms(k))
    finally:
        (server.data_dir / "root.key").write_text(new)
        server.start(server.port)
    made.check(server)


def test_a_kill_in_the_middle_of_rotations_loses_nothing(server, made):
    """SIGKILL while rotations run back to back, each time caught in the middle of
    one (a staged root key on disk), a few times: every start settles what it finds
    and decrypts everything."""
    rng = random.SystemRandom()
    staged = server.data_dir / "root.key.next"
    outcomes = []
    for cycle in range(3):
        done = threading.Event()

        def rotate_until_killed(done: threading.Event = done) -> None:
            try:
                with BatchClient(
                    server.endpoint, credentials=Credentials(ACCESS_KEY, SECRET_KEY)
                ) as client:
                    while not done.is_set():
                        client._post("RotateRootKey", {})
            except (OSError, BatchRequestError, ValueError):
                pass  # the kill cut the connection

        rotator = threading.Thread(target=rotate_until_killed, daemon=True)
        rotator.start()
        assert server.process is not None
        # Freeze the server at a random moment until it is frozen mid-rotation: the
        # kill then lands between staging the new key and renaming it, committed or
        # not.
        for _ in range(1000):
            threading.Event().wait(rng.uniform(0.001, 0.02))
            server.process.send_signal(signal.SIGSTOP)
            wait_frozen(server.process.pid)
            if staged.exists():
                break
            server.process.send_signal(signal.SIGCONT)
        else:
            pytest.fail("no rotation was caught under way")
        key_file_then = (server.data_dir / "root.key").read_text()
        staged_then = staged.read_text()
        server.stop(signal.SIGKILL)
        done.set()
        rotator.join(timeout=30)
        assert staged.exists()
        server.start(server.port)
        assert not staged.exists(), cycle
        now = (server.data_dir / "root.key").read_text()
        assert now in (key_file_then, staged_then), cycle
        outcomes.append("finished" if now == staged_then else "undone")
        made.check(server)
    # Whether each kill came before or after the commit, for whoever reads -s.
    print(f"rotations cut short by a kill, then settled: {outcomes}")


def test_offline_rotation_of_a_stopped_server(server, made):
    # Refused while the server holds the data directory (another process's lock).
    with pytest.raises(ConflictError, match="server is running"):
        root_rotation.rotate_offline(
            server.data_dir / "root.key", server.data_dir / "keyplane.db", {}
        )
    before = root_key(server)
    server.stop()
    try:
        result = keyplane("root-key", "rotate", "--data-dir", str(server.data_dir))
        assert result.returncode == 0, result.stderr
        assert f"re-wrapped {PARTITIONS} partition keys" in result.stdout
        assert root_key(server) != before
    finally:
        server.start(server.port)
    made.check(server)


def test_no_server_is_a_clear_message():
    result = keyplane("root-key", "rotate", "--endpoint", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach a server" in result.stderr
    assert "--data-dir" in result.stderr
