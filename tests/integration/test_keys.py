"""Key, alias and tag operations through boto3 against a running server."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCOUNT, REGION


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def test_create_and_describe(kms):
    created = kms.create_key(
        Description="orders", Tags=[{"TagKey": "team", "TagValue": "payments"}]
    )["KeyMetadata"]
    key_id = created["KeyId"]
    assert created["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"
    assert created["KeyState"] == "Enabled" and created["Enabled"] is True
    assert created["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert created["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert created["Origin"] == "AWS_KMS"
    assert created["KeyManager"] == "CUSTOMER"
    assert created["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    described = kms.describe_key(KeyId=created["Arn"])["KeyMetadata"]
    assert described == created
    tags = kms.list_resource_tags(KeyId=key_id)
    assert tags["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]
    assert tags["Truncated"] is False


def test_unknown_key(kms):
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as exc:
        kms.describe_key(KeyId=missing)
    code, message = error_of(exc)
    assert code == "NotFoundException"
    assert missing in message


def test_enable_disable(kms, key_id):
    kms.disable_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_of(exc)[0] == "DisabledException"
    kms.enable_key(KeyId=key_id)
    assert kms.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].endswith(key_id)


def test_schedule_and_cancel_deletion(kms, key_id):
    scheduled = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and "DeletionDate" in meta
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_of(exc)[0] == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as exc:
        kms.cancel_key_deletion(KeyId=key_id)
    assert error_of(exc)[0] == "KMSInvalidStateException"


@pytest.mark.parametrize("days", [6, 31])
def test_deletion_window_limits(kms, key_id, days):
    with pytest.raises(ClientError) as exc:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)
    assert error_of(exc)[0] == "ValidationException"


def test_update_description(kms, key_id):
    kms.update_key_description(KeyId=key_id, Description="renamed")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "renamed"


def test_list_keys_pages(kms):
    created = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen, marker = [], None
    while True:
        page = kms.list_keys(Limit=2, **({"Marker": marker} if marker else {}))
        assert len(page["Keys"]) <= 2
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    with pytest.raises(ClientError) as exc:
        kms.list_keys(Marker="not-a-marker")
    assert error_of(exc)[0] == "InvalidMarkerException"


def test_aliases(kms, key_id):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/test-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    with pytest.raises(ClientError) as exc:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    assert error_of(exc)[0] == "AlreadyExistsException"
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key_id
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == key_id
    listed = kms.list_aliases(KeyId=key_id)["Aliases"]
    assert [a["AliasName"] for a in listed] == [name]
    assert listed[0]["AliasArn"] == alias_arn
    kms.update_alias(AliasName=name, TargetKeyId=other)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == other
    blob = kms.encrypt(KeyId=name, Plaintext=b"via alias")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(other)
    kms.delete_alias(AliasName=name)
    with pytest.raises(ClientError) as exc:
        kms.describe_key(KeyId=name)
    assert error_of(exc)[0] == "NotFoundException"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("alias/aws/mine", "Cannot create alias with prefix 'alias/aws/'"),
        ("no-prefix", 'Alias must start with the prefix "alias/"'),
    ],
)
def test_bad_alias_names(kms, key_id, name, message):
    with pytest.raises(ClientError) as exc:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    code, text = error_of(exc)
    assert code == "InvalidAliasNameException"
    assert text.startswith(message)


def test_tags(kms, key_id):
    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}],
    )
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "a", "TagValue": "3"}])
    kms.untag_resource(KeyId=key_id, TagKeys=["b", "absent"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "a", "TagValue": "3"}
    ]
    with pytest.raises(ClientError) as exc:
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:x", "TagValue": "1"}])
    assert error_of(exc)[0] == "TagException"
