"""A real keyplane server per test module: a subprocess on a free loopback port, with
its own data directory, stopped with SIGTERM afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT = "111122223333"
_READY = re.compile(r"listening on (http://\S+)")


@dataclass
class ServerProcess:
    data_dir: Path
    log_level: str = "WARNING"
    process: subprocess.Popen[str] | None = None
    endpoint: str = ""
    port: int = 0
    output: str = ""

    def start(self, port: int = 0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KEYPLANE_ROOT_KEY", None)
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
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = _READY.search(line)
            if match:
                self.endpoint = match.group(1)
                self.port = int(self.endpoint.rsplit(":", 1)[1])
                return
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(seen))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server; what it printed since start-up is kept in ``output``."""
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=20)
            self.output = out or ""
            code = self.process.returncode
        finally:
            self.process = None
        return code

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start(self.port)

    def client(self, **config: Any) -> Any:
        return kms_client(self.endpoint, **config)


def kms_client(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"max_attempts": 1}, **config),
    )


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
