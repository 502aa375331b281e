"""Kill the server at random moments and check that nothing it acknowledged is lost.

Each cycle starts a server on the same data directory, checks everything acknowledged
so far, drives a random stream of state-changing and cryptographic operations, and
sends SIGKILL at a random moment, usually while a request is in flight. After every
kill the store must pass its integrity check, and after every restart:

* every key whose creation was acknowledged exists, with its description, tags, key
  policy and state as last acknowledged, and at least as many rotations;
* every acknowledged alias points at its key, and every acknowledged grant is listed;
* every ciphertext and data key the server returned decrypts to what it sealed;
* nothing half-written is visible: a key the server lists was either acknowledged or
  was being created when the server died (and is then adopted, whole).

An operation cut short by the kill may or may not have happened; the next cycle finds
out which and takes the server's word, after checking that the word is one of the two.

    python -m tests.crash.harness --cycles 1000        # what make crash-test runs
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keyplane.client import BatchClient
from keyplane.storage import SQLiteStore
from tests.integration.conftest import CREDENTIALS, ServerProcess

# How long a cycle drives requests before the kill, at most; the kill lands anywhere
# in it (one time in ten right away).
MAX_RUN_SECONDS = 0.4
# Bounds that keep each cycle's checks short however many cycles run.
MAX_KEYS = 16
MAX_ROTATIONS_PER_KEY = 20
MAX_GRANTS = 100
MAX_ALIASES = 150
MAX_CIPHERTEXTS = 3000


@dataclass
class KeyState:
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    rotations: int = 0
    pending_deletion: bool = False


@dataclass
class Ledger:
    """What the server acknowledged, and what it was doing when it died."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    grants: dict[str, str] = field(default_factory=dict)  # grant id -> key id
    # (blob, what it seals, its encryption context, the key that sealed it)
    ciphertexts: list[tuple[bytes, bytes, dict[str, str], str]] = field(
        default_factory=list
    )
    # Operations cut short by a kill: (what, details) to settle after the restart.
    unsettled: list[tuple[str, Any]] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


@dataclass
class Report:
    cycles: int
    operations: int
    unsettled: int
    checked: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        checks = ", ".join(f"{n} {what}" for what, n in sorted(self.checked.items()))
        return (
            f"{self.cycles} kill/restart cycles in {self.seconds:.0f} s; "
            f"{self.operations} operations acknowledged, {self.unsettled} cut short "
            f"by a kill and settled; checked: {checks}"
        )


