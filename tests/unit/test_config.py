"""Configuration: defaults, the TOML file, the environment, flags, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyplane import config
from keyplane.errors import ValidationError


def test_defaults():
    c = config.load(None, environ={})
    assert (c.host, c.port, c.account, c.region) == (
        "127.0.0.1",
        4599,
        "111122223333",
        "us-east-1",
    )
    assert c.database == Path(".keyplane/keyplane.db")


def test_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "keyplane.toml"
    path.write_text(
        '[server]\nport = 5000\nhost = "0.0.0.0"\n[service]\naccount = "444455556666"\n'
    )
    c = config.load(path, environ={"KEYPLANE_PORT": "6000"}, host="127.0.0.2")
    assert (c.port, c.host, c.account) == (6000, "127.0.0.2", "444455556666")


@pytest.mark.parametrize(
    "environ",
    [
        {"KEYPLANE_ACCOUNT": "12"},
        {"KEYPLANE_REGION": "mars"},
        {"KEYPLANE_PORT": "http"},
        {"KEYPLANE_PORT": "70000"},
        {"KEYPLANE_ACCESS_LOG": "perhaps"},
    ],
)
def test_bad_values(environ):
    with pytest.raises(ValidationError):
        config.load(None, environ=environ)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ValidationError):
        config.load(bad, environ={})
    with pytest.raises(ValidationError):
        config.load(tmp_path / "missing.toml", environ={})
