"""A real keyplane server per test module: a subprocess on a free loopback port, with
its own data directory, stopped with SIGTERM afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REGION = "us-east-1"
ACCOUNT = "111122223333"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
_READY = re.compile(r"listening on (http://\S+)")

# The identities most tests run as: one account whose IAM user "admin" may do
# anything in KMS, signing with AWS's documentation example key.
ADMIN_POLICY = (
    '{ Version = "2012-10-17", Statement = '
    '[{ Effect = "Allow", Action = "kms:*", Resource = "*" }] }'
)
ADMIN_CONFIG = f"""
[[accounts]]
id = "{ACCOUNT}"

[[accounts.principals]]
type = "user"
name = "admin"
access_keys = [{{ id = "{ACCESS_KEY}", secret = "{SECRET_KEY}" }}]
policies = [{{ name = "admin", document = {ADMIN_POLICY} }}]
"""


@dataclass
class ServerProcess:
    data_dir: Path
    log_level: str = "WARNING"
    config: str = ADMIN_CONFIG
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[str] | None = None
    endpoint: str = ""
    port: int = 0
    output: str = ""

    def start(self, port: int = 0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KEYPLANE_ROOT_KEY", None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "config.toml"
        config_file.write_text(self.config)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyplane",
                "serve",
                "--port",
                str(port or self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                self.log_level,
                "--config",
                str(config_file),
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        # A thread reads everything the server prints, from the first line: so the
        # pipe never fills (a DEBUG server is chatty), and no line read ahead while
        # waiting for readiness is lost to ``output``.
        self._lines: list[str] = []
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read_output, args=(self.process, ready), daemon=True
        )
        self._reader.start()
        if ready.wait(timeout=30) and self.endpoint:
            return
        self.stop()
        raise RuntimeError("server did not start:\n" + self.output)

    def _read_output(
        self, process: subprocess.Popen[str], ready: threading.Event
    ) -> None:
        assert process.stdout is not None
        self.endpoint = ""
        with process.stdout:
            for line in process.stdout:
                self._lines.append(line)
                match = _READY.search(line)
                if match and not ready.is_set():
                    self.endpoint = match.group(1)
                    self.port = int(self.endpoint.rsplit(":", 1)[1])
                    ready.set()
        ready.set()  # the server exited: start() reports what it printed

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server; what it printed since start-up is kept in ``output``."""
        if self.process is None:
            return 0
        try:
            self.process.send_signal(sig)
            code = self.process.wait(timeout=20)
            self._reader.join(timeout=20)
            self.output = "".join(self._lines)
        finally:
            self.process = None
        return code

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start(self.port)

    def client(self, **config: Any) -> Any:
        return kms_client(self.endpoint, **config)


def kms_client(
    endpoint: str,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    **config: Any,
) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, **config),
    )


def signed_headers(
    body: bytes,
    target: str | None,
    host: str = "x",
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
) -> dict[str, str]:
    """The headers botocore's own SigV4 signer gives a KMS request, for tests that
    write HTTP by hand."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(
        method="POST", url=f"http://{host}/", data=body, headers=headers
    )
    SigV4Auth(Credentials(access_key, secret_key), "kms", REGION).add_auth(request)
    return dict(request.headers.items())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("keyplane"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kms(server: ServerProcess) -> Any:
    return server.client()


@pytest.fixture
def key_id(kms: Any) -> str:
    return str(kms.create_key(Description="test key")["KeyMetadata"]["KeyId"])
