"""Key rotation against a real server with an adjustable clock: versioned key material,
EnableKeyRotation/DisableKeyRotation/GetKeyRotationStatus, RotateKeyOnDemand and its
limit, ListKeyRotations, automatic rotation when the clock passes a key's date, the
key states that refuse rotation, restarts, and what rotation must leave alone.

The behaviour tested is AWS's, from the AWS KMS API Reference (EnableKeyRotation,
GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations) and the Developer Guide's
"Key states of AWS KMS keys"; keyplane's own AdvanceClock is in docs/rotation.md.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from keyplane.client import BatchClient, BatchRequestError
from tests.integration.conftest import (
    ACCESS_KEY,
    ACCOUNT,
    CREDENTIALS,
    SECRET_KEY,
    ServerProcess,
    kms_client,
    signed_headers,
)

DAY = 86_400.0
MATERIAL_ID = re.compile(r"[0-9a-f]{64}")
ON_DEMAND_LIMIT = 25  # RotateKeyOnDemand's per-key maximum in the current API Reference

# Besides "admin" (kms:* and keyplane:*): "operator" may do anything in KMS but nothing
# of keyplane's own, so not move the clock; the account's root needs no policy at all;
# "grantee" has no identity policy and gets only what a grant gives.
OPERATOR = ("AKIAOPERATOREXAMPLE1", "operator-secret")
ROOT = ("AKIAROOTROOTEXAMPLE1", "root-secret")
GRANTEE = ("AKIAGRANTEEEXAMPLE01", "grantee-secret")


def _policy(*actions: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
            ],
        }
    )


def _user(name: str, key: tuple[str, str], policy: str | None) -> str:
    text = (
        f'[[accounts.principals]]\ntype = "user"\nname = "{name}"\n'
        f'access_keys = [{{ id = "{key[0]}", secret = "{key[1]}" }}]\n'
    )
    if policy is not None:
        text += f"policies = [{{ name = \"p\", document = '{policy}' }}]\n"
    return text


ACCOUNTS = (
    f'[[accounts]]\nid = "{ACCOUNT}"\n'
    f'root_access_keys = [{{ id = "{ROOT[0]}", secret = "{ROOT[1]}" }}]\n'
    + _user("admin", (ACCESS_KEY, SECRET_KEY), _policy("kms:*", "keyplane:*"))
    + _user("operator", OPERATOR, _policy("kms:*"))
    + _user("grantee", GRANTEE, None)
)
CONFIG = "[clock]\nadjustable = true\n\n" + ACCOUNTS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("rotation"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kms(server: ServerProcess) -> Any:
    return server.client()


@pytest.fixture
def key(kms: Any) -> dict[str, str]:
    meta = kms.create_key(Description="rotation test")["KeyMetadata"]
    return {"id": meta["KeyId"], "arn": meta["Arn"]}


# --- helpers ----------------------------------------------------------------------


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def refused(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return error(exc)


def advance(server: ServerProcess, seconds: float) -> float:
    """Move the server's clock forward; its new time, in seconds since the epoch."""
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        return client.advance_clock(seconds)


def server_now(server: ServerProcess) -> float:
    """The server's clock. AdvanceClock is the only way to read it; a millisecond is
    nothing beside the day-sized dates these tests compare."""
    return advance(server, 0.001)


def current_material(kms: Any, key_id: str) -> str:
    material = kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert MATERIAL_ID.fullmatch(material), material
    return str(material)


