"""Custom key stores (AWS_CLOUDHSM) against a real server, through boto3: a key store's
whole life, every error AWS names for it, keys that are Unavailable while their store
is disconnected, the store's request quota, keyplane's cluster administration, restarts
(SIGTERM and SIGKILL) at every stage, and keys that live in a dedicated partition
served by the cluster's own batcher and threads.

The behaviour tested is AWS's, from the AWS KMS API Reference (CreateCustomKeyStore,
DescribeCustomKeyStores, ConnectCustomKeyStore, DisconnectCustomKeyStore,
UpdateCustomKeyStore, DeleteCustomKeyStore, CreateKey, GenerateRandom, and the
CustomKeyStoresListEntry and CustomKeyStoreInvalidStateException descriptions) and the
Developer Guide's "Key states of AWS KMS keys" (the Unavailable column).
"""

from __future__ import annotations

import datetime
import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyplane.client import BatchClient, BatchItemError, BatchRequestError
from tests.integration.conftest import (
    ACCESS_KEY,
    ACCOUNT,
    CREDENTIALS,
    SECRET_KEY,
    ServerProcess,
)

DAY = 86_400.0
PASSWORD = "kmsuser-Passw0rd"


def certificate(name: str) -> str:
    """A self-signed CA certificate in PEM, as customerCA.crt is."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


ANCHOR = certificate("customerCA")
OTHER_ANCHOR = certificate("anotherCA")

# Clusters the configuration declares: one per test that needs its own.
LIFE = "cluster-lifeaaaaaaa"
ERRORS = "cluster-errorsaaaaa"
SPARE = "cluster-spareaaaaaa"
BACKUP = "cluster-backupaaaaa"
ONE_HSM = "cluster-onehsmaaaaa"
NO_USER = "cluster-nouseraaaaa"
RESTART = "cluster-restartaaaa"
PACED = "cluster-pacedaaaaaa"

POLICY = (
    '{ Version = "2012-10-17", Statement = '
    '[{ Effect = "Allow", Action = ["kms:*", "keyplane:*"], Resource = "*" }] }'
)
ACCOUNTS = f"""
[[accounts]]
id = "{ACCOUNT}"

