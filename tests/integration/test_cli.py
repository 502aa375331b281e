"""The AWS CLI against keyplane: what a user types after `make serve`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
pytestmark = pytest.mark.skipif(AWS is None, reason="the AWS CLI is a test dependency")


def aws(server, *args: str, credentials: dict[str, str] | None = None) -> dict:
    """Run ``aws kms ...`` against the server, signing with the test admin's key
    unless ``credentials`` (environment variables) say otherwise."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")
    }
    env.update(
        credentials
        or {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    )
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
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


def test_development_mode_admin_credentials(tmp_path):
    """With no accounts configured, the server makes an admin access key, keeps it
    private in the data directory, prints it, and the AWS CLI can use that file."""
    server = ServerProcess(tmp_path / "dev", config="")
    server.start()
    try:
        credentials = server.data_dir / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        made = aws(
            server,
            "create-key",
            credentials={
                "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                "AWS_PROFILE": "keyplane",
            },
        )
        assert made["KeyMetadata"]["Arn"].startswith(
            "arn:aws:kms:us-east-1:111122223333:key/"
        )
        key_id = credentials.read_text().split("aws_access_key_id = ")[1].split()[0]
        server.restart()
    finally:
        server.stop()
    # Printed at start, and the same key after a restart.
    assert f"access key id:     {key_id}" in server.output
    assert key_id in credentials.read_text()
