"""Request quotas against a real server, through boto3 with its retries off: past an
account's rate its cryptographic requests get ThrottlingException, as AWS answers
them; other accounts are untouched; a batch-extension request counts each item; and
cross-account use is charged to the caller."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from keyplane.client import BatchClient, BatchRequestError
from tests.integration.conftest import REGION, ServerProcess

RATE = 50
# Each test drains the buckets of accounts of its own, so the tests do not depend on
# each other's order or timing.
ACCOUNTS = {
    "solo": "111111111111",
    "bystander": "222222222222",
    "batcher": "333333333333",
    "owner": "444444444444",
    "caller": "555555555555",
    "unlimited": "666666666666",
    "slow": "777777777777",
}


def _access_key(name: str) -> tuple[str, str]:
    return f"AKIAQUOTA{name.upper():X<11}"[:20], f"secret-of-{name}"


CONFIG = f"""
[quotas]
symmetric = {RATE}

[quotas.accounts.{ACCOUNTS["unlimited"]}]
symmetric = 0

[quotas.accounts.{ACCOUNTS["slow"]}]
symmetric = 1
""" + "".join(
    f"""
[[accounts]]
id = "{account}"
root_access_keys = [{{ id = "{key}", secret = "{secret}" }}]
"""
    for name, account in ACCOUNTS.items()
    for key, secret in [_access_key(name)]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("quotas"), config=CONFIG)
    proc.start()
    yield proc
    proc.stop()


def client(server: ServerProcess, name: str) -> Any:
    """boto3 with no retries at all: SDKs retry ThrottlingException by default, and
    ``retries={"max_attempts": 1}`` still allows one retry (it counts retries, not
    attempts), after which a refilled bucket would hide the throttling."""
    access_key, secret = _access_key(name)
    return boto3.client(
        "kms",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )


def batch_client(server: ServerProcess, name: str) -> BatchClient:
    return BatchClient(server.endpoint, credentials=Credentials(*_access_key(name)))


def throttled(exc: pytest.ExceptionInfo[ClientError]) -> bool:
    error = exc.value.response["Error"]
    status = exc.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return (
        error["Code"] == "ThrottlingException"
        and status == 400
        and error["Message"].startswith("Rate exceeded")
    )


def test_past_the_rate_requests_are_throttled_then_served_again(server):
    solo = client(server, "solo")
    key = solo.create_key()["KeyMetadata"]["KeyId"]  # not a cryptographic request
    served = 0
    started = time.monotonic()
    refusal: ClientError | None = None
    while refusal is None and served < 10 * RATE:
        try:
            solo.encrypt(KeyId=key, Plaintext=b"x")
            served += 1
        except ClientError as exc:
            refusal = exc
    elapsed = time.monotonic() - started
    assert refusal is not None
    error = refusal.response["Error"]
    assert refusal.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "ThrottlingException"
    assert error["Message"].startswith("Rate exceeded")
    assert f"account {ACCOUNTS['solo']}" in error["Message"]
    # A full bucket, plus what refilled while the requests were made.
    assert RATE <= served <= RATE + RATE * elapsed + 1
    # Management operations have no quota here: still answered.
    solo.describe_key(KeyId=key)
    # Another account is not held back by this one.
    bystander = client(server, "bystander")
    other_key = bystander.create_key()["KeyMetadata"]["KeyId"]
    bystander.encrypt(KeyId=other_key, Plaintext=b"y")
    # A second later the bucket is full again.
    time.sleep(1.05)
    blob = solo.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert solo.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_every_cryptographic_operation_counts(server):
    slow = client(server, "slow")  # one request a second
    key = slow.create_key()["KeyMetadata"]["KeyId"]
    blob = slow.encrypt(KeyId=key, Plaintext=b"s")["CiphertextBlob"]
    calls = {
        "Encrypt": lambda: slow.encrypt(KeyId=key, Plaintext=b"s"),
        "Decrypt": lambda: slow.decrypt(CiphertextBlob=blob),
        "ReEncrypt": lambda: slow.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key),
        "GenerateDataKey": lambda: slow.generate_data_key(KeyId=key, KeySpec="AES_256"),
        "GenerateDataKeyWithoutPlaintext": lambda: (
            slow.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")
        ),
        "GenerateRandom": lambda: slow.generate_random(NumberOfBytes=8),
        # Throttled before the request is even looked at.
        "Decrypt of garbage": lambda: slow.decrypt(CiphertextBlob=b"\0" * 64),
    }
    started = time.monotonic()
    refused = {}
    for name, call in calls.items():
        with pytest.raises(ClientError) as exc:
            call()
        refused[name] = throttled(exc)
    if time.monotonic() - started < 1:  # else a token came back in between
        assert refused == dict.fromkeys(calls, True)
    time.sleep(1.05)
    assert slow.decrypt(CiphertextBlob=blob)["Plaintext"] == b"s"


def test_each_batch_item_counts(server):
    kms = client(server, "batcher")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with batch_client(server, "batcher") as batch:
        # The whole bucket in one request.
        results = batch.encrypt(key, [b"%d" % i for i in range(RATE)])
        assert all("CiphertextBlob" in r for r in results)
        # Refilling 40 tokens takes 0.8 s: this request is refused whole.
        with pytest.raises(BatchRequestError) as exc:
            batch.encrypt(key, [b"x"] * 40)
        assert (exc.value.status, exc.value.code) == (400, "ThrottlingException")
        assert exc.value.message.startswith("Rate exceeded")
        assert "counts 40" in exc.value.message
        # More items than a second's worth can never be served at once.
        time.sleep(1.05)
        with pytest.raises(BatchRequestError) as exc:
            batch.generate_data_keys(key, RATE + 1)
        assert exc.value.code == "ThrottlingException"
        assert len(batch.generate_data_keys(key, RATE)) == RATE


def test_cross_account_use_charges_the_caller(server):
    owner = client(server, "owner")
    caller_arn = f"arn:aws:iam::{ACCOUNTS['caller']}:root"
    owner_arn = f"arn:aws:iam::{ACCOUNTS['owner']}:root"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": owner_arn},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": caller_arn},
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": "*",
            },
        ],
    }
    meta = owner.create_key(Policy=json.dumps(policy))["KeyMetadata"]
    with batch_client(server, "caller") as batch:
        # The caller spends its whole second on the owner's key.
        results = batch.encrypt(meta["Arn"], [b"c"] * RATE)
        assert all("CiphertextBlob" in r for r in results)
        with pytest.raises(BatchRequestError) as exc:
            batch.encrypt(meta["Arn"], [b"c"] * 40)
        assert exc.value.code == "ThrottlingException"
        assert f"account {ACCOUNTS['caller']}" in exc.value.message
    # The owner was not charged for any of it: its whole second is still there.
    with batch_client(server, "owner") as batch:
        blobs = [r["CiphertextBlob"] for r in results]
        opened = batch.decrypt(blobs[: RATE - 1])
        assert [r["Plaintext"] for r in opened] == [b"c"] * (RATE - 1)
    owner.encrypt(KeyId=meta["KeyId"], Plaintext=b"o")


def test_an_account_with_no_limit_is_never_throttled(server):
    kms = client(server, "unlimited")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with batch_client(server, "unlimited") as batch:
        for _ in range(3):
            assert len(batch.generate_data_keys(key, 10 * RATE)) == 10 * RATE
    for _ in range(RATE + 10):
        kms.encrypt(KeyId=key, Plaintext=b"u")


def test_large_batches_come_back_whole_while_another_account_works(server):
    """Requests larger than a scheduler slice are worked through in turns, beside
    another account's requests: every item still comes back, in order, correct."""
    kms = client(server, "unlimited")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    plaintexts = [b"item %d" % i for i in range(2500)]
    other = client(server, "bystander")
    other_key = other.create_key()["KeyMetadata"]["KeyId"]

    def quiet_account() -> list[bytes]:
        return [
            other.decrypt(
                CiphertextBlob=other.encrypt(KeyId=other_key, Plaintext=b"q%d" % i)[
                    "CiphertextBlob"
                ]
            )["Plaintext"]
            for i in range(10)
        ]

    with (
        batch_client(server, "unlimited") as batch,
        ThreadPoolExecutor(1) as pool,
    ):
        quiet = pool.submit(quiet_account)
        sealed = batch.encrypt(key, plaintexts)
        keys = batch.generate_data_keys(key, 2500)
        opened = batch.decrypt([r["CiphertextBlob"] for r in sealed])
        assert quiet.result() == [b"q%d" % i for i in range(10)]
    assert [r["Plaintext"] for r in opened] == plaintexts
    assert len({k["Plaintext"] for k in keys}) == 2500
    # Data keys are made in slices of 1024: check both sides of each boundary.
    for i in (0, 1023, 1024, 2047, 2048, 2499):
        blob = keys[i]["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == keys[i]["Plaintext"]
