"""Key identifiers as KMS accepts them: key ids, key ARNs, alias names and alias ARNs.

AWS KMS Developer Guide, "Key identifiers (KeyId)": a KeyId member may be a key
id, a key ARN, an alias name or an alias ARN where the operation allows aliases.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Final

from keyplane.errors import InvalidAliasNameError, InvalidArnError, NotFoundError

ALIAS_PREFIX: Final = "alias/"
RESERVED_ALIAS_PREFIX: Final = "alias/aws/"
_ALIAS_NAME: Final = re.compile(r"alias/[a-zA-Z0-9:/_-]+")
_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<resource>key|alias)/(?P<name>.+)"
)


def key_arn(region: str, account: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"


def alias_arn(region: str, account: str, alias_name: str) -> str:
    return f"arn:aws:kms:{region}:{account}:{alias_name}"


def is_key_id(value: str) -> bool:
    """Whether ``value`` is a key id (a UUID in its canonical lower-case form)."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A parsed KeyId member: either a key id or an alias name, with the account and
    region it names (the caller's own unless an ARN said otherwise)."""

    account: str
    region: str
    key_id: str | None = None
    alias_name: str | None = None


def parse_key_ref(value: str, account: str, region: str, *, aliases: bool) -> KeyRef:
    """Parse a KeyId member.

    Args:
        value: the member as the client sent it.
        account: the caller's account, for identifiers that do not name one.
        region: the service's region.
        aliases: whether this operation accepts alias names and alias ARNs.

    Raises:
        NotFoundError: not a key id, alias or ARN of this region (AWS answers with
            NotFoundException for an identifier it cannot find).
        InvalidArnError: an ARN that is not a KMS key or alias ARN.
    """
    if value.startswith("arn:"):
        match = _ARN.fullmatch(value)
        if match is None:
            raise InvalidArnError(f"Invalid arn {value}")
        if match["region"] != region:
            raise NotFoundError(f"Invalid arn {match['region']}")
        if match["resource"] == "key":
            if not is_key_id(match["name"]):
                raise NotFoundError(f"Invalid keyId {match['name']}")
            return KeyRef(match["account"], region, key_id=match["name"])
        if not aliases:
            raise NotFoundError(f"Invalid keyId {value}")
        return KeyRef(match["account"], region, alias_name=f"alias/{match['name']}")
    if value.startswith(ALIAS_PREFIX):
        if not aliases:
            raise NotFoundError(f"Invalid keyId {value}")
        return KeyRef(account, region, alias_name=value)
    if not is_key_id(value):
        raise NotFoundError(f"Invalid keyId {value}")
    return KeyRef(account, region, key_id=value)


def check_alias_name(name: str) -> None:
    """Refuse an alias name that is malformed or in the reserved ``alias/aws/`` space.

    Raises:
        InvalidAliasNameError: with AWS's message for each case.
    """
    if not _ALIAS_NAME.fullmatch(name) or name == ALIAS_PREFIX:
        raise InvalidAliasNameError(
            'Alias must start with the prefix "alias/". Please see '
            "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
            if not name.startswith(ALIAS_PREFIX)
            else f"{name} contains invalid characters for an alias"
        )
    if name.startswith(RESERVED_ALIAS_PREFIX):
        raise InvalidAliasNameError("Cannot create alias with prefix 'alias/aws/'")