[[accounts.principals]]
type = "user"
name = "admin"
access_keys = [{{ id = "{ACCESS_KEY}", secret = "{SECRET_KEY}" }}]
policies = [{{ name = "admin", document = {POLICY} }}]
"""


def cluster_table(cluster_id: str, **settings: Any) -> str:
    lines = ["[[clusters]]", f'id = "{cluster_id}"']
    if "trust_anchor_file" not in settings:
        settings.setdefault("trust_anchor_certificate", ANCHOR)
    settings.setdefault("kmsuser_password", PASSWORD)
    for name, value in settings.items():
        if value is None:
            continue
        lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def config(*tables: str, quota: float = 1800.0) -> str:
    return (
        "[clock]\nadjustable = true\n\n"
        f"[custom_key_stores]\nconnect_seconds = 0.5\nrequest_quota = {quota}\n\n"
        + ACCOUNTS
        + "\n".join(tables)
    )


CONFIG = config(
    cluster_table(LIFE),
    cluster_table(ERRORS),
    cluster_table(SPARE),
    cluster_table(BACKUP, backup_of=SPARE),
    cluster_table(ONE_HSM, hsm_count=1),
    cluster_table(NO_USER, kmsuser_password=None),
    cluster_table(RESTART),
    cluster_table(PACED, extra_latency_ms=20.0),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cks"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kms(server: ServerProcess) -> Any:
    return server.client()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[BatchClient]:
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        yield client


# --- helpers ----------------------------------------------------------------------


def refused(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def wait_for(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def entry(kms: Any, store_id: str) -> dict[str, Any]:
    [found] = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)[
        "CustomKeyStores"
    ]
    return dict(found)


def settled(kms: Any, store_id: str) -> dict[str, Any]:
    """The store once it is neither CONNECTING nor DISCONNECTING."""
    return dict(
        wait_for(
            lambda: (
                e
                if (e := entry(kms, store_id))["ConnectionState"]
                not in ("CONNECTING", "DISCONNECTING")
                else None
            )
        )
    )


def create_store(kms: Any, name: str, cluster_id: str, **extra: Any) -> str:
    members = {
        "CustomKeyStoreName": name,
        "CloudHsmClusterId": cluster_id,
        "TrustAnchorCertificate": ANCHOR,
        "KeyStorePassword": PASSWORD,
        **extra,
    }
    return str(kms.create_custom_key_store(**members)["CustomKeyStoreId"])


def connect(kms: Any, store_id: str) -> dict[str, Any]:
    assert kms.connect_custom_key_store(CustomKeyStoreId=store_id) is not None
    return settled(kms, store_id)


def disconnect(kms: Any, store_id: str) -> dict[str, Any]:
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    return settled(kms, store_id)


def store_key(kms: Any, store_id: str, **extra: Any) -> dict[str, Any]:
    return dict(
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id, **extra)[
            "KeyMetadata"
        ]
    )


def metrics(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def advance(server: ServerProcess, seconds: float) -> None:
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        client.advance_clock(seconds)


# --- a key store's whole life -----------------------------------------------------


def test_a_key_store_through_its_whole_life(server, kms):
    sid = create_store(kms, "life", LIFE)
    assert sid.startswith("cks-") and len(sid) == 21
    found = entry(kms, sid)
    assert found["CustomKeyStoreName"] == "life"
    assert found["CloudHsmClusterId"] == LIFE
    assert found["CustomKeyStoreType"] == "AWS_CLOUDHSM"
    assert found["ConnectionState"] == "DISCONNECTED"
    assert "ConnectionErrorCode" not in found
    assert found["TrustAnchorCertificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert isinstance(found["CreationDate"], datetime.datetime)
    assert kms.describe_custom_key_stores(CustomKeyStoreName="life")[
        "CustomKeyStores"
    ] == [found]

    # Connecting answers at once; the store is CONNECTING, then CONNECTED.
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    assert entry(kms, sid)["ConnectionState"] == "CONNECTING"
    assert settled(kms, sid)["ConnectionState"] == "CONNECTED"

    meta = store_key(kms, sid, Description="in the store")
    assert meta["Origin"] == "AWS_CLOUDHSM"
    assert meta["CustomKeyStoreId"] == sid
    assert meta["CloudHsmClusterId"] == LIFE
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["CustomKeyStoreId"] == sid
    assert described["CloudHsmClusterId"] == LIFE

    sealed = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"in the cluster")
    blob = sealed["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in the cluster"
    data_key = kms.generate_data_key(KeyId=meta["KeyId"], KeySpec="AES_256")
    assert (
        kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
        == data_key["Plaintext"]
    )
    random = kms.generate_random(NumberOfBytes=32, CustomKeyStoreId=sid)
    assert len(random["Plaintext"]) == 32

    # Disconnected: the key is Unavailable, and says so.
    assert disconnect(kms, sid)["ConnectionState"] == "DISCONNECTED"
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Unavailable" and described["Enabled"] is False
    code, message = refused(kms.decrypt, CiphertextBlob=blob)
    assert code == "KMSInvalidStateException"
    assert message == f"{meta['Arn']} is unavailable."
    assert refused(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x")[0] == (
        "KMSInvalidStateException"
    )
    assert refused(kms.create_key, Origin="AWS_CLOUDHSM", CustomKeyStoreId=sid)[0] == (
        "CustomKeyStoreInvalidStateException"
    )
    assert refused(kms.generate_random, NumberOfBytes=8, CustomKeyStoreId=sid)[0] == (
        "CustomKeyStoreInvalidStateException"
    )

    # Connected again: the same material decrypts.
    assert connect(kms, sid)["ConnectionState"] == "CONNECTED"
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == (
        "Enabled"
    )
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in the cluster"

    # The store cannot go while it holds a key, in any state.
    disconnect(kms, sid)
    code, _ = refused(kms.delete_custom_key_store, CustomKeyStoreId=sid)
    assert code == "CustomKeyStoreHasCMKsException"
    scheduled = kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion"
    # Pending deletion shows through the disconnection.
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == (
        "PendingDeletion"
    )
    assert refused(kms.delete_custom_key_store, CustomKeyStoreId=sid)[0] == (
        "CustomKeyStoreHasCMKsException"
    )
    advance(server, 7 * DAY + 60)
    wait_for(lambda: meta["KeyId"] not in _key_ids(kms))
    kms.delete_custom_key_store(CustomKeyStoreId=sid)
    assert refused(kms.describe_custom_key_stores, CustomKeyStoreId=sid)[0] == (
        "CustomKeyStoreNotFoundException"
    )


def _key_ids(kms: Any) -> set[str]:
    return {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}


# --- errors -------------------------------------------------------------------------


def test_every_refusal_of_create_custom_key_store(kms, admin):
    assert refused(
        kms.create_custom_key_store,
        CustomKeyStoreName="nowhere",
        CloudHsmClusterId="cluster-nowhereaaaa",
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword=PASSWORD,
    )[0] == ("CloudHsmClusterNotFoundException")
    code, message = refused(
        kms.create_custom_key_store,
        CustomKeyStoreName="wrong-anchor",
        CloudHsmClusterId=ERRORS,
        TrustAnchorCertificate=OTHER_ANCHOR,
        KeyStorePassword=PASSWORD,
    )
    assert code == "IncorrectTrustAnchorException", message
    assert refused(
        kms.create_custom_key_store,
        CustomKeyStoreName="one-hsm",
        CloudHsmClusterId=ONE_HSM,
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword=PASSWORD,
    )[0] == ("CloudHsmClusterInvalidConfigurationException")
    assert refused(
        kms.create_custom_key_store,
        CustomKeyStoreName="external",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
    )[0] == ("UnsupportedOperationException")
    assert refused(
        kms.create_custom_key_store,
        CustomKeyStoreName="no-cluster",
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword=PASSWORD,
    )[0] == ("ValidationException")
    sid = create_store(kms, "errors", ERRORS)
    try:
        assert refused(
            kms.create_custom_key_store,
            CustomKeyStoreName="errors",
            CloudHsmClusterId=SPARE,
            TrustAnchorCertificate=ANCHOR,
            KeyStorePassword=PASSWORD,
        )[0] == ("CustomKeyStoreNameInUseException")
        assert refused(
            kms.create_custom_key_store,
            CustomKeyStoreName="same-cluster",
            CloudHsmClusterId=ERRORS,
            TrustAnchorCertificate=ANCHOR,
            KeyStorePassword=PASSWORD,
        )[0] == ("CloudHsmClusterInUseException")
        # An inactive cluster takes no key store.
        admin.update_cloudhsm_cluster(SPARE, Active=False)
        assert refused(
            kms.create_custom_key_store,
            CustomKeyStoreName="inactive",
            CloudHsmClusterId=SPARE,
            TrustAnchorCertificate=ANCHOR,
            KeyStorePassword=PASSWORD,
        )[0] == ("CloudHsmClusterNotActiveException")
    finally:
        admin.update_cloudhsm_cluster(SPARE, Active=True)
        kms.delete_custom_key_store(CustomKeyStoreId=sid)


def test_every_refused_state_transition(kms):
    sid = create_store(kms, "transitions", ERRORS)
    try:
        invalid = "CustomKeyStoreInvalidStateException"
        # DISCONNECTED: no disconnect, no key.
        assert refused(kms.disconnect_custom_key_store, CustomKeyStoreId=sid)[0] == (
            invalid
        )
        connect(kms, sid)
        # CONNECTED: rename only; no password, cluster or delete.
        kms.update_custom_key_store(CustomKeyStoreId=sid, NewCustomKeyStoreName="t2")
        assert entry(kms, sid)["CustomKeyStoreName"] == "t2"
        assert refused(
            kms.update_custom_key_store, CustomKeyStoreId=sid, KeyStorePassword=PASSWORD
        )[0] == (invalid)
        assert refused(kms.delete_custom_key_store, CustomKeyStoreId=sid)[0] == (
            invalid
        )
        # Connecting a connected store changes nothing.
        kms.connect_custom_key_store(CustomKeyStoreId=sid)
        assert entry(kms, sid)["ConnectionState"] == "CONNECTED"
        disconnect(kms, sid)
        # FAILED: no connect until disconnected (AWS's repair path).
        kms.update_custom_key_store(
            CustomKeyStoreId=sid, KeyStorePassword="not-the-password"
        )
        failed = connect(kms, sid)
        assert failed["ConnectionState"] == "FAILED"
        assert failed["ConnectionErrorCode"] == "INVALID_CREDENTIALS"
        assert refused(kms.connect_custom_key_store, CustomKeyStoreId=sid)[0] == (
            invalid
        )
        assert refused(kms.delete_custom_key_store, CustomKeyStoreId=sid)[0] == (
            invalid
        )
        disconnect(kms, sid)
        assert "ConnectionErrorCode" not in entry(kms, sid)
        kms.update_custom_key_store(CustomKeyStoreId=sid, KeyStorePassword=PASSWORD)
        assert connect(kms, sid)["ConnectionState"] == "CONNECTED"
        disconnect(kms, sid)
        for call in (
            kms.connect_custom_key_store,
            kms.disconnect_custom_key_store,
            kms.delete_custom_key_store,
        ):
            assert refused(call, CustomKeyStoreId="cks-00000000000000000")[0] == (
                "CustomKeyStoreNotFoundException"
            )
    finally:
        kms.delete_custom_key_store(CustomKeyStoreId=sid)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"KmsUserPassword": "changed-by-its-owner"}, "INVALID_CREDENTIALS"),
        ({"KmsUserLockedOut": True}, "USER_LOCKED_OUT"),
        ({"KmsUserLoggedIn": True}, "USER_LOGGED_IN"),
        ({"HsmCount": 0}, "INSUFFICIENT_CLOUDHSM_HSMS"),
        ({"DeleteKmsUser": True}, "USER_NOT_FOUND"),
    ],
)
def test_each_cluster_problem_fails_the_connection_with_its_code(
    kms, admin, change, code
):
    sid = create_store(kms, f"problem-{code.lower()}", ERRORS)
    try:
        admin.update_cloudhsm_cluster(ERRORS, **change)
        kms.connect_custom_key_store(CustomKeyStoreId=sid)
        failed = settled(kms, sid)
        assert (failed["ConnectionState"], failed["ConnectionErrorCode"]) == (
            "FAILED",
            code,
        )
    finally:
        admin.update_cloudhsm_cluster(
            ERRORS,
            HsmCount=2,
            KmsUserPassword=PASSWORD,
            KmsUserLockedOut=False,
            KmsUserLoggedIn=False,
        )
        disconnect(kms, sid)
        kms.delete_custom_key_store(CustomKeyStoreId=sid)


def test_a_cluster_without_kmsuser(kms):
    sid = create_store(kms, "no-user", NO_USER)
    try:
        failed = connect(kms, sid)
        assert failed["ConnectionErrorCode"] == "USER_NOT_FOUND"
    finally:
        disconnect(kms, sid)
        kms.delete_custom_key_store(CustomKeyStoreId=sid)


def test_keys_need_a_connected_store_of_two_hsms(kms, admin):
    sid = create_store(kms, "two-hsms", ERRORS)
    try:
        connect(kms, sid)
        admin.update_cloudhsm_cluster(ERRORS, HsmCount=1)
        assert refused(kms.create_key, Origin="AWS_CLOUDHSM", CustomKeyStoreId=sid)[
            0
        ] == ("CloudHsmClusterInvalidConfigurationException")
        admin.update_cloudhsm_cluster(ERRORS, HsmCount=2)
        assert refused(kms.create_key, Origin="AWS_CLOUDHSM")[0] == (
            "ValidationException"
        )
        assert refused(kms.create_key, Origin="EXTERNAL", CustomKeyStoreId=sid)[0] == (
            "UnsupportedOperationException"
        )
        assert refused(
            kms.create_key,
            Origin="AWS_CLOUDHSM",
            CustomKeyStoreId="cks-00000000000000000",
        )[0] == ("CustomKeyStoreNotFoundException")
        meta = store_key(kms, sid)
        # A connected store whose cluster lost every HSM cannot serve its keys.
        admin.update_cloudhsm_cluster(ERRORS, HsmCount=0)
        code, message = refused(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x")
        assert code == "KMSInvalidStateException"
        assert "no active HSM" in message
        admin.update_cloudhsm_cluster(ERRORS, HsmCount=2)
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
        # AWS rotates no key of a custom key store.
        for call in (kms.enable_key_rotation, kms.rotate_key_on_demand):
            code, message = refused(call, KeyId=meta["KeyId"])
            assert code == "UnsupportedOperationException"
            assert message == (
                f"{meta['Arn']} origin is AWS_CLOUDHSM which is not valid for this "
                "operation."
            )
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    finally:
        admin.update_cloudhsm_cluster(ERRORS, HsmCount=2)
        disconnect(kms, sid)


def test_a_store_moves_only_to_a_related_cluster(kms):
    sid = create_store(kms, "movable", SPARE)
    try:
        connect(kms, sid)
        meta = store_key(kms, sid)
        blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"backed up")[
            "CiphertextBlob"
        ]
        disconnect(kms, sid)
        assert refused(
            kms.update_custom_key_store, CustomKeyStoreId=sid, CloudHsmClusterId=LIFE
        )[0] == ("CloudHsmClusterNotRelatedException")
        assert refused(
            kms.update_custom_key_store,
            CustomKeyStoreId=sid,
            CloudHsmClusterId="cluster-nowhereaaaa",
        )[0] == ("CloudHsmClusterNotFoundException")
        kms.update_custom_key_store(CustomKeyStoreId=sid, CloudHsmClusterId=BACKUP)
        assert entry(kms, sid)["CloudHsmClusterId"] == BACKUP
        connect(kms, sid)
        assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"][
            "CloudHsmClusterId"
        ] == (BACKUP)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"backed up"
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    finally:
        disconnect(kms, sid)


def test_describe_pages_and_finds_by_name(kms):
    made = [create_store(kms, f"page-{i}", c) for i, c in enumerate((NO_USER, PACED))]
    try:
        seen, marker = [], {}
        while True:
            page = kms.describe_custom_key_stores(Limit=1, **marker)
            seen += [s["CustomKeyStoreId"] for s in page["CustomKeyStores"]]
            if not page["Truncated"]:
                break
            marker = {"Marker": page["NextMarker"]}
        assert set(made) <= set(seen) and len(seen) == len(set(seen))
        assert refused(kms.describe_custom_key_stores, Marker="not-a-marker")[0] == (
            "InvalidMarkerException"
        )
        assert refused(kms.describe_custom_key_stores, CustomKeyStoreName="none")[
            0
        ] == ("CustomKeyStoreNotFoundException")
    finally:
        for sid in made:
            kms.delete_custom_key_store(CustomKeyStoreId=sid)


# --- dedicated tenancy ------------------------------------------------------------


def test_store_keys_run_in_a_dedicated_partition_on_the_clusters_threads(
    server, kms, admin
):
    sid = create_store(kms, "dedicated", PACED)
    try:
        connect(kms, sid)
        meta = store_key(kms, sid)
        shared_key = kms.create_key()["KeyMetadata"]["KeyId"]
        before = metrics(server)
        for _ in range(5):
            kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"dedicated")
        after = metrics(server)
        # The unauthenticated endpoint counts stores' work in aggregate only.
        totals = after["custom_key_stores"]
        assert set(totals) == {"connected", "batches", "batched_items"}
        assert totals["batched_items"] == (
            before["custom_key_stores"]["batched_items"] + 5
        )
        assert sid not in json.dumps(after) and PACED not in json.dumps(after)
        # None of it went through the shared fleet's batcher.
        assert after["batched_items"] == before["batched_items"]
        kms.encrypt(KeyId=shared_key, Plaintext=b"shared")
        assert metrics(server)["batched_items"] == before["batched_items"] + 1

        [described] = admin.describe_cloudhsm_clusters(PACED)
        assert described["Tenancy"] == "dedicated"
        assert described["Partition"] == f"dedicated:{PACED}"
        assert described["CustomKeyStoreIds"] == [sid]
        assert described["Keys"] == 1
        assert described["ExtraLatencyMs"] == 20.0
        assert described["Worker"]["Threads"] == 2
        assert described["Worker"]["BatchedItems"] >= 5
        names = described["Worker"]["ThreadNames"]
        assert names and all(t.startswith(f"keyplane-{PACED}") for t in names)
        assert {"Username": "kmsuser", "Role": "CU", "LockedOut": False} | {
            "LoggedIn": True
        } in described["Users"]
        assert PASSWORD not in json.dumps(described)
        # Every round trip to this cluster costs its configured 20 ms.
        started = time.perf_counter()
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"slow")
        assert time.perf_counter() - started >= 0.02
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    finally:
        disconnect(kms, sid)


def test_clusters_made_through_the_admin_operation(kms, admin):
    made = admin.create_cloudhsm_cluster(
        TrustAnchorCertificate=ANCHOR, HsmCount=3, KmsUserPassword=PASSWORD
    )
    cluster_id = made["ClusterId"]
    assert cluster_id.startswith("cluster-") and made["HsmCount"] == 3
    assert made["State"] == "ACTIVE" and made["Tenancy"] == "dedicated"
    with pytest.raises(BatchRequestError) as exc:
        admin.create_cloudhsm_cluster(
            ClusterId=cluster_id, TrustAnchorCertificate=ANCHOR
        )
    assert exc.value.code == "AlreadyExistsException"
    with pytest.raises(BatchRequestError) as exc:
        admin.update_cloudhsm_cluster("cluster-nowhereaaaa", HsmCount=2)
    assert exc.value.code == "CloudHsmClusterNotFoundException"
    with pytest.raises(BatchRequestError) as exc:
        admin.update_cloudhsm_cluster(cluster_id, HsmCount="two")
    assert exc.value.code == "SerializationException"
    with pytest.raises(BatchRequestError) as exc:
        admin.update_cloudhsm_cluster(cluster_id, HsmCount=29)
    assert exc.value.code == "ValidationException"
    sid = create_store(kms, "admin-made", cluster_id)
    try:
        assert connect(kms, sid)["ConnectionState"] == "CONNECTED"
        # A connected store's login is its own: nobody else logs in as kmsuser.
        with pytest.raises(BatchRequestError) as exc:
            admin.update_cloudhsm_cluster(cluster_id, KmsUserLoggedIn=True)
        assert exc.value.code == "ConflictException"
    finally:
        disconnect(kms, sid)
        kms.delete_custom_key_store(CustomKeyStoreId=sid)


# --- the store's request quota ------------------------------------------------------


def test_the_store_quota_throttles_its_keys(tmp_path):
    proc = ServerProcess(
        tmp_path / "quota", config=config(cluster_table(LIFE), quota=2)
    )
    proc.start()
    try:
        kms = proc.client()
        sid = create_store(kms, "throttled", LIFE)
        connect(kms, sid)
        meta = store_key(kms, sid)
        plain = kms.create_key()["KeyMetadata"]["KeyId"]
        codes, messages = [], []
        for _ in range(30):
            try:
                kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"q")
                codes.append("ok")
            except ClientError as exc:
                error = exc.response["Error"]
                codes.append(error["Code"])
                messages.append(error["Message"])
        # A bucket of 2 a second starts full: two go through, then the refill rate.
        assert codes[:2] == ["ok"] * 2
        assert "ThrottlingException" in codes
        assert messages and all(sid in m for m in messages)
        # Keys outside the store are not the store's to throttle.
        for _ in range(30):
            kms.encrypt(KeyId=plain, Plaintext=b"q")
        # The batch extension counts each item against the store's quota.
        time.sleep(1.5)
        with BatchClient(proc.endpoint, credentials=CREDENTIALS) as client:
            results = client.encrypt(meta["KeyId"], [b"item"] * 25)
        failed = [r for r in results if isinstance(r, BatchItemError)]
        assert failed and all(r.code == "ThrottlingException" for r in failed)
        assert 1 <= len(results) - len(failed) <= 4
    finally:
        proc.stop()


# --- restarts -------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=str)
def test_state_and_material_survive_a_restart_at_every_stage(tmp_path, sig):
    # The trust anchor from a file beside the configuration, as a user keeps it.
    proc = ServerProcess(
        tmp_path / "restarts",
        config=config(cluster_table(RESTART, trust_anchor_file="customerCA.crt")),
    )
    proc.data_dir.mkdir(parents=True)
    (proc.data_dir / "customerCA.crt").write_text(ANCHOR)
    proc.start()
    try:
        kms = proc.client()

        def restart() -> Any:
            proc.restart(sig)
            return proc.client()

        sid = create_store(kms, "restarts", RESTART)
        kms = restart()
        assert entry(kms, sid)["ConnectionState"] == "DISCONNECTED"
        assert entry(kms, sid)["CloudHsmClusterId"] == RESTART

        # Stopped while connecting: it connects when the server starts.
        kms.connect_custom_key_store(CustomKeyStoreId=sid)
        kms = restart()
        assert settled(kms, sid)["ConnectionState"] == "CONNECTED"
        kms = restart()
        assert entry(kms, sid)["ConnectionState"] == "CONNECTED"

        meta = store_key(kms, sid)
        blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"survives")["CiphertextBlob"]
        kms = restart()
        described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
        assert described["KeyState"] == "Enabled"
        assert described["CustomKeyStoreId"] == sid
        assert described["CurrentKeyMaterialId"] == meta["CurrentKeyMaterialId"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"

        disconnect(kms, sid)
        kms.disable_key(KeyId=meta["KeyId"])
        kms = restart()
        assert entry(kms, sid)["ConnectionState"] == "DISCONNECTED"
        assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == (
            "Unavailable"
        )
        assert refused(kms.decrypt, CiphertextBlob=blob)[0] == (
            "KMSInvalidStateException"
        )

        connect(kms, sid)
        kms = restart()
        # The state set while unavailable is the key's own once it is back.
        assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == (
            "Disabled"
        )
        kms.enable_key(KeyId=meta["KeyId"])
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"

        # A failed connection, and its error code, survive too.
        disconnect(kms, sid)
        kms.update_custom_key_store(CustomKeyStoreId=sid, KeyStorePassword="wrong-pw")
        connect(kms, sid)
        kms = restart()
        assert (
            entry(kms, sid)["ConnectionState"],
            entry(kms, sid).get("ConnectionErrorCode"),
        ) == ("FAILED", "INVALID_CREDENTIALS")
        disconnect(kms, sid)
        kms.update_custom_key_store(CustomKeyStoreId=sid, KeyStorePassword=PASSWORD)
        connect(kms, sid)

        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
        kms = restart()
        assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == (
            "PendingDeletion"
        )
        disconnect(kms, sid)
        assert refused(kms.delete_custom_key_store, CustomKeyStoreId=sid)[0] == (
            "CustomKeyStoreHasCMKsException"
        )
        advance(proc, 7 * DAY + 60)
        wait_for(lambda: meta["KeyId"] not in _key_ids(kms))
        kms = restart()
        assert meta["KeyId"] not in _key_ids(kms)
        kms.delete_custom_key_store(CustomKeyStoreId=sid)
        kms = restart()
        assert kms.describe_custom_key_stores()["CustomKeyStores"] == []
    finally:
        proc.stop()
    assert "Traceback" not in proc.output, proc.output
