"""Kill the server at random moments and check that nothing it acknowledged is lost.

Each cycle starts a server on the same data directory, checks everything acknowledged
so far, drives a random stream of state-changing and cryptographic operations, and
sends SIGKILL at a random moment, usually while a request is in flight. After every
kill the store must pass its integrity check, and after every restart:

* every key whose creation was acknowledged exists, with its description, tags, key
  policy and state as last acknowledged, and at least as many rotations;
* every acknowledged alias points at its key, and every acknowledged grant is listed;
* every key with imported material holds exactly the material acknowledged (its
  KeyMaterialId is an HMAC of the key id under it), or waits for it (PendingImport)
  if deleting it was acknowledged;
* the custom key store exists once its creation was acknowledged, and is connected or
  not as last acknowledged; its keys are Unavailable while it is disconnected;
* every ciphertext and data key the server returned decrypts to what it sealed;
* nothing half-written is visible: a key the server lists was either acknowledged or
  was being created when the server died (and is then adopted, whole).

An operation cut short by the kill may or may not have happened; the next cycle finds
out which and takes the server's word, after checking that the word is one of the two.

    python -m tests.crash.harness --cycles 1000        # what make crash-test runs
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyplane.client import BatchClient
from keyplane.storage import SQLiteStore
from tests.integration.conftest import ADMIN_CONFIG, CREDENTIALS, ServerProcess

# How long a cycle drives requests before the kill, at most; the kill lands anywhere
# in it (one time in ten right away).
MAX_RUN_SECONDS = 0.4
# Bounds that keep each cycle's checks short however many cycles run.
MAX_KEYS = 16
MAX_ROTATIONS_PER_KEY = 20
MAX_GRANTS = 100
MAX_ALIASES = 150
MAX_CIPHERTEXTS = 3000
MAX_EXTERNAL_KEYS = 4
MAX_STORE_KEYS = 4

# A custom key store on an emulated CloudHSM cluster: connecting takes 50 ms, and the
# store's quota is off, so that checking thousands of its ciphertexts at once is not
# throttled.
STORE_CLUSTER = "cluster-crashcrashaa"
STORE_PASSWORD = "crash-kmsuser-pw"
STORE_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBcrash\n-----END CERTIFICATE-----"
CONFIG = ADMIN_CONFIG + (
    "\n[custom_key_stores]\nconnect_seconds = 0.05\nrequest_quota = 0\n\n"
    f'[[clusters]]\nid = "{STORE_CLUSTER}"\n'
    f'trust_anchor_certificate = "{STORE_ANCHOR.encode("unicode_escape").decode()}"\n'
    f'kmsuser_password = "{STORE_PASSWORD}"\n'
)


@dataclass
class KeyState:
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    rotations: int = 0
    pending_deletion: bool = False
    # Origin EXTERNAL: the material the harness made and imported (None before the
    # first import), and whether the key holds it now.
    origin: str = "AWS_KMS"
    material: bytes | None = None
    has_material: bool = True


@dataclass
class StoreState:
    """The custom key store: its id once created, and whether it is connected."""

    store_id: str | None = None
    connected: bool = False


@dataclass
class Ledger:
    """What the server acknowledged, and what it was doing when it died."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    store: StoreState = field(default_factory=StoreState)
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
        return [
            k
            for k, s in self.ledger.keys.items()
            if not s.pending_deletion
            and s.has_material
            and not _unavailable(self.ledger, s)
        ]

    def external_keys(self, *, has_material: bool) -> list[str]:
        return [
            k
            for k, s in self.ledger.keys.items()
            if s.origin == "EXTERNAL"
            and not s.pending_deletion
            and s.has_material == has_material
        ]

    def step(self) -> None:
        """One random operation; its effect enters the ledger only once answered."""
        keys = self.enabled_keys()
        choices = ["create"] * 3 if len(self.ledger.keys) < MAX_KEYS else []
        # An import costs an RSA key generation (a few hundred milliseconds), so
        # imported keys are a few among many, and imports come seldom.
        external = [s for s in self.ledger.keys.values() if s.origin == "EXTERNAL"]
        if len(self.ledger.keys) < MAX_KEYS and len(external) < MAX_EXTERNAL_KEYS:
            choices += ["create_external"]
        waiting = self.external_keys(has_material=False)
        if waiting:
            choices += ["import"]
        if len(keys) > 3 and self.external_keys(has_material=True):
            choices += ["drop_material"]
        if keys:
            choices += ["rotate", "policy", "tag", "delete", "cancel"]
            if len(self.ledger.aliases) < MAX_ALIASES:
                choices += ["alias"]
            if len(self.ledger.ciphertexts) < MAX_CIPHERTEXTS:
                choices += ["encrypt"] * 4 + ["data_key"] * 3
            if len(self.ledger.grants) < MAX_GRANTS:
                choices += ["grant"]
        choices += _store_choices(self.ledger)
        what = self.rng.choice(choices)
        key_id = self.rng.choice(keys) if keys else None
        if what == "import":
            key_id = self.rng.choice(waiting)
        elif what == "drop_material":
            key_id = self.rng.choice(self.external_keys(has_material=True))
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

    def _create_external(self, _: str | None) -> None:
        description = f"crash-{self.rng.getrandbits(32):08x}"
        self.ledger.unsettled.append(("create", description))
        meta = self.kms.create_key(Description=description, Origin="EXTERNAL")
        self.ledger.unsettled.pop()
        self.ledger.keys[meta["KeyMetadata"]["KeyId"]] = KeyState(
            description, origin="EXTERNAL", has_material=False
        )

    def _import(self, key_id: str | None) -> None:
        state = self.ledger.keys[str(key_id)]
        material = state.material or self.rng.randbytes(32)
        self.ledger.unsettled.append(("import", (key_id, material)))
        params = self.kms.get_parameters_for_import(
            KeyId=key_id,
            WrappingAlgorithm="RSAES_OAEP_SHA_256",
            WrappingKeySpec="RSA_2048",
        )
        self.kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=_wrap(params["PublicKey"], material),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        self.ledger.unsettled.pop()
        state.material, state.has_material = material, True

    def _drop_material(self, key_id: str | None) -> None:
        self.ledger.unsettled.append(("drop_material", key_id))
        self.kms.delete_imported_key_material(KeyId=key_id)
        self.ledger.unsettled.pop()
        self.ledger.keys[str(key_id)].has_material = False

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
        # Imported keys rotate only to new imported material (not driven here), and
        # keys in a custom key store not at all.
        if state.rotations >= MAX_ROTATIONS_PER_KEY or state.origin != "AWS_KMS":
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
        # A key of a disconnected custom key store would come back Unavailable,
        # hiding whether the cancel landed: such keys wait for a connected store.
        pending = [
            k
            for k, s in self.ledger.keys.items()
            if s.pending_deletion
            and (s.origin != "AWS_CLOUDHSM" or self.ledger.store.connected)
        ]
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

    # --- the custom key store ---

    def _store_create(self, _: str | None) -> None:
        name = f"crash-store-{self.rng.getrandbits(32):08x}"
        self.ledger.unsettled.append(("store_create", name))
        made = self.kms.create_custom_key_store(
            CustomKeyStoreName=name,
            CloudHsmClusterId=STORE_CLUSTER,
            TrustAnchorCertificate=STORE_ANCHOR,
            KeyStorePassword=STORE_PASSWORD,
        )
        self.ledger.unsettled.pop()
        self.ledger.store.store_id = made["CustomKeyStoreId"]

    def _store_connect(self, _: str | None) -> None:
        store_id = self.ledger.store.store_id
        # Connecting is asynchronous: the store is the ledger's to use once it says
        # CONNECTED. A kill before then leaves it connecting, which a start finishes.
        self.ledger.unsettled.append(("store_connect", store_id))
        self.kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        while _store_entry(self.kms, str(store_id))["ConnectionState"] != "CONNECTED":
            time.sleep(0.01)
        self.ledger.unsettled.pop()
        self.ledger.store.connected = True

    def _store_disconnect(self, _: str | None) -> None:
        store_id = self.ledger.store.store_id
        self.ledger.unsettled.append(("store_disconnect", store_id))
        self.kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        self.ledger.unsettled.pop()
        self.ledger.store.connected = False
        # DISCONNECTING refuses a connect (as on AWS) until the cluster's work is
        # done: wait for that, so the next connect is one the server takes.
        while _store_entry(self.kms, str(store_id))["ConnectionState"] != (
            "DISCONNECTED"
        ):
            time.sleep(0.01)

    def _create_in_store(self, _: str | None) -> None:
        description = f"crash-{self.rng.getrandbits(32):08x}"
        self.ledger.unsettled.append(("create", description))
        meta = self.kms.create_key(
            Description=description,
            Origin="AWS_CLOUDHSM",
            CustomKeyStoreId=self.ledger.store.store_id,
        )
        self.ledger.unsettled.pop()
        self.ledger.keys[meta["KeyMetadata"]["KeyId"]] = KeyState(
            description, origin="AWS_CLOUDHSM"
        )