class CrashCheckError(AssertionError):
    """Something acknowledged was lost, or something half-written is visible."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CrashCheckError(message)


class _Driver:
    def __init__(self, server: ServerProcess, ledger: Ledger, rng: random.Random):
        self.server, self.ledger, self.rng = server, ledger, rng
        self.kms = server.client(connect_timeout=2, read_timeout=5)
        self.acknowledged = 0

    def enabled_keys(self) -> list[str]:
        return [k for k, s in self.ledger.keys.items() if not s.pending_deletion]

    def step(self) -> None:
        """One random operation; its effect enters the ledger only once answered."""
        keys = self.enabled_keys()
        choices = ["create"] * 3 if len(self.ledger.keys) < MAX_KEYS else []
        if keys:
            choices += ["rotate", "policy", "tag", "delete", "cancel"]
            if len(self.ledger.aliases) < MAX_ALIASES:
                choices += ["alias"]
            if len(self.ledger.ciphertexts) < MAX_CIPHERTEXTS:
                choices += ["encrypt"] * 4 + ["data_key"] * 3
            if len(self.ledger.grants) < MAX_GRANTS:
                choices += ["grant"]
        what = self.rng.choice(choices)
        key_id = self.rng.choice(keys) if keys else None
        try:
            getattr(self, f"_{what}")(key_id)
        except ClientError:
            raise  # the server answered with an error: a bug, not a kill
        except (BotoCoreError, ConnectionError, OSError) as exc:
            # Whatever the operation changed, or did not, is for _settle to find out:
            # each one that changes state noted its intent in ledger.unsettled.
            raise _KilledError from exc
        self.acknowledged += 1

    def _create(self, _: str | None) -> None:
        description = f"crash-{self.rng.getrandbits(32):08x}"
        # Record the intent first: if the answer is lost, the key may still exist.
        self.ledger.unsettled.append(("create", description))
        key_id = self.kms.create_key(Description=description)["KeyMetadata"]["KeyId"]
        self.ledger.unsettled.pop()
        self.ledger.keys[key_id] = KeyState(description)

    def _encrypt(self, key_id: str | None) -> None:
        plaintext = self.rng.randbytes(self.rng.randint(1, 64))
        context = {"n": str(self.rng.getrandbits(16))}
        blob = self.kms.encrypt(
            KeyId=key_id, Plaintext=plaintext, EncryptionContext=context
        )["CiphertextBlob"]
        self.ledger.ciphertexts.append((blob, plaintext, context, str(key_id)))

    def _data_key(self, key_id: str | None) -> None:
        made = self.kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        self.ledger.ciphertexts.append(
            (made["CiphertextBlob"], made["Plaintext"], {}, str(key_id))
        )

    def _alias(self, key_id: str | None) -> None:
        name = f"alias/crash-{self.rng.getrandbits(40):010x}"
        self.ledger.unsettled.append(("alias", (name, key_id)))
        self.kms.create_alias(AliasName=name, TargetKeyId=key_id)
        self.ledger.unsettled.pop()
        self.ledger.aliases[name] = str(key_id)

    def _rotate(self, key_id: str | None) -> None:
        state = self.ledger.keys[str(key_id)]
        if state.rotations >= MAX_ROTATIONS_PER_KEY:
            return
        self.ledger.unsettled.append(("rotate", key_id))
        self.kms.rotate_key_on_demand(KeyId=key_id)
        self.ledger.unsettled.pop()
        state.rotations += 1

    def _grant(self, key_id: str | None) -> None:
        grant_id = self.kms.create_grant(
            KeyId=key_id,
            GranteePrincipal="arn:aws:iam::111122223333:user/admin",
            Operations=["Encrypt"],
        )["GrantId"]
        self.ledger.grants[grant_id] = str(key_id)

    def _policy(self, key_id: str | None) -> None:
        text = self.kms.get_key_policy(KeyId=key_id)["Policy"].replace(
            '"Sid": "', f'"Sid": "v{self.rng.getrandbits(16)} ', 1
        )
        self.ledger.unsettled.append(("policy", (key_id, text)))
        self.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=text)
        self.ledger.unsettled.pop()
        self.ledger.keys[str(key_id)].policy = text

    def _tag(self, key_id: str | None) -> None:
        tag = {f"t{self.rng.randint(0, 3)}": f"{self.rng.getrandbits(16)}"}
        self.ledger.unsettled.append(("tag", (key_id, tag)))
        self.kms.tag_resource(
            KeyId=key_id, Tags=[{"TagKey": k, "TagValue": v} for k, v in tag.items()]
        )
        self.ledger.unsettled.pop()
        self.ledger.keys[str(key_id)].tags.update(tag)

    def _delete(self, key_id: str | None) -> None:
        if len(self.enabled_keys()) < 3:
            return
        self.ledger.unsettled.append(("delete", key_id))
        self.kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=30)
        self.ledger.unsettled.pop()
        self.ledger.keys[str(key_id)].pending_deletion = True

    def _cancel(self, _: str | None) -> None:
        pending = [k for k, s in self.ledger.keys.items() if s.pending_deletion]
        if not pending:
            return
        key_id = self.rng.choice(pending)
        # CancelKeyDeletion leaves the key Disabled; EnableKey brings it back. A kill
        # between the two leaves it Disabled, which _settle accepts and undoes.
        self.ledger.unsettled.append(("cancel", key_id))
        self.kms.cancel_key_deletion(KeyId=key_id)
        self.kms.enable_key(KeyId=key_id)
        self.ledger.unsettled.pop()
        self.ledger.keys[key_id].pending_deletion = False


class _KilledError(Exception):
    """The server died under a request."""


def _settle(kms: Any, ledger: Ledger) -> None:
    """Find out what happened to operations a kill cut short, checking that each
    either happened whole or not at all."""
    for what, details in ledger.unsettled:
        if what == "create":
            found = [
                k["KeyId"]
                for k in _all_keys(kms)
                if k["KeyId"] not in ledger.keys
                and kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["Description"]
                == details
            ]
            _expect(len(found) <= 1, f"one CreateKey made {len(found)} keys")
            for key_id in found:
                ledger.keys[key_id] = KeyState(details)
        elif what == "alias":
            name, key_id = details
            listed = {a["AliasName"]: a.get("TargetKeyId") for a in _all_aliases(kms)}
            if name in listed:
                _expect(listed[name] == key_id, f"{name} points elsewhere")
                ledger.aliases[name] = key_id
        elif what == "rotate":
            state = ledger.keys[details]
            seen = len(_rotations(kms, details))
            _expect(
                seen in (state.rotations, state.rotations + 1),
                f"{details}: {seen} rotations, expected {state.rotations} or one more",
            )
            state.rotations = seen
        elif what == "policy":
            key_id, text = details
            now = kms.get_key_policy(KeyId=key_id)["Policy"]
            state = ledger.keys[key_id]
            if now == text:
                state.policy = text
            else:
                _expect(state.policy in (None, now), f"{key_id}: a third policy")
        elif what == "tag":
            key_id, tag = details
            tags = _tags(kms, key_id)
            state = ledger.keys[key_id]
            if all(tags.get(k) == v for k, v in tag.items()):
                state.tags.update(tag)
            _expect(tags == state.tags, f"{key_id}: tags {tags} != {state.tags}")
        elif what == "delete":
            meta = kms.describe_key(KeyId=details)["KeyMetadata"]
            if meta["KeyState"] == "PendingDeletion":
                ledger.keys[details].pending_deletion = True
        elif what == "cancel":
            state_now = kms.describe_key(KeyId=details)["KeyMetadata"]["KeyState"]
            _expect(state_now in ("PendingDeletion", "Disabled", "Enabled"), state_now)
            if state_now == "Disabled":
                kms.enable_key(KeyId=details)
            ledger.keys[details].pending_deletion = state_now == "PendingDeletion"
        # encrypt, data_key, grant: a lost answer leaves nothing the client holds.
    ledger.count("cut-short operations settled", len(ledger.unsettled))
    ledger.unsettled.clear()


def _all_keys(kms: Any) -> list[dict[str, Any]]:
    return [
        k for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]
    ]


def _all_aliases(kms: Any) -> list[dict[str, Any]]:
    paginator = kms.get_paginator("list_aliases")
    return [a for page in paginator.paginate() for a in page["Aliases"]]


def _rotations(kms: Any, key_id: str) -> list[dict[str, Any]]:
    paginator = kms.get_paginator("list_key_rotations")
    return [r for page in paginator.paginate(KeyId=key_id) for r in page["Rotations"]]


def _tags(kms: Any, key_id: str) -> dict[str, str]:
    tags = kms.list_resource_tags(KeyId=key_id)["Tags"]
    return {t["TagKey"]: t["TagValue"] for t in tags}


def verify(server: ServerProcess, ledger: Ledger) -> None:
    """Everything acknowledged is there, and nothing else is."""
    kms = server.client()
    _settle(kms, ledger)
    listed = {k["KeyId"] for k in _all_keys(kms)}
    _expect(listed == set(ledger.keys), f"keys {listed ^ set(ledger.keys)} differ")
    for key_id, state in ledger.keys.items():
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        _expect(meta["Description"] == state.description, f"{key_id}: description")
        expected = "PendingDeletion" if state.pending_deletion else "Enabled"
        _expect(meta["KeyState"] == expected, f"{key_id}: {meta['KeyState']}")
        _expect(_tags(kms, key_id) == state.tags, f"{key_id}: tags")
        if state.policy is not None:
            policy = kms.get_key_policy(KeyId=key_id)["Policy"]
            _expect(policy == state.policy, f"{key_id}: policy")
        _expect(len(_rotations(kms, key_id)) == state.rotations, f"{key_id}: rotations")
    ledger.count("keys", len(ledger.keys))
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in _all_aliases(kms)}
    for name, key_id in ledger.aliases.items():
        _expect(aliases.get(name) == key_id, f"{name} lost or moved")
    ledger.count("aliases", len(ledger.aliases))
    by_key: dict[str, set[str]] = {}
    for grant_id, key_id in ledger.grants.items():
        if key_id not in by_key:
            by_key[key_id] = {
                g["GrantId"] for g in kms.list_grants(KeyId=key_id)["Grants"]
            }
        _expect(grant_id in by_key[key_id], f"grant {grant_id} lost")
    ledger.count("grants", len(ledger.grants))
    _decrypt_all(server, ledger)


def _decrypt_all(server: ServerProcess, ledger: Ledger) -> None:
    # One batch request per context, rather than a request per ciphertext.
    # A key pending deletion refuses to decrypt, but its material must still be
    # there: such ciphertexts must be refused for that reason and no other, and they
    # decrypt again once a later cycle cancels the deletion.
    groups: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes, str]]] = {}
    for blob, plaintext, context, key_id in ledger.ciphertexts:
        group = groups.setdefault(tuple(sorted(context.items())), [])
        group.append((blob, plaintext, key_id))
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        for context, items in groups.items():
            results = client.decrypt([b for b, _, _ in items], dict(context) or None)
            for (_, plaintext, key_id), result in zip(items, results, strict=True):
                if ledger.keys[key_id].pending_deletion:
                    _expect(
                        getattr(result, "code", None) == "KMSInvalidStateException",
                        f"a ciphertext of a key pending deletion: {result}",
                    )
                    continue
                _expect(
                    isinstance(result, dict) and result["Plaintext"] == plaintext,
                    f"a ciphertext no longer decrypts: {result}",
                )
    ledger.count("ciphertexts and data keys", len(ledger.ciphertexts))


def _integrity(data_dir: Path, ledger: Ledger) -> None:
    with SQLiteStore(data_dir / "keyplane.db") as store:
        problems = store.integrity_check()
    _expect(not problems, f"the store after a kill: {problems}")
    ledger.count("store integrity checks")


def run(cycles: int, seed: int, data_dir: Path, progress: bool = False) -> Report:
    rng = random.Random(seed)  # noqa: S311  a schedule to replay by seed, not crypto
    ledger = Ledger()
    server = ServerProcess(data_dir)
    started = time.monotonic()
    operations = unsettled = 0
    # However a cycle ends, even by a failed check, no server is left running.
    try:
        for cycle in range(cycles):
            server.start()
            verify(server, ledger)
            driver = _Driver(server, ledger, rng)
            assert server.process is not None
            pid = server.process.pid
            delay = 0.0 if rng.random() < 0.1 else rng.uniform(0, MAX_RUN_SECONDS)
            killer = threading.Timer(delay, os.kill, (pid, signal.SIGKILL))
            killer.start()
            try:
                while True:
                    driver.step()
            except _KilledError:
                pass
            finally:
                killer.join()
            operations += driver.acknowledged
            unsettled += len(ledger.unsettled)
            server.stop(signal.SIGKILL)
            _integrity(data_dir, ledger)
            if progress and (cycle + 1) % 50 == 0:
                print(f"  {cycle + 1} cycles, {operations} operations", flush=True)
        server.start()
        verify(server, ledger)
    finally:
        server.stop()
    return Report(
        cycles, operations, unsettled, ledger.checked, time.monotonic() - started
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    print(f"crash harness: {args.cycles} cycles, seed {args.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="keyplane-crash-") as tmp:
        try:
            report = run(args.cycles, args.seed, Path(tmp) / "data", progress=True)
        except CrashCheckError as exc:
            print(f"FAILED (seed {args.seed}): {exc}", file=sys.stderr)
            return 1
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
