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


ACCOUNTS = """
[auth]
mode = "sigv4"

[[accounts]]
id = "111122223333"
root_access_keys = [{ id = "AKIAROOTROOTROOTROOT", secret = "r" }]

[[accounts.principals]]
type = "role"
name = "app"
access_keys = [{ id = "AKIAAPPAPPAPPAPPAPP1", secret = "s" }]
policies = [
  { name = "table", document = { Version = "2012-10-17", Statement = [] } },
  { name = "text", document = '{"Version": "2012-10-17", "Statement": []}' },
]
"""


def test_accounts_and_principals(tmp_path):
    path = tmp_path / "keyplane.toml"
    path.write_text(ACCOUNTS)
    c = config.load(path, environ={})
    (account,) = c.accounts
    assert account.id == "111122223333"
    assert [k.id for k in account.root_access_keys] == ["AKIAROOTROOTROOTROOT"]
    (app,) = account.principals
    assert app.arn == "arn:aws:iam::111122223333:role/app"
    assert [name for name, _ in app.policies] == ["table", "text"]
    # A TOML table and a JSON string describe the same document.
    import json

    assert json.loads(app.policies[0][1]) == json.loads(app.policies[1][1])
    assert "secret" not in repr(app.access_keys[0]).lower().replace("access_keys", "")


@pytest.mark.parametrize(
    "text",
    [
        '[[accounts]]\nid = "12"\n',
        '[[accounts]]\nid = "111122223333"\ncolour = "red"\n',
        '[[accounts]]\nid = "111122223333"\n[[accounts.principals]]\ntype = "group"\n'
        'name = "x"\n',
        '[[accounts]]\nid = "111122223333"\n[[accounts.principals]]\nname = "a b"\n',
        '[[accounts]]\nid = "111122223333"\nroot_access_keys = [{ id = "short", '
        'secret = "s" }]\n',
        '[[accounts]]\nid = "111122223333"\nroot_access_keys = [{ id = '
        '"AKIAROOTROOTROOTROOT", secret = "" }]\n',
        '[[accounts]]\nid = "111122223333"\n[[accounts]]\nid = "111122223333"\n',
        '[[accounts]]\nid = "111122223333"\nroot_access_keys = [{ id = '
        '"AKIAROOTROOTROOTROOT", secret = "a" }, { id = "AKIAROOTROOTROOTROOT", '
        'secret = "b" }]\n',
        '[[accounts]]\nid = "111122223333"\n[[accounts.principals]]\nname = "a"\n'
        'policies = [{ name = "p" }]\n',
        '[auth]\nmode = "maybe"\n',
    ],
)
def test_bad_accounts(tmp_path, text):
    path = tmp_path / "keyplane.toml"
    path.write_text(text)
    with pytest.raises(ValidationError):
        config.load(path, environ={})


def test_auth_from_environment():
    assert config.load(None, environ={}).auth == "sigv4"
    assert config.load(None, environ={"KEYPLANE_AUTH": "off"}).auth == "off"


def test_clock_and_rotation_settings(tmp_path):
    assert config.load(None, environ={}).adjustable_clock is False
    path = tmp_path / "keyplane.toml"
    path.write_text(
        "[clock]\nadjustable = true\n[service]\non_demand_rotation_limit = 3\n"
    )
    c = config.load(path, environ={})
    assert (c.adjustable_clock, c.on_demand_rotation_limit) == (True, 3)
    on = config.load(None, environ={"KEYPLANE_ADJUSTABLE_CLOCK": "1"})
    assert on.adjustable_clock is True
    path.write_text("[service]\non_demand_rotation_limit = -1\n")
    with pytest.raises(ValidationError):
        config.load(path, environ={})