def rotations(kms: Any, key_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every ListKeyRotations entry, following NextMarker."""
    seen: list[dict[str, Any]] = []
    marker: dict[str, str] = {}
    while True:
        page = kms.list_key_rotations(KeyId=key_id, **kwargs, **marker)
        seen += page["Rotations"]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return seen
        marker = {"Marker": page["NextMarker"]}


def wait_for(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``what()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def automatic(kms: Any, key_id: str) -> list[dict[str, Any]]:
    return [r for r in rotations(kms, key_id) if r["RotationType"] == "AUTOMATIC"]


def current_in(listed: list[dict[str, Any]]) -> list[str]:
    """The KeyMaterialIds a ListKeyRotations answer marks CURRENT."""
    return [r["KeyMaterialId"] for r in listed if r["KeyMaterialState"] == "CURRENT"]


def close_to(when: Any, seconds: float, slack: float = 1.0) -> bool:
    return abs(when.timestamp() - seconds) <= slack


# --- enabling, disabling and reading the rotation status --------------------------


def test_a_new_key_has_one_material_and_no_rotation(kms: Any, key: dict) -> None:
    material = current_material(kms, key["id"])
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert (status["KeyRotationEnabled"], status["KeyId"]) == (False, key["arn"])
    assert "RotationPeriodInDays" not in status and "NextRotationDate" not in status
    page = kms.list_key_rotations(KeyId=key["id"])
    assert (page["Rotations"], page["Truncated"]) == ([], False)
    # ALL_KEY_MATERIAL adds the first material, which has no rotation date or type.
    (first,) = rotations(kms, key["id"], IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert first["KeyId"] == key["id"]  # as in AWS's list-key-rotations example
    assert first["KeyMaterialId"] == material
    assert first["KeyMaterialState"] == "CURRENT"
    assert "RotationDate" not in first and "RotationType" not in first
    # The material is the same every time it is asked for.
    assert current_material(kms, key["arn"]) == material


def test_enable_with_the_default_period_then_disable(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    before = server_now(server)
    kms.enable_key_rotation(KeyId=key["id"])
    after = server_now(server)
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert status["KeyRotationEnabled"] is True
    assert status["KeyId"] == key["arn"]
    assert status["RotationPeriodInDays"] == 365
    # The first automatic rotation is one period after the enable date.
    next_at = status["NextRotationDate"].timestamp()
    assert before + 365 * DAY - 1 <= next_at <= after + 365 * DAY + 1
    kms.disable_key_rotation(KeyId=key["arn"])
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert status["KeyRotationEnabled"] is False
    assert "RotationPeriodInDays" not in status and "NextRotationDate" not in status
    # Disabling what is disabled is not an error, on AWS either.
    kms.disable_key_rotation(KeyId=key["id"])
    assert rotations(kms, key["id"]) == []


@pytest.mark.parametrize("days", [90, 730, 2560])
def test_enable_with_a_custom_period(
    server: ServerProcess, kms: Any, key: dict, days: int
) -> None:
    before = server_now(server)
    kms.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=days)
    after = server_now(server)
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (
        True,
        days,
    )
    next_at = status["NextRotationDate"].timestamp()
    assert before + days * DAY - 1 <= next_at <= after + days * DAY + 1
    # EnableKeyRotation on a key that rotates already changes its period.
    kms.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=400)
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 400)


@pytest.mark.parametrize(
    ("days", "constraint"),
    [
        (89, "Member must have value greater than or equal to 90"),
        (2561, "Member must have value less than or equal to 2560"),
    ],
)
def test_a_period_out_of_range_is_refused(
    server: ServerProcess, key: dict, days: int, constraint: str
) -> None:
    # boto3 checks the range itself; other clients do not, so the server must.
    raw = server.client(parameter_validation=False)
    assert refused(
        raw.enable_key_rotation, KeyId=key["id"], RotationPeriodInDays=days
    ) == (
        "ValidationException",
        f"1 validation error detected: Value '{days}' at 'rotationPeriodInDays' "
        f"failed to satisfy constraint: {constraint}",
    )
    assert raw.get_key_rotation_status(KeyId=key["id"])["KeyRotationEnabled"] is False


# --- on-demand rotation -----------------------------------------------------------


def test_rotate_on_demand(server: ServerProcess, kms: Any, key: dict) -> None:
    key_id, arn = key["id"], key["arn"]
    kms.enable_key_rotation(KeyId=key_id)
    scheduled = kms.get_key_rotation_status(KeyId=key_id)["NextRotationDate"]
    first = current_material(kms, key_id)
    old_blob = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    old_data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert old_data_key["KeyMaterialId"] == first
    sealed = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)
    assert sealed["KeyMaterialId"] == first

    started = server_now(server)
    out = kms.rotate_key_on_demand(KeyId=key_id)
    finished = server_now(server)
    # The API Reference says only that KeyId identifies the key; AWS's examples show
    # the key id.
    assert out["KeyId"] == key_id

    second = current_material(kms, key_id)
    assert second != first
    new_blob = kms.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    # The newest material encrypts; every material still decrypts, and Decrypt names
    # the one that made the ciphertext.
    for blob, plaintext, material in (
        (old_blob, b"before", first),
        (new_blob, b"after", second),
    ):
        opened = kms.decrypt(CiphertextBlob=blob)
        assert (opened["Plaintext"], opened["KeyId"]) == (plaintext, arn)
        assert opened["KeyMaterialId"] == material
    opened = kms.decrypt(CiphertextBlob=old_data_key["CiphertextBlob"])
    assert opened["Plaintext"] == old_data_key["Plaintext"]
    assert opened["KeyMaterialId"] == first
    assert kms.decrypt(CiphertextBlob=sealed["CiphertextBlob"])["KeyMaterialId"] == (
        first
    )
    fresh = kms.generate_data_key(KeyId=key_id, NumberOfBytes=32)
    assert fresh["KeyMaterialId"] == second
    moved = kms.re_encrypt(CiphertextBlob=old_blob, DestinationKeyId=key_id)
    assert (moved["SourceKeyMaterialId"], moved["DestinationKeyMaterialId"]) == (
        first,
        second,
    )
    again = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])
    assert (again["Plaintext"], again["KeyMaterialId"]) == (b"before", second)

    (rotation,) = rotations(kms, key_id)
    assert rotation["KeyId"] == key_id
    assert rotation["KeyMaterialId"] == second
    assert rotation["KeyMaterialState"] == "CURRENT"
    assert rotation["RotationType"] == "ON_DEMAND"
    assert started - 1 <= rotation["RotationDate"].timestamp() <= finished + 1
    listed = rotations(kms, arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert len(listed) == 2 and rotation in listed
    (original,) = [r for r in listed if r["KeyMaterialId"] == first]
    assert original["KeyMaterialState"] == "NON_CURRENT"
    assert "RotationDate" not in original and "RotationType" not in original
    assert rotations(kms, key_id, IncludeKeyMaterial="ROTATIONS_ONLY") == [rotation]

    # On-demand rotation leaves the automatic schedule where it was.
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["NextRotationDate"] == scheduled


def test_rotate_on_demand_without_automatic_rotation(kms: Any, key: dict) -> None:
    first = current_material(kms, key["id"])
    kms.rotate_key_on_demand(KeyId=key["arn"])
    assert current_material(kms, key["id"]) != first
    # It does not turn automatic rotation on.
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status


def test_list_key_rotations_pages(kms: Any, key: dict) -> None:
    for _ in range(3):
        kms.rotate_key_on_demand(KeyId=key["id"])
    current = current_material(kms, key["id"])
    for include, count in (("ROTATIONS_ONLY", 3), ("ALL_KEY_MATERIAL", 4)):
        whole = kms.list_key_rotations(KeyId=key["id"], IncludeKeyMaterial=include)
        assert whole["Truncated"] is False and len(whole["Rotations"]) == count
        paged, marker, pages = [], {}, 0
        while True:
            page = kms.list_key_rotations(
                KeyId=key["id"], IncludeKeyMaterial=include, Limit=1, **marker
            )
            pages += 1
            assert len(page["Rotations"]) <= 1
            paged += page["Rotations"]
            if not page["Truncated"]:
                break
            marker = {"Marker": page["NextMarker"]}
        assert pages >= count
        assert paged == whole["Rotations"]
        materials = [r["KeyMaterialId"] for r in paged]
        assert len(set(materials)) == count
        assert current_in(paged) == [current]
    code, _ = refused(kms.list_key_rotations, KeyId=key["id"], Marker="not-a-marker")
    assert code == "InvalidMarkerException"


def test_the_on_demand_rotation_limit(kms: Any, key: dict) -> None:
    for _ in range(ON_DEMAND_LIMIT):
        kms.rotate_key_on_demand(KeyId=key["id"])
    last = current_material(kms, key["id"])
    code, _ = refused(kms.rotate_key_on_demand, KeyId=key["id"])
    assert code == "LimitExceededException"
    # The refusal changed nothing: the key encrypts with the 25th rotation's material.
    assert current_material(kms, key["id"]) == last
    listed = rotations(kms, key["id"])
    assert len(listed) == ON_DEMAND_LIMIT
    assert {r["RotationType"] for r in listed} == {"ON_DEMAND"}
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyMaterialId"] == last


# --- automatic rotation through the adjustable clock --------------------------------


def test_automatic_rotation_when_the_date_passes(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    first = current_material(kms, key["id"])
    old_blob = kms.encrypt(KeyId=key["id"], Plaintext=b"old")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=90)
    due = kms.get_key_rotation_status(KeyId=key["id"])["NextRotationDate"].timestamp()
    now = advance(server, 91 * DAY)
    assert now >= due
    # boto3 signs with the real time and still gets in: SigV4's skew check does not
    # read the adjusted clock.
    (rotation,) = wait_for(lambda: automatic(kms, key["id"]))
    assert rotation["KeyMaterialState"] == "CURRENT"
    assert due - 1 <= rotation["RotationDate"].timestamp() <= server_now(server) + 1
    assert rotation["KeyMaterialId"] == current_material(kms, key["id"]) != first
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert status["KeyRotationEnabled"] is True
    assert close_to(status["NextRotationDate"], due + 90 * DAY)
    opened = kms.decrypt(CiphertextBlob=old_blob)
    assert (opened["Plaintext"], opened["KeyMaterialId"]) == (b"old", first)
    # One rotation per date that passed: the next is 89 days away.
    assert len(rotations(kms, key["id"])) == 1


def test_disabled_keys_and_keys_pending_deletion_are_not_rotated(
    server: ServerProcess, kms: Any
) -> None:
    # GetKeyRotationStatus, API Reference: KMS does not rotate the material of a key
    # that is disabled or pending deletion. A key that is enabled shows the scheduler
    # ran.
    made = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
    enabled, disabled, pending = made
    for key_id in made:
        kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    materials = {key_id: current_material(kms, key_id) for key_id in made}
    kms.disable_key(KeyId=disabled)
    # The date passes 6 days into a 30-day deletion window, so the key is still
    # there to look at.
    advance(server, 85 * DAY)
    kms.schedule_key_deletion(KeyId=pending, PendingWindowInDays=30)
    advance(server, 6 * DAY)
    wait_for(lambda: automatic(kms, enabled))
    time.sleep(2.5)  # more than two scheduler passes after the one that rotated
    for key_id in (disabled, pending):
        assert rotations(kms, key_id) == []
        assert current_material(kms, key_id) == materials[key_id]
    assert kms.get_key_rotation_status(KeyId=disabled)["KeyRotationEnabled"] is True
    kms.cancel_key_deletion(KeyId=pending)


def test_on_demand_rotation_conflicts_with_a_due_automatic_one(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    # ConflictException, API Reference: refused while an automatic rotation is in
    # progress or due to begin within 20 minutes.
    kms.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=90)
    advance(server, 90 * DAY - 10 * 60)
    code, _ = refused(kms.rotate_key_on_demand, KeyId=key["id"])
    assert code == "ConflictException"
    assert rotations(kms, key["id"]) == []


def test_the_clock_moves_deletion_windows_too(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    now = server_now(server)
    scheduled = kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7)
    assert close_to(scheduled["DeletionDate"], now + 7 * DAY, slack=5)
    advance(server, 8 * DAY)

    def gone() -> str | None:
        try:
            kms.describe_key(KeyId=key["id"])
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return None

    assert wait_for(gone) == "NotFoundException"


def test_advance_clock_needs_its_permission(server: ServerProcess) -> None:
    before = server_now(server)
    with (
        BatchClient(server.endpoint, credentials=Credentials(*OPERATOR)) as client,
        pytest.raises(BatchRequestError) as exc,
    ):
        client.advance_clock(30 * DAY)
    assert (exc.value.status, exc.value.code) == (400, "AccessDeniedException")
    assert "keyplane:AdvanceClock" in exc.value.message
    # The refused request moved nothing.
    assert server_now(server) - before < 60
    # An account's root needs no identity policy.
    with BatchClient(server.endpoint, credentials=Credentials(*ROOT)) as client:
        assert client.advance_clock(1) >= before + 1


def _post(server: ServerProcess, target: str, body: bytes) -> tuple[int, dict]:
    host = server.endpoint.split("//", 1)[1]
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.request("POST", "/", body, signed_headers(body, target, host))
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_advance_clock_on_the_wire(server: ServerProcess) -> None:
    before = server_now(server)
    status, reply = _post(server, "KeyplaneService.AdvanceClock", b'{"Seconds": 60}')
    assert status == 200 and set(reply) == {"Now"}
    assert before + 60 <= reply["Now"] <= before + 60 + 30
    for bad in (b'{"Seconds": 0}', b'{"Seconds": -5}', b'{"Seconds": "x"}', b"{}"):
        status, reply = _post(server, "KeyplaneService.AdvanceClock", bad)
        assert status == 400, bad
        assert reply["__type"] in ("ValidationException", "SerializationException")
    # The refused requests moved nothing.
    assert server_now(server) - before < 60 + 30


def test_advance_clock_needs_an_adjustable_clock(tmp_path: Any) -> None:
    fixed = ServerProcess(tmp_path / "fixed", config=ACCOUNTS)
    fixed.start()
    try:
        with (
            BatchClient(fixed.endpoint, credentials=CREDENTIALS) as client,
            pytest.raises(BatchRequestError) as exc,
        ):
            client.advance_clock(DAY)
        assert (exc.value.status, exc.value.code) == (
            400,
            "UnsupportedOperationException",
        )
        # Rotation itself works without the adjustable clock.
        kms = fixed.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.rotate_key_on_demand(KeyId=key_id)
        assert len(rotations(kms, key_id)) == 1
    finally:
        fixed.stop()


# --- key states ---------------------------------------------------------------------


def test_a_disabled_key(kms: Any, key: dict) -> None:
    kms.enable_key_rotation(KeyId=key["id"])
    kms.rotate_key_on_demand(KeyId=key["id"])
    kms.disable_key(KeyId=key["id"])
    for call, args in (
        (kms.enable_key_rotation, {}),
        (kms.enable_key_rotation, {"RotationPeriodInDays": 100}),
        (kms.disable_key_rotation, {}),
        (kms.rotate_key_on_demand, {}),
    ):
        assert refused(call, KeyId=key["id"], **args) == (
            "DisabledException",
            f"{key['arn']} is disabled.",
        )
    # Reading works, and disabling the key does not change its rotation status.
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 365)
    assert len(rotations(kms, key["id"])) == 1
    assert len(rotations(kms, key["id"], IncludeKeyMaterial="ALL_KEY_MATERIAL")) == 2


def test_a_key_pending_deletion(kms: Any, key: dict) -> None:
    kms.enable_key_rotation(KeyId=key["id"])
    kms.rotate_key_on_demand(KeyId=key["id"])
    kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7)
    for call, args in (
        (kms.enable_key_rotation, {}),
        (kms.disable_key_rotation, {}),
        (kms.rotate_key_on_demand, {}),
    ):
        assert refused(call, KeyId=key["id"], **args) == (
            "KMSInvalidStateException",
            f"{key['arn']} is pending deletion.",
        )
    # GetKeyRotationStatus, API Reference: while a key is pending deletion its
    # rotation status is false; cancelling the deletion brings back true.
    assert kms.get_key_rotation_status(KeyId=key["id"])["KeyRotationEnabled"] is False
    assert len(rotations(kms, key["id"])) == 1
    assert len(rotations(kms, key["id"], IncludeKeyMaterial="ALL_KEY_MATERIAL")) == 2
    kms.cancel_key_deletion(KeyId=key["id"])
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 365)


def test_an_unknown_key(kms: Any) -> None:
    missing = str(uuid.uuid4())
    for call in (
        kms.enable_key_rotation,
        kms.disable_key_rotation,
        kms.get_key_rotation_status,
        kms.rotate_key_on_demand,
        kms.list_key_rotations,
    ):
        code, message = refused(call, KeyId=missing)
        assert code == "NotFoundException" and missing in message


# --- what rotation keeps ------------------------------------------------------------


def test_rotation_keeps_aliases_grants_and_the_key_policy(
    server: ServerProcess, kms: Any, key: dict
) -> None:
    key_id, arn = key["id"], key["arn"]
    alias = f"alias/rotating-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    policy = kms.get_key_policy(KeyId=key_id)["Policy"].replace(
        "Enable IAM User Permissions", "Enable IAM policies, across rotations"
    )
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    grantee_arn = f"arn:aws:iam::{ACCOUNT}:user/grantee"
    grant = kms.create_grant(
        KeyId=key_id, GranteePrincipal=grantee_arn, Operations=["Encrypt", "Decrypt"]
    )
    grantee = kms_client(server.endpoint, *GRANTEE)
    old_blob = grantee.encrypt(KeyId=key_id, Plaintext=b"granted")["CiphertextBlob"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "team", "TagValue": "payments"}])
    grants = kms.list_grants(KeyId=key_id)["Grants"]
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]

    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    kms.rotate_key_on_demand(KeyId=key_id)

    assert kms.get_key_policy(KeyId=key_id)["Policy"] == policy
    assert kms.list_grants(KeyId=key_id)["Grants"] == grants
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "team", "TagValue": "payments"}
    ]
    after = kms.describe_key(KeyId=alias)["KeyMetadata"]
    assert after["CurrentKeyMaterialId"] != meta["CurrentKeyMaterialId"]
    changed = {k for k in meta.keys() | after.keys() if meta.get(k) != after.get(k)}
    assert changed == {"CurrentKeyMaterialId"}
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=key_id)["Aliases"]] == [
        alias
    ]
    # The grant still works, on old ciphertexts and new, by key id and by alias.
    assert grantee.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"granted"
    new_blob = grantee.encrypt(KeyId=alias, Plaintext=b"new")["CiphertextBlob"]
    opened = grantee.decrypt(CiphertextBlob=new_blob)
    assert opened["KeyId"] == arn
    assert opened["KeyMaterialId"] == after["CurrentKeyMaterialId"]
    kms.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])


def test_rotation_operations_are_authorized(server: ServerProcess, key: dict) -> None:
    grantee = kms_client(server.endpoint, *GRANTEE)
    for call, action in (
        (grantee.enable_key_rotation, "kms:EnableKeyRotation"),
        (grantee.disable_key_rotation, "kms:DisableKeyRotation"),
        (grantee.get_key_rotation_status, "kms:GetKeyRotationStatus"),
        (grantee.rotate_key_on_demand, "kms:RotateKeyOnDemand"),
        (grantee.list_key_rotations, "kms:ListKeyRotations"),
    ):
        code, message = refused(call, KeyId=key["id"])
        assert code == "AccessDeniedException"
        assert f"perform: {action} on resource: {key['arn']}" in message


# --- restarts -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_rotations_survive_a_restart(tmp_path: Any, sig: int) -> None:
    server = ServerProcess(tmp_path / "data", config=CONFIG)
    server.start()
    try:
        kms = server.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blobs = {
            current_material(kms, key_id): kms.encrypt(KeyId=key_id, Plaintext=b"0")
        }
        for i in (1, 2):
            kms.rotate_key_on_demand(KeyId=key_id)
            blobs[current_material(kms, key_id)] = kms.encrypt(
                KeyId=key_id, Plaintext=str(i).encode()
            )
        kept = rotations(kms, key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
        spent = kms.create_key()["KeyMetadata"]["KeyId"]
        for _ in range(ON_DEMAND_LIMIT):
            kms.rotate_key_on_demand(KeyId=spent)
        kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
        due = kms.get_key_rotation_status(KeyId=key_id)["NextRotationDate"]
        # The date passes, and the server stops at once: the automatic rotation may
        # or may not have happened, but whatever was acknowledged must survive.
        advance(server, 91 * DAY)
        server.restart(sig)
        kms = server.client()

        after = rotations(kms, key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
        after_by_id = {r["KeyMaterialId"]: r for r in after}
        for entry in kept:
            found = after_by_id[entry["KeyMaterialId"]]
            for member in ("RotationDate", "RotationType"):
                assert found.get(member) == entry.get(member)
        current = current_material(kms, key_id)
        assert current_in(after) == [current]
        for i, (material, blob) in enumerate(blobs.items()):
            opened = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])
            assert (opened["Plaintext"], opened["KeyMaterialId"]) == (
                str(i).encode(),
                material,
            )
        # The rotation and its new date are kept together, or neither is.
        status = kms.get_key_rotation_status(KeyId=key_id)
        assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (
            True,
            90,
        )
        rotated = [r for r in after if r.get("RotationType") == "AUTOMATIC"]
        assert len(after) == len(kept) + len(rotated) and len(rotated) <= 1
        expected = due.timestamp() + (90 * DAY if rotated else 0)
        assert close_to(status["NextRotationDate"], expected)
        # The on-demand count is kept too.
        code, _ = refused(kms.rotate_key_on_demand, KeyId=spent)
        assert code == "LimitExceededException"
        assert len(rotations(kms, spent)) == ON_DEMAND_LIMIT
    finally:
        server.stop()


def test_the_clock_offset_is_not_kept_across_a_restart(tmp_path: Any) -> None:
    server = ServerProcess(tmp_path / "data", config=CONFIG)
    server.start()
    try:
        moved = advance(server, 400 * DAY)
        assert moved > time.time() + 399 * DAY
        server.restart()
        assert abs(server_now(server) - time.time()) < 60
    finally:
        server.stop()
