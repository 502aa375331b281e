"""The AWS CLI against keyplane: what a user types after `make serve`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
pytestmark = pytest.mark.skipif(AWS is None, reason="the AWS CLI is a test dependency")


def aws(server, *args: str) -> dict:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    out = subprocess.run(
        [AWS, "kms", *args, "--endpoint-url", server.endpoint, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_cli_round_trip(server, tmp_path):
    key_id = aws(server, "create-key", "--description", "from the CLI")["KeyMetadata"][
        "KeyId"
    ]
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"hello from the cli")
    blob = aws(
        server, "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{plain}"
    )["CiphertextBlob"]
    sealed = tmp_path / "sealed.bin"
    sealed.write_bytes(base64.b64decode(blob))
    out = aws(server, "decrypt", "--ciphertext-blob", f"fileb://{sealed}")
    assert base64.b64decode(out["Plaintext"]) == b"hello from the cli"
    listed = aws(server, "list-keys")["Keys"]
    assert key_id in {k["KeyId"] for k in listed}
