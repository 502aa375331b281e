"""Nothing leaked: what a server leaves on disk, prints, answers and counts never
holds a plaintext, a data key or a secret; its store is useless under another root
key; and its process cannot dump core.

The tests drive a real server, then read everything it left behind and look for
every plaintext, data key and secret it handled, in each form a careless column,
message or log line could give it: raw, base64 (standard and URL-safe, padded or
not), hex in either case, and Python's ``repr``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.client import BatchClient, BatchItemError, BatchRequestError
from tests.integration.conftest import (
    ACCESS_KEY,
    ACCOUNT,
    ADMIN_CONFIG,
    CREDENTIALS,
    SECRET_KEY,
    ServerProcess,
    kms_client,
)
from tests.integration.test_import import wrap

ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:user/admin"
NOBODY_ARN = f"arn:aws:iam::{ACCOUNT}:user/nobody"
NOBODY_KEY = "AKIANOBODYEXAMPLE234"
NOBODY_SECRET = "secret-of-nobody"
# A second user with no identity policy: it may do only what a grant gives it.
CONFIG = ADMIN_CONFIG + (
    '[[accounts.principals]]\ntype = "user"\nname = "nobody"\n'
    f'access_keys = [{{ id = "{NOBODY_KEY}", secret = "{NOBODY_SECRET}" }}]\n'
)

# A CloudHSM cluster for a custom key store, with a kmsuser password to look for.
KMSUSER_PASSWORD = f"kmsuser-{os.urandom(8).hex()}"
STORE_CLUSTER_ID = "cluster-secretsaaaaa"
STORE_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBsealed\n-----END CERTIFICATE-----"
STORE_CLUSTER = (
    f'[[clusters]]\nid = "{STORE_CLUSTER_ID}"\n'
    f"trust_anchor_certificate = {json.dumps(STORE_ANCHOR)}\n"
    f'kmsuser_password = "{KMSUSER_PASSWORD}"\n'
)


def _key_in_store(kms: Any, store_id: str) -> str:
    """A key created in the store once it has connected."""
    for _ in range(200):
        state = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)[
            "CustomKeyStores"
        ][0]["ConnectionState"]
        if state == "CONNECTED":
            made = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)
            return str(made["KeyMetadata"]["KeyId"])
        assert state == "CONNECTING", state
        time.sleep(0.05)
    raise AssertionError("the key store did not connect")


# Blob layout version 1 (keyplane/kms/_blob.py): a 21-byte header, the 12-byte IV,
# the ciphertext, the 16-byte tag.
_HEADER_BYTES = 21
_IV_BYTES = 12
_TAG_BYTES = 16


# --- what to look for, and where ------------------------------------------------------


def forms(value: bytes | str) -> set[bytes]:
    """Every encoding of ``value`` a leak would plausibly take."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    b64, url = base64.b64encode(raw), base64.urlsafe_b64encode(raw)
    return {
        raw,
        b64,
        b64.rstrip(b"="),
        url,
        url.rstrip(b"="),
        raw.hex().encode(),
        raw.hex().upper().encode(),
        repr(raw).encode(),
    }


@dataclass
class Secrets:
    """Named values that must appear nowhere; each at least 16 bytes, so that a
    match is never chance."""

    values: dict[str, bytes | str] = field(default_factory=dict)

    def add(self, name: str, value: bytes | str) -> bytes | str:
        assert len(value) >= 16, name
        assert name not in self.values, name
        self.values[name] = value
        return value

    def found_in(self, haystack: bytes) -> list[str]:
        """The names of the secrets ``haystack`` holds in any form."""
        return sorted(
            name
            for name, value in self.values.items()
            if any(form in haystack for form in forms(value))
        )


def files_under(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, read raw, by its relative path."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def digests(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256(data).hexdigest()
        for name, data in files_under(directory).items()
    }


# --- looking for key material by what it does -----------------------------------------


