"""Who may sign requests: the configured accounts and principals, their access keys for
SigV4, and their identity policies, parsed once at start.

In development mode (a configuration that declares no accounts) there is one account,
the configured service account, with one IAM user ``admin`` allowed ``kms:*``. Its
access key is made on first start and kept in ``<data_dir>/credentials``, mode 0600,
in the AWS CLI's shared-credentials format, so a restart keeps it and
``AWS_SHARED_CREDENTIALS_FILE=<data_dir>/credentials aws --profile keyplane`` uses it.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyplane.api.sigv4 import Credential
from keyplane.config import AccessKey, AccountConfig, Config, PrincipalConfig
from keyplane.errors import MalformedPolicyDocumentError, ValidationError
from keyplane.kms import Caller
from keyplane.policy import PolicyDocument, parse_policy

PROFILE: Final = "keyplane"
ADMIN_NAME: Final = "admin"
ADMIN_POLICY: Final = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KeyplaneAdmin",
                "Effect": "Allow",
                # keyplane:* covers keyplane's own operations (AdvanceClock).
                "Action": ["kms:*", "keyplane:*"],
                "Resource": "*",
            }
        ],
    }
)
# AWS access key ids are "AKIA" and 16 characters of the base32 alphabet.
_KEY_ID_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True, slots=True)
class Identities:
    """Everything the server needs to know about callers.

    Attributes:
        credentials: Access key id to the credential SigV4 checks.
        callers: Principal ARN to the caller policy evaluation sees.
        accounts: Every account id that exists.
    """

    credentials: Mapping[str, Credential]
    callers: Mapping[str, Caller]
    accounts: frozenset[str]

    def root(self, account: str) -> Caller:
        return self.callers[root_arn(account)]


def root_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def build(accounts: tuple[AccountConfig, ...]) -> Identities:
    """Index the accounts, parsing each identity policy.

    Raises:
        ValidationError: an identity policy that is not a valid policy document.
    """
    credentials: dict[str, Credential] = {}
    callers: dict[str, Caller] = {}
    for account in accounts:
        root = root_arn(account.id)
        callers[root] = Caller(root, account.id)
        for key in account.root_access_keys:
            credentials[key.id] = Credential(key.id, key.secret, root, account.id)
        for principal in account.principals:
            callers[principal.arn] = Caller(
                principal.arn, account.id, _parse_policies(principal)
            )
            for key in principal.access_keys:
                credentials[key.id] = Credential(
                    key.id, key.secret, principal.arn, account.id
                )
    return Identities(credentials, callers, frozenset(a.id for a in accounts))


def _parse_policies(principal: PrincipalConfig) -> tuple[PolicyDocument, ...]:
    parsed = []
    for name, text in principal.policies:
        try:
            parsed.append(parse_policy(text, kind="identity"))
        except MalformedPolicyDocumentError as exc:
            raise ValidationError(
                f"identity policy {name!r} of {principal.arn}: {exc}"
            ) from exc
    return tuple(parsed)


def for_config(config: Config) -> Identities:
    """The configured identities, or development mode's admin when none are."""
    if config.accounts:
        return build(config.accounts)
    return build((development_account(config),))


def development_account(config: Config) -> AccountConfig:
    """The development account and its admin user, with the access key kept in
    ``<data_dir>/credentials`` (made on first use).

    Raises:
        ValidationError: the credentials file is readable by others or malformed.
    """
    key = load_or_create_credentials(config.data_dir / "credentials")
    admin = PrincipalConfig(
        config.account, "user", ADMIN_NAME, (key,), (("KeyplaneAdmin", ADMIN_POLICY),)
    )
    return AccountConfig(config.account, (), (admin,))


def new_access_key() -> AccessKey:
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
    return AccessKey(key_id, secrets.token_urlsafe(30))


def load_or_create_credentials(path: Path) -> AccessKey:
    """The access key in the shared-credentials file at ``path``, made if absent.

    Raises:
        ValidationError: the file is readable by others or holds no key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = new_access_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_credentials(path)  # another process just made it
        with os.fdopen(fd, "w") as out:
            out.write(credentials_text(PROFILE, key))
        return key
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValidationError(
            f"{path} holds a secret access key but others may read it "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        section = parser[PROFILE]
        return AccessKey(section["aws_access_key_id"], section["aws_secret_access_key"])
    except (configparser.Error, KeyError) as exc:
        raise ValidationError(f"{path} holds no [{PROFILE}] access key") from exc


def credentials_text(profile: str, key: AccessKey) -> str:
    return (
        f"[{profile}]\naws_access_key_id = {key.id}\n"
        f"aws_secret_access_key = {key.secret}\n"
    )


def write_aws_profile(profile: str, key: AccessKey, path: Path | None = None) -> Path:
    """Add (or replace) ``profile`` in the AWS CLI's shared credentials file, which is
    ``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``. Other profiles are kept.
    """
    if path is None:
        env = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
        path = Path(env) if env else Path.home() / ".aws" / "credentials"
    parser = configparser.ConfigParser()
    if path.exists():
        parser.read(path)
    parser[profile] = {
        "aws_access_key_id": key.id,
        "aws_secret_access_key": key.secret,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # The mode above applies only to a new file: an existing one may be wider, and
    # is about to hold a secret.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        parser.write(out)
    return path