def _unavailable(ledger: Ledger, state: KeyState) -> bool:
    """Whether a key is Unavailable: in the custom key store while it is not
    connected (a key pending deletion says so instead)."""
    return (
        state.origin == "AWS_CLOUDHSM"
        and not ledger.store.connected
        and not state.pending_deletion
    )


def _store_choices(ledger: Ledger) -> list[str]:
    """The custom key store operations the driver may take next."""
    store = ledger.store
    if store.store_id is None:
        return ["store_create"]
    if not store.connected:
        return ["store_connect"]
    choices = ["store_disconnect"]
    in_store = [s for s in ledger.keys.values() if s.origin == "AWS_CLOUDHSM"]
    if len(ledger.keys) < MAX_KEYS and len(in_store) < MAX_STORE_KEYS:
        choices += ["create_in_store"] * 2
    return choices


def _store_entry(kms: Any, store_id: str) -> dict[str, Any]:
    [entry] = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)[
        "CustomKeyStores"
    ]
    return dict(entry)


def _settle_store(kms: Any, ledger: Ledger, what: str, details: Any) -> None:
    """A custom key store operation a kill cut short: it happened whole or not."""
    if what == "store_create":
        found = [
            s["CustomKeyStoreId"]
            for s in kms.describe_custom_key_stores()["CustomKeyStores"]
            if s["CustomKeyStoreName"] == details
        ]
        _expect(len(found) <= 1, f"one CreateCustomKeyStore made {len(found)}")
        if found:
            ledger.store.store_id = found[0]
        return
    state = _store_entry(kms, str(details))["ConnectionState"]
    # A start reconnects a store that was connecting or connected before it
    # answers anything.
    _expect(state in ("CONNECTED", "DISCONNECTED"), f"the store is {state}")
    ledger.store.connected = state == "CONNECTED"