@dataclass(frozen=True)
class KnownPlaintext:
    """A ciphertext blob and the plaintext in it: enough to recognise the key that
    made it, since AES-GCM's first ciphertext block is the plaintext XOR
    AES_K(IV || 00000002) (NIST SP 800-38D, section 7.1: the counter starts at
    inc32(J0), and J0 = IV || 0^31 || 1 for a 96-bit IV)."""

    counter_block: bytes
    keystream: bytes

    @classmethod
    def of(cls, blob: bytes, plaintext: bytes) -> KnownPlaintext:
        assert len(plaintext) >= 16
        assert len(blob) == _HEADER_BYTES + _IV_BYTES + len(plaintext) + _TAG_BYTES
        iv = blob[_HEADER_BYTES : _HEADER_BYTES + _IV_BYTES]
        first = blob[_HEADER_BYTES + _IV_BYTES :][:16]
        keystream = bytes(a ^ b for a, b in zip(first, plaintext[:16], strict=True))
        return cls(iv + b"\x00\x00\x00\x02", keystream)


# A key is 32 uniformly random bytes, so it holds a byte of 0x80 or more with
# probability 1 - 2**-32. Windows without one (text, zero pages) are skipped: that
# keeps the search fast and misses no real key.
_HIGH = bytes(1 if b >= 0x80 else 0 for b in range(256))


def keys_in(data: bytes, known: Iterable[KnownPlaintext]) -> list[int]:
    """Offsets of every 32-byte window of ``data`` that is the AES-256 key of one of
    the ``known`` ciphertexts."""
    known = list(known)
    counters = b"".join(k.counter_block for k in known)
    keystreams = [k.keystream for k in known]
    high = data.translate(_HIGH)
    hits = []
    for offset in range(len(data) - 31):
        if b"\x01" not in high[offset : offset + 32]:
            continue
        # ECB here is the bare block cipher applied to counter blocks, which is
        # how GCM makes its keystream; it protects nothing.
        window = data[offset : offset + 32]
        cipher = Cipher(algorithms.AES(window), modes.ECB())  # noqa: S305
        out = cipher.encryptor().update(counters)
        if any(
            out[16 * i : 16 * i + 16] == stream for i, stream in enumerate(keystreams)
        ):
            hits.append(offset)
    return hits


_HEX_RUN = re.compile(rb"[0-9a-fA-F]{64,}")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{43,}")


