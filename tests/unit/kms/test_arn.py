"""KeyId members in each form AWS accepts, and the refusals for the rest."""

from __future__ import annotations

import uuid

import pytest

from keyplane.errors import InvalidAliasNameError, InvalidArnError, NotFoundError
from keyplane.kms._arn import KeyRef, check_alias_name, parse_key_ref

KEY = str(uuid.uuid4())
ACCOUNT, REGION = "111122223333", "us-east-1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (KEY, KeyRef(ACCOUNT, REGION, key_id=KEY)),
        (
            f"arn:aws:kms:{REGION}:444455556666:key/{KEY}",
            KeyRef("444455556666", REGION, key_id=KEY),
        ),
        ("alias/app", KeyRef(ACCOUNT, REGION, alias_name="alias/app")),
        (
            f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/app",
            KeyRef(ACCOUNT, REGION, alias_name="alias/app"),
        ),
    ],
)
def test_forms(given, expected):
    assert parse_key_ref(given, ACCOUNT, REGION, aliases=True) == expected


@pytest.mark.parametrize(
    "given",
    ["", "nope", KEY.upper(), KEY[:-1], f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{KEY}"],
)
def test_unknown_forms_are_not_found(given):
    with pytest.raises(NotFoundError):
        parse_key_ref(given, ACCOUNT, REGION, aliases=True)


def test_aliases_refused_where_not_accepted():
    with pytest.raises(NotFoundError):
        parse_key_ref("alias/app", ACCOUNT, REGION, aliases=False)


def test_malformed_arn():
    with pytest.raises(InvalidArnError):
        parse_key_ref("arn:aws:s3:::bucket", ACCOUNT, REGION, aliases=True)


@pytest.mark.parametrize("name", ["app", "alias/", "alias/has space", "alias/aws/mine"])
def test_bad_alias_names(name):
    with pytest.raises(InvalidAliasNameError):
        check_alias_name(name)
