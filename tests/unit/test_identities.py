"""Identities: principals and their policies indexed for the server, and development
mode's admin credentials kept private across restarts."""

from __future__ import annotations

import configparser
import json
import stat

import pytest

from keyplane import config, identities
from keyplane.config import AccessKey, AccountConfig, PrincipalConfig
from keyplane.errors import ValidationError

ACCOUNT = "111122223333"
ALLOW_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    }
)


def test_build_indexes_keys_and_callers():
    user = PrincipalConfig(
        ACCOUNT,
        "user",
        "alice",
        (AccessKey("AKIAALICEALICEALICE1", "s"),),
        (("all", ALLOW_ALL),),
    )
    built = identities.build(
        (AccountConfig(ACCOUNT, (AccessKey("AKIAROOTROOTROOTROOT", "r"),), (user,)),)
    )
    assert built.credentials["AKIAALICEALICEALICE1"].principal == user.arn
    assert built.credentials["AKIAROOTROOTROOTROOT"].principal == (
        f"arn:aws:iam::{ACCOUNT}:root"
    )
    assert len(built.callers[user.arn].identity_policies) == 1
    assert built.root(ACCOUNT).is_root
    assert built.accounts == frozenset({ACCOUNT})


def test_a_malformed_identity_policy_stops_start_up():
    user = PrincipalConfig(ACCOUNT, "user", "alice", (), (("bad", '{"Version": 1}'),))
    with pytest.raises(ValidationError, match="identity policy 'bad' of"):
        identities.build((AccountConfig(ACCOUNT, (), (user,)),))


def test_development_credentials_are_made_once_and_kept_private(tmp_path):
    c = config.load(None, environ={}, data_dir=tmp_path)
    first = identities.for_config(c)
    path = tmp_path / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = identities.for_config(c)
    assert set(first.credentials) == set(again.credentials)
    (key_id,) = first.credentials
    assert key_id.startswith("AKIA") and len(key_id) == 20
    assert first.credentials[key_id].principal == f"arn:aws:iam::{ACCOUNT}:user/admin"
    # The file is what the AWS CLI reads.
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser["keyplane"]["aws_access_key_id"] == key_id


def test_development_credentials_readable_by_others_are_refused(tmp_path):
    path = tmp_path / "credentials"
    identities.load_or_create_credentials(path)
    path.chmod(0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        identities.load_or_create_credentials(path)


def test_write_aws_profile_keeps_other_profiles(tmp_path):
    path = tmp_path / "aws" / "credentials"
    path.parent.mkdir()
    path.write_text(
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = o\n"
    )
    identities.write_aws_profile("kp", AccessKey("AKIAKPKPKPKPKPKPKPKP", "k"), path)
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser["other"]["aws_access_key_id"] == "AKIAOTHER"
    assert parser["kp"]["aws_secret_access_key"] == "k"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
