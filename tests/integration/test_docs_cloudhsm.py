"""docs/origin-cloudhsm.md's walk-through, run as written: its setup block makes the
trust anchor and the configuration, a server starts on that configuration in
development mode, and its AWS CLI session runs in bash against it (only the port
changes). What the page's comments promise must be what the commands print."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ServerProcess

PAGE = Path(__file__).resolve().parents[2] / "docs" / "origin-cloudhsm.md"
BIN = Path(sys.executable).parent
AWS = shutil.which("aws", path=str(BIN)) or shutil.which("aws")
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(
    AWS is None or BASH is None or shutil.which("openssl") is None,
    reason="the walk-through needs bash, the AWS CLI and openssl",
)


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.DOTALL)


def bash(
    script: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASH), "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_walk_through_runs_as_written(tmp_path):
    setup, serve, session = blocks()
    assert serve.strip() == "keyplane serve --config keyplane.toml --data-dir .keyplane"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k != "KEYPLANE_ROOT_KEY"
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    made = bash(setup, tmp_path, env)
    assert made.returncode == 0, made.stderr
    # The server reads the page's configuration; ServerProcess keeps its copy in the
    # data directory, so the trust anchor file it names goes there too.
    data_dir = tmp_path / ".keyplane"
    data_dir.mkdir()
    shutil.copy(tmp_path / "customerCA.crt", data_dir / "customerCA.crt")
    server = ServerProcess(data_dir, config=(tmp_path / "keyplane.toml").read_text())
    server.start()
    try:
        ran = bash(
            session.replace("http://127.0.0.1:4599", server.endpoint), tmp_path, env
        )
    finally:
        server.stop()
    out, err = ran.stdout, ran.stderr
    lines = out.splitlines()
    assert lines[0] == "DISCONNECTED\tNone", out
    assert "CONNECTED\tNone" in lines, out
    assert "AWS_CLOUDHSM\t" in out and "\tcluster-234abcdefgh\tEnabled" in out, out
    assert out.count("kept in my cluster") == 2, out
    assert '"Unavailable"' in out, out
    assert "FAILED\tINVALID_CREDENTIALS" in lines, out
    assert '"PendingDeletion"' in out, out
    assert "KMSInvalidStateException" in err and "is unavailable." in err, err
    assert "CustomKeyStoreHasCMKsException" in err, err
    # Only the two refusals the page points out failed.
    assert err.count("An error occurred") == 2, err