def decodings(data: bytes) -> Iterator[bytes]:
    """``data``, and the bytes of every long hex or base64 run in it (at each
    alignment), so that key material stored as text is searched too."""
    yield data
    for run in _HEX_RUN.findall(data):
        for start in (0, 1):
            text = run[start:]
            yield bytes.fromhex(text[: len(text) // 2 * 2].decode())
    for run in _BASE64_RUN.findall(data):
        standard = run.replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):
            text = standard[start:]
            if len(text) % 4 == 1:  # a dangling character decodes to nothing
                text = text[:-1]
            yield base64.b64decode(text + b"=" * (-len(text) % 4))


def test_the_key_search_finds_a_planted_key() -> None:
    """The search below would see key material stored raw: a control for it."""
    key, iv = os.urandom(32), os.urandom(_IV_BYTES)
    plaintext = b"a known plaintext, a block or more"
    sealed = AESGCM(key).encrypt(iv, plaintext, b"aad")
    blob = b"\x01" + os.urandom(_HEADER_BYTES - 1) + iv + sealed
    known = KnownPlaintext.of(blob, plaintext)
    other = KnownPlaintext.of(
        b"\x01"
        + os.urandom(20)
        + iv
        + AESGCM(os.urandom(32)).encrypt(iv, plaintext, b""),
        plaintext,
    )
    data = os.urandom(1000) + b"{'text': 0}" * 10 + key + bytes(500)
    assert keys_in(data, [other, known]) == [1110]
    assert keys_in(data, [other]) == []
    # Stored as text, it is found too.
    for text in (
        b'{"m": "' + key.hex().encode() + b'"}',
        b'{"m": "' + key.hex().upper().encode() + b'"}',
        b"x=" + base64.b64encode(b"pad" + key),
        b"x=" + base64.urlsafe_b64encode(b"p" + key).rstrip(b"="),
    ):
        assert any(keys_in(view, [known]) for view in decodings(text)), text


# --- 1. sealed storage ----------------------------------------------------------------


def import_into(kms: Any, key_id: str, material: bytes) -> bytes:
    """Import ``material`` into an EXTERNAL key; the import token it used."""
    params = kms.get_parameters_for_import(
        KeyId=key_id,
        WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256",
        WrappingKeySpec="RSA_2048",
    )
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(
            params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material
        ),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    return bytes(params["ImportToken"])


def _plaintext(label: str) -> bytes:
    """A distinctive plaintext: readable text that no file would hold by chance."""
    return f"keyplane-secret-{label}-{os.urandom(12).hex()}".encode()


def _read_store(data_dir: Path, into: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The partitions and materials rows, read from a copy of the database (and of
    its WAL, so that a killed server's last commits are there) so that reading it
    changes nothing in the data directory."""
    into.mkdir()
    for name in ("keyplane.db", "keyplane.db-wal"):
        if (data_dir / name).exists():
            shutil.copyfile(data_dir / name, into / name)
    conn = sqlite3.connect(into / "keyplane.db")
    try:
        return {
            "partitions": conn.execute(
                "SELECT name, wrapped_key FROM partitions"
            ).fetchall(),
            "materials": conn.execute(
                "SELECT key_id, version, wrapped FROM materials"
            ).fetchall(),
            "grants": conn.execute("SELECT data FROM grants").fetchall(),
            "key metadata": conn.execute("SELECT metadata FROM keys").fetchall(),
        }
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_the_data_directory_holds_no_plaintext_data_key_or_raw_key(
    tmp_path: Path, sig: int
) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, config=ADMIN_CONFIG + STORE_CLUSTER)
    server.start()
    secrets = Secrets()
    known: list[KnownPlaintext] = []
    versions = {}
    try:
        kms = server.client()
        keys = [
            kms.create_key(Description=f"sealed {i}")["KeyMetadata"]["KeyId"]
            for i in range(3)
        ]
        kms.create_alias(AliasName="alias/sealed", TargetKeyId=keys[0])
        grant = kms.create_grant(
            KeyId=keys[1],
            GranteePrincipal=ADMIN_ARN,
            Operations=["Encrypt", "Decrypt", "GenerateDataKey"],
            Constraints={"EncryptionContextSubset": {"purpose": "sealed"}},
        )
        token = str(secrets.add("grant token", grant["GrantToken"]))

        def seal(key: str, label: str, **extra: Any) -> bytes:
            """Encrypt a new distinctive plaintext; keep it as a secret and as a
            known plaintext for the key search."""
            plaintext = bytes(secrets.add(label, _plaintext(label)))
            context = {"purpose": "sealed", "label": label}
            blob: bytes = kms.encrypt(
                KeyId=key, Plaintext=plaintext, EncryptionContext=context, **extra
            )["CiphertextBlob"]
            known.append(KnownPlaintext.of(blob, plaintext))
            return blob

        # Every material version seals a known plaintext: version 1 of each key,
        # then more versions of two keys by on-demand rotation.
        for i, key in enumerate(keys):
            seal(key, f"v1-of-{i}")
            versions[key] = 1
        # Imported material: the material itself is a secret the store must only
        # ever hold sealed, and the key search below tries it like any version.
        imported = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
        import_into(kms, imported, bytes(secrets.add("imported", os.urandom(32))))
        seal(imported, "v1-of-imported")
        versions[imported] = 1
        # A key in a custom key store, whose material lives in a cluster's partition;
        # kmsuser's password may reach the disk only as a salted verifier.
        password = str(secrets.add("kmsuser password", KMSUSER_PASSWORD))
        store = kms.create_custom_key_store(
            CustomKeyStoreName="sealed",
            CloudHsmClusterId=STORE_CLUSTER_ID,
            TrustAnchorCertificate=STORE_ANCHOR,
            KeyStorePassword=password,
        )["CustomKeyStoreId"]
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        in_store = _key_in_store(kms, store)
        seal(in_store, "v1-in-a-key-store")
        versions[in_store] = 1
        secrets.add(
            "random from a key store",
            kms.generate_random(NumberOfBytes=32, CustomKeyStoreId=store)["Plaintext"],
        )
        for rounds, key in ((2, keys[0]), (1, keys[1])):
            for _ in range(rounds):
                kms.rotate_key_on_demand(KeyId=key)
                versions[key] += 1
                seal(key, f"v{versions[key]}-of-{keys.index(key)}")
        seal(keys[1], "through-a-grant", GrantTokens=[token])
        binary = bytes(secrets.add("binary plaintext", os.urandom(200)))
        blob = kms.encrypt(KeyId="alias/sealed", Plaintext=binary)["CiphertextBlob"]
        known.append(KnownPlaintext.of(blob, binary))
        moved = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys[2])
        known.append(KnownPlaintext.of(moved["CiphertextBlob"], binary))

        for label, args in (
            ("AES_256", {"KeySpec": "AES_256"}),
            ("AES_128", {"KeySpec": "AES_128"}),
            ("64 bytes", {"NumberOfBytes": 64}),
            ("1024 bytes", {"NumberOfBytes": 1024}),
        ):
            for key in (keys[0], keys[1]):
                made = kms.generate_data_key(
                    KeyId=key, EncryptionContext={"purpose": "sealed"}, **args
                )
                secrets.add(f"data key {label} of {key}", made["Plaintext"])
                known.append(
                    KnownPlaintext.of(made["CiphertextBlob"], made["Plaintext"])
                )
        secrets.add("random", kms.generate_random(NumberOfBytes=32)["Plaintext"])
        with BatchClient(server.endpoint, credentials=CREDENTIALS) as batch:
            for i, item in enumerate(batch.generate_data_keys(keys[2], 16)):
                assert not isinstance(item, BatchItemError), item
                secrets.add(f"batch data key {i}", item["Plaintext"])
                known.append(
                    KnownPlaintext.of(item["CiphertextBlob"], item["Plaintext"])
                )
    finally:
        server.stop(sig)

    on_disk = files_under(data_dir)
    assert "keyplane.db" in on_disk
    if sig == signal.SIGKILL:
        # The last commits are in the WAL, which this test must read too.
        assert "keyplane.db-wal" in on_disk
    # The configuration file is the test's own, and holds the admin's secret.
    secrets.add("secret access key", SECRET_KEY)
    for name, data in on_disk.items():
        if name == "config.toml":
            continue
        assert secrets.found_in(data) == [], name
        # Nor any 32-byte stretch of a plaintext or data key: nothing stored even
        # in part.
        for label, value in secrets.values.items():
            raw = value.encode() if isinstance(value, str) else value
            for start in range(max(1, len(raw) - 31)):
                assert raw[start : start + 32] not in data, (name, label, start)
        # Nor the key material of any key version, raw or as text, anywhere.
        for view in decodings(data):
            assert keys_in(view, known) == [], name

    store = _read_store(data_dir, tmp_path / "copy")
    # One wrapped row per material version, each sealed (IV and tag around it) and
    # each different.
    assert sorted((k, v) for k, v, _ in store["materials"]) == sorted(
        (k, v) for k, n in versions.items() for v in range(1, n + 1)
    )
    wrapped = [bytes(w) for _, _, w in store["materials"]]
    wrapped += [bytes(w) for _, w in store["partitions"]]
    assert all(len(w) >= 32 + _IV_BYTES + _TAG_BYTES for w in wrapped)
    assert len(set(wrapped)) == len(wrapped)


@dataclass(frozen=True)
class WrongRootKeyRun:
    """A data directory written under one root key, and what starting a server on
    it under another did."""

    data_dir: Path
    blob: bytes
    plaintext: bytes
    before: dict[str, str]
    after: dict[str, str]
    result: subprocess.CompletedProcess[str]
    wrong_key: str
    right_key: str


@pytest.fixture(scope="module")
def wrong_root_key_run(tmp_path_factory: pytest.TempPathFactory) -> WrongRootKeyRun:
    data_dir = tmp_path_factory.mktemp("rootkey") / "data"
    server = ServerProcess(data_dir)
    server.start()
    try:
        kms = server.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        plaintext = _plaintext("under-the-first-root-key")
        blob = kms.encrypt(KeyId=key, Plaintext=plaintext)["CiphertextBlob"]
    finally:
        server.stop()
    right_key = (data_dir / "root.key").read_text().strip()
    wrong_key = base64.b64encode(os.urandom(32)).decode()
    before = digests(data_dir)
    # ServerProcess.start drops KEYPLANE_ROOT_KEY, so this start is done by hand.
    result = subprocess.run(
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
        env={**os.environ, "KEYPLANE_ROOT_KEY": wrong_key, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = digests(data_dir)
    return WrongRootKeyRun(
        data_dir, blob, plaintext, before, after, result, wrong_key, right_key
    )


def test_another_root_key_is_refused_and_changes_nothing(
    wrong_root_key_run: WrongRootKeyRun,
) -> None:
    run = wrong_root_key_run
    printed = run.result.stdout + run.result.stderr
    assert run.result.returncode == 1, printed
    assert "listening on" not in printed
    # Refused, and saying why: the root key is not the one the store was sealed under.
    assert run.result.stderr.startswith("keyplane: cannot start: "), printed
    assert "another root key" in run.result.stderr, printed
    # Neither root key is printed, in any form.
    keys = Secrets()
    keys.add("given root key", base64.b64decode(run.wrong_key))
    keys.add("stored root key", base64.b64decode(run.right_key))
    assert keys.found_in(printed.encode()) == []
    # Every file is byte for byte what it was: the database, and no WAL or new file.
    assert run.after == run.before
    assert set(run.before) == {"config.toml", "keyplane.db", "root.key"}
    # And the right key still opens everything.
    server = ServerProcess(run.data_dir)
    server.start()
    try:
        opened = server.client().decrypt(CiphertextBlob=run.blob)
        assert opened["Plaintext"] == run.plaintext
    finally:
        server.stop()


# --- 2. secret hygiene ----------------------------------------------------------------


def signing_keys(secret: str, region: str = "us-east-1") -> Iterator[bytes]:
    """The SigV4 signing keys derived from ``secret`` for yesterday, today and
    tomorrow (UTC): each as good as the secret for a day (AWS SigV4, "Create a
    signature")."""
    today = datetime.datetime.now(datetime.UTC).date()
    for days in (-1, 0, 1):
        stamp = (today + datetime.timedelta(days=days)).strftime("%Y%m%d")
        key = ("AWS4" + secret).encode()
        for part in (stamp, region, "kms", "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        yield key


def test_nothing_secret_is_printed_answered_or_counted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, log_level="DEBUG", config=CONFIG)
    server.start()
    secrets = Secrets()
    answers: list[str] = []  # every error the clients were given, whole

    def fails(code: str, call: Any, **kwargs: Any) -> None:
        with pytest.raises(ClientError) as exc:
            call(**kwargs)
        answers.append(json.dumps(exc.value.response, default=str))
        assert exc.value.response["Error"]["Code"] == code, answers[-1]

    def item_failed(item: dict[str, Any] | BatchItemError, code: str) -> None:
        assert isinstance(item, BatchItemError), item
        answers.append(f"{item.code}: {item.message}")
        assert item.code == code, item

    try:
        kms = server.client()
        nobody = kms_client(server.endpoint, NOBODY_KEY, NOBODY_SECRET)
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
        kms.create_alias(AliasName="alias/hygiene", TargetKeyId=keys[0])
        context = {"tenant": "hygiene", "purpose": "logs"}

        # Encrypt and Decrypt with a context; ReEncrypt to the other key.
        plaintext = bytes(secrets.add("plaintext", _plaintext("hygiene")))
        blob = kms.encrypt(
            KeyId="alias/hygiene", Plaintext=plaintext, EncryptionContext=context
        )["CiphertextBlob"]
        assert (
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
            == plaintext
        )
        moved = kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext=context,
            DestinationKeyId=keys[1],
            DestinationEncryptionContext={"moved": "yes"},
        )["CiphertextBlob"]
        assert (
            kms.decrypt(CiphertextBlob=moved, EncryptionContext={"moved": "yes"})[
                "Plaintext"
            ]
            == plaintext
        )
        binary = bytes(secrets.add("binary plaintext", os.urandom(64)))
        kms.encrypt(KeyId=keys[1], Plaintext=binary)

        # Data keys, with and without the plaintext, and random bytes.
        for spec in ({"KeySpec": "AES_256"}, {"NumberOfBytes": 48}):
            made = kms.generate_data_key(
                KeyId=keys[0], EncryptionContext=context, **spec
            )
            secrets.add(f"data key {spec}", made["Plaintext"])
        sealed = kms.generate_data_key_without_plaintext(
            KeyId=keys[0], KeySpec="AES_256", EncryptionContext=context
        )["CiphertextBlob"]
        secrets.add(
            "data key without plaintext",
            kms.decrypt(CiphertextBlob=sealed, EncryptionContext=context)["Plaintext"],
        )
        secrets.add("random", kms.generate_random(NumberOfBytes=32)["Plaintext"])

        # Imported material, and the import token that carried it.
        imported = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
        import_token = import_into(
            kms, imported, bytes(secrets.add("imported material", os.urandom(32)))
        )
        secrets.add("import token", import_token)
        kms.encrypt(KeyId=imported, Plaintext=plaintext)

        # Rotation: the old ciphertext still opens, a new one seals.
        kms.rotate_key_on_demand(KeyId=keys[0])
        assert (
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
            == plaintext
        )
        after = bytes(secrets.add("after rotation", _plaintext("after-rotation")))
        kms.encrypt(KeyId=keys[0], Plaintext=after, EncryptionContext=context)

        # A grant lets nobody in with its token; a forged token is refused.
        grant = kms.create_grant(
            KeyId=keys[1],
            GranteePrincipal=NOBODY_ARN,
            Operations=["Encrypt", "Decrypt", "GenerateDataKey"],
        )
        token = str(secrets.add("grant token", grant["GrantToken"]))
        granted = bytes(secrets.add("granted", _plaintext("granted")))
        granted_blob = nobody.encrypt(
            KeyId=keys[1], Plaintext=granted, GrantTokens=[token]
        )["CiphertextBlob"]
        assert nobody.decrypt(CiphertextBlob=granted_blob)["Plaintext"] == granted
        secrets.add(
            "granted data key",
            nobody.generate_data_key(
                KeyId=keys[1], KeySpec="AES_256", GrantTokens=[token]
            )["Plaintext"],
        )
        raw_token = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw_token[-1] ^= 1
        forged = base64.urlsafe_b64encode(bytes(raw_token)).decode().rstrip("=")
        fails(
            "InvalidGrantTokenException",
            kms.encrypt,
            KeyId=keys[1],
            Plaintext=granted,
            GrantTokens=[forged],
        )

        # Failing requests, each carrying a secret the answer must not echo.
        tampered = bytearray(blob)
        tampered[-1] ^= 1
        fails("InvalidCiphertextException", kms.decrypt, CiphertextBlob=bytes(tampered))
        fails(
            "InvalidCiphertextException",
            kms.decrypt,
            CiphertextBlob=blob,
            EncryptionContext={"tenant": "someone else"},
        )
        fails(
            "InvalidCiphertextException",
            kms.re_encrypt,
            CiphertextBlob=blob,
            DestinationKeyId=keys[1],
        )
        fails("InvalidCiphertextException", kms.decrypt, CiphertextBlob=plaintext)
        oversized = bytes(
            secrets.add("oversized plaintext", _plaintext("too-long") * 100)
        )
        assert len(oversized) > 4096
        fails("ValidationException", kms.encrypt, KeyId=keys[0], Plaintext=oversized)
        fails(
            "ValidationException",
            kms.generate_data_key,
            KeyId=keys[0],
            NumberOfBytes=2000,
        )
        fails(
            "AccessDeniedException", nobody.encrypt, KeyId=keys[0], Plaintext=plaintext
        )
        fails(
            "AccessDeniedException",
            nobody.decrypt,
            CiphertextBlob=blob,
            EncryptionContext=context,
        )
        wrong_secret = str(secrets.add("a wrong secret", "wrong-" + SECRET_KEY[::-1]))
        fails(
            "InvalidSignatureException",
            kms_client(server.endpoint, ACCESS_KEY, wrong_secret).encrypt,
            KeyId=keys[0],
            Plaintext=plaintext,
        )
        fails(
            "UnrecognizedClientException",
            kms_client(server.endpoint, "AKIAUNKNOWNEXAMPLE23", SECRET_KEY).encrypt,
            KeyId=keys[0],
            Plaintext=plaintext,
        )

        # The batch extension: data keys, encryption, and items that fail alone.
        with BatchClient(server.endpoint, credentials=CREDENTIALS) as batch:
            for i, item in enumerate(batch.generate_data_keys("alias/hygiene", 8)):
                assert not isinstance(item, BatchItemError), item
                secrets.add(f"batch data key {i}", item["Plaintext"])
            batch_plaintexts = [
                bytes(secrets.add(f"batch plaintext {i}", _plaintext(f"batch-{i}")))
                for i in range(4)
            ]
            sealed_items = batch.encrypt(keys[1], batch_plaintexts, context)
            blobs = [
                item["CiphertextBlob"]
                for item in sealed_items
                if not isinstance(item, BatchItemError)
            ]
            assert len(blobs) == 4
            good, bad = batch.decrypt([blobs[0], bytes(tampered)], context)
            assert not isinstance(good, BatchItemError)
            assert good["Plaintext"] == batch_plaintexts[0]
            item_failed(bad, "InvalidCiphertextException")
            (other_context,) = batch.decrypt([blob], {"tenant": "someone else"})
            item_failed(other_context, "InvalidCiphertextException")
            (too_long,) = batch.encrypt(keys[1], [oversized])
            item_failed(too_long, "ValidationException")
        with BatchClient(
            server.endpoint, credentials=Credentials(NOBODY_KEY, NOBODY_SECRET)
        ) as batch:
            (denied,) = batch.encrypt(keys[0], [plaintext])
            item_failed(denied, "AccessDeniedException")
            for item in batch.decrypt([blob], context):
                item_failed(item, "AccessDeniedException")
        with (
            BatchClient(
                server.endpoint, credentials=Credentials(ACCESS_KEY, wrong_secret)
            ) as batch,
            pytest.raises(BatchRequestError) as refused,
        ):
            batch.encrypt(keys[0], [plaintext])
        answers.append(str(refused.value))
        assert refused.value.code == "InvalidSignatureException"

        with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
            metrics = response.read()
        assert json.loads(metrics)["keys"] == 3
    finally:
        server.stop()
    printed = server.output
    # The DEBUG log ran: access lines and policy decisions are in it.
    assert "op=Encrypt" in printed and " DEBUG " in printed

    secrets.add("secret access key", SECRET_KEY)
    secrets.add("nobody's secret access key", NOBODY_SECRET)
    for i, key in enumerate(signing_keys(SECRET_KEY)):
        secrets.add(f"admin signing key {i}", key)
    for i, key in enumerate(signing_keys(NOBODY_SECRET)):
        secrets.add(f"nobody's signing key {i}", key)
    # The secret behind every grant token, as the store keeps it.
    store = _read_store(data_dir, tmp_path / "copy")
    (row,) = store["grants"]
    secrets.add("grant token secret", bytes.fromhex(json.loads(row[0])["token_secret"]))
    for metadata in store["key metadata"]:
        for parameters in json.loads(metadata[0]).get("import_parameters", []):
            secrets.add("import token secret", bytes.fromhex(parameters["secret"]))

    assert secrets.found_in(printed.encode()) == []
    assert secrets.found_in("\n".join(answers).encode()) == []
    assert secrets.found_in(metrics) == []


# --- 3. no core dumps -----------------------------------------------------------------


@contextlib.contextmanager
def core_dumps_allowed() -> Iterator[bool]:
    """Raise this process's core limit as far as it may go, for the children started
    meanwhile to inherit, so that a server that left its limit alone would show it.
    Yields whether the limit is above zero."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        with contextlib.suppress(ValueError, OSError):
            # Raising the hard limit needs CAP_SYS_RESOURCE; the soft limit may
            # always go up to the hard one.
            resource.setrlimit(
                resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        if resource.getrlimit(resource.RLIMIT_CORE)[0] == 0 and hard != 0:
            resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
        yield resource.getrlimit(resource.RLIMIT_CORE)[0] != 0
    finally:
        # Lowering back is always allowed; a raised hard limit is put back first.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def core_limit(pid: int) -> tuple[str, str]:
    """The soft and hard core-size limits ``/proc/<pid>/limits`` shows."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line[len("Max core file size") :].split()[:2]
            return soft, hard
    raise AssertionError(f"no core limit for {pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_cannot_dump_core(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    with core_dumps_allowed() as raised:
        server.start()
        # The control: a child that leaves its limit alone shows the raised one,
        # so the check below would see a server that forgot to lower it.
        control = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"]
        )
        try:
            assert (core_limit(control.pid) != ("0", "0")) == raised
        finally:
            control.kill()
            control.wait()
    try:
        assert server.process is not None
        pid = server.process.pid
        assert core_limit(pid) == ("0", "0")
        if os.geteuid() != 0:
            # A process that is not dumpable has its /proc files owned by root
            # (proc(5), /proc/pid); for a root test run this says nothing.
            assert Path(f"/proc/{pid}/status").stat().st_uid == 0
        # And it still serves.
        server.client().generate_random(NumberOfBytes=16)
    finally:
        server.stop()
