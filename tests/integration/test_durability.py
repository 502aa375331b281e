"""Nothing acknowledged is lost across a restart, graceful or not."""

from __future__ import annotations

import signal
import uuid

import pytest

from tests.integration.conftest import ServerProcess


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_restart_keeps_keys_aliases_policies_grants_and_ciphertexts(tmp_path, sig):
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        kms = server.client()
        keys = [
            kms.create_key(Description=f"k{i}")["KeyMetadata"]["KeyId"]
            for i in range(3)
        ]
        alias = f"alias/durable-{uuid.uuid4().hex[:6]}"
        kms.create_alias(AliasName=alias, TargetKeyId=keys[0])
        kms.disable_key(KeyId=keys[2])
        kms.tag_resource(KeyId=keys[1], Tags=[{"TagKey": "t", "TagValue": "v"}])
        blobs = {
            k: kms.encrypt(KeyId=k, Plaintext=k.encode(), EncryptionContext={"k": k})[
                "CiphertextBlob"
            ]
            for k in keys[:2]
        }
        data_key = kms.generate_data_key(KeyId=alias, KeySpec="AES_256")
        policy = kms.get_key_policy(KeyId=keys[0])["Policy"].replace(
            "Enable IAM User Permissions", "Enable IAM policies, kept"
        )
        kms.put_key_policy(KeyId=keys[0], PolicyName="default", Policy=policy)
        grant = kms.create_grant(
            KeyId=keys[1],
            GranteePrincipal="arn:aws:iam::111122223333:user/admin",
            Operations=["Encrypt"],
            Constraints={"EncryptionContextSubset": {"k": keys[1]}},
        )

        server.restart(sig)
        kms = server.client()

        for k, blob in blobs.items():
            out = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": k})
            assert out["Plaintext"] == k.encode()
        assert (
            kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
            == data_key["Plaintext"]
        )
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == keys[0]
        assert kms.describe_key(KeyId=keys[2])["KeyMetadata"]["KeyState"] == "Disabled"
        assert kms.list_resource_tags(KeyId=keys[1])["Tags"] == [
            {"TagKey": "t", "TagValue": "v"}
        ]
        assert {k["KeyId"] for k in kms.list_keys()["Keys"]} >= set(keys)
        assert kms.get_key_policy(KeyId=keys[0])["Policy"] == policy
        (kept,) = kms.list_grants(KeyId=keys[1])["Grants"]
        assert (kept["GrantId"], kept["Constraints"]) == (
            grant["GrantId"],
            {"EncryptionContextSubset": {"k": keys[1]}},
        )
        # The token issued before the restart still checks out.
        kms.encrypt(KeyId=keys[1], Plaintext=b"x", GrantTokens=[grant["GrantToken"]])
    finally:
        server.stop()


def test_root_key_file_is_private(tmp_path):
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        mode = (tmp_path / "data" / "root.key").stat().st_mode & 0o777
        assert mode == 0o600
    finally:
        server.stop()
