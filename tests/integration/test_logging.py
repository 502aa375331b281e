"""Request logs name the operation, key, status and latency, and never a secret."""

from __future__ import annotations

import base64
import json
import os
import urllib.request

from tests.integration.conftest import ServerProcess


def test_access_log_and_metrics(tmp_path):
    server = ServerProcess(tmp_path / "data", log_level="INFO")
    server.start()
    try:
        kms = server.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        secret = os.urandom(24)
        blob = kms.encrypt(KeyId=key_id, Plaintext=secret)["CiphertextBlob"]
        data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == secret
        with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
            metrics = json.loads(response.read())
        assert metrics["keys"] == 1
        assert metrics["batched_items"] >= 3
    finally:
        server.stop()
    lines = [line for line in server.output.splitlines() if "keyplane.access" in line]
    assert any(
        "op=Encrypt" in line and key_id in line and "status=200" in line
        for line in lines
    )
    assert any("op=Decrypt" in line and key_id in line for line in lines)
    for value in (secret, data_key):
        for form in (value.hex(), base64.b64encode(value).decode(), repr(value)):
            assert form not in server.output