def _verify_store(kms: Any, ledger: Ledger) -> None:
    """The store is there, connected or not as acknowledged."""
    stores = kms.describe_custom_key_stores()["CustomKeyStores"]
    store_id = ledger.store.store_id
    _expect(
        [s["CustomKeyStoreId"] for s in stores] == ([store_id] if store_id else []),
        f"custom key stores {stores} differ from {store_id}",
    )
    if store_id is None:
        return
    want = "CONNECTED" if ledger.store.connected else "DISCONNECTED"
    _expect(stores[0]["ConnectionState"] == want, f"the store is not {want}")
    ledger.count("custom key store states")
    in_store = sum(1 for s in ledger.keys.values() if s.origin == "AWS_CLOUDHSM")
    ledger.count("keys in the custom key store", in_store)


class _KilledError(Exception):
    """The server died under a request."""


def _wrap(public_der: bytes, material: bytes) -> bytes:
    """EncryptedKeyMaterial: RSAES_OAEP_SHA_256 of the material, as AWS documents."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashes.SHA256()
    return public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    )


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
                meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
                external = meta["Origin"] == "EXTERNAL"
                _expect(
                    meta["KeyState"] == ("PendingImport" if external else "Enabled"),
                    f"{key_id}: a new key {meta['KeyState']}",
                )
                ledger.keys[key_id] = KeyState(
                    details, origin=meta["Origin"], has_material=not external
                )
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
        elif what == "import":
            key_id, material = details
            state_now = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
            _expect(state_now in ("PendingImport", "Enabled"), state_now)
            if state_now == "Enabled":
                state = ledger.keys[key_id]
                state.material, state.has_material = material, True
        elif what == "drop_material":
            state_now = kms.describe_key(KeyId=details)["KeyMetadata"]["KeyState"]
            _expect(state_now in ("PendingImport", "Enabled"), state_now)
            ledger.keys[details].has_material = state_now == "Enabled"
        elif what == "cancel":
            state_now = kms.describe_key(KeyId=details)["KeyMetadata"]["KeyState"]
            _expect(state_now in ("PendingDeletion", "Disabled", "Enabled"), state_now)
            if state_now == "Disabled":
                kms.enable_key(KeyId=details)
            ledger.keys[details].pending_deletion = state_now == "PendingDeletion"
        elif what.startswith("store_"):
            _settle_store(kms, ledger, what, details)
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
        expected = (
            "PendingDeletion"
            if state.pending_deletion
            else "Enabled"
            if state.has_material
            else "PendingImport"
        )
        if _unavailable(ledger, state):
            expected = "Unavailable"
        _expect(meta["KeyState"] == expected, f"{key_id}: {meta['KeyState']}")
        if state.material is not None:
            # The id of imported material is an HMAC of the key id under it: the
            # key still holds exactly what was imported.
            expected_id = hmac.new(
                state.material, key_id.encode(), hashlib.sha256
            ).hexdigest()
            _expect(
                meta.get("CurrentKeyMaterialId") == expected_id,
                f"{key_id}: imported material changed",
            )
            ledger.count("imported materials")
        _expect(_tags(kms, key_id) == state.tags, f"{key_id}: tags")
        if state.policy is not None:
            policy = kms.get_key_policy(KeyId=key_id)["Policy"]
            _expect(policy == state.policy, f"{key_id}: policy")
        if state.origin != "AWS_CLOUDHSM":  # AWS lists no rotations of these
            rotations = len(_rotations(kms, key_id))
            _expect(rotations == state.rotations, f"{key_id}: rotations")
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
    _verify_store(kms, ledger)
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
                state = ledger.keys[key_id]
                if (
                    state.pending_deletion
                    or not state.has_material
                    or _unavailable(ledger, state)
                ):
                    # Refused for the key's state, and for no other reason: the
                    # ciphertext decrypts again once a later cycle cancels the
                    # deletion or imports the material again.
                    _expect(
                        getattr(result, "code", None) == "KMSInvalidStateException",
                        f"a ciphertext of a key pending deletion or import: {result}",
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
    server = ServerProcess(data_dir, config=CONFIG)
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
