"""Key states and which operations each allows: AWS KMS's key-state table, in one place.

The table follows the AWS KMS Developer Guide, "Key states of AWS KMS keys" (the
rows this service implements so far); a refused operation raises the error AWS names
for that cell, with AWS's message. Nothing else in keyplane decides whether a state
allows an operation.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Final

from keyplane.errors import DisabledError, KeyplaneError, KeyStateError


class KeyState(enum.Enum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"
    UNAVAILABLE = "Unavailable"


class Op(enum.Enum):
    """Operations grouped as the key-state table groups them."""

    CRYPTO = "crypto"  # Encrypt, Decrypt, ReEncrypt, GenerateDataKey*
    DESCRIBE = (
        "describe"  # DescribeKey, ListResourceTags, ListAliases, DeleteAlias, ...
    )
    CREATE_ALIAS = "create-alias"
    UPDATE_ALIAS_TARGET = "update-alias-target"  # the alias's new target key
    TAG = "tag"  # TagResource, UntagResource, UpdateKeyDescription
    ENABLE_DISABLE = "enable-disable"  # EnableKey, DisableKey
    SCHEDULE_DELETION = "schedule-deletion"
    CANCEL_DELETION = "cancel-deletion"
    ROTATION = "rotation"  # EnableKeyRotation, DisableKeyRotation, RotateKeyOnDemand
    IMPORT = "import"  # GetParametersForImport, ImportKeyMaterial


def _disabled(arn: str) -> KeyplaneError:
    return DisabledError(f"{arn} is disabled.")


def _pending_deletion(arn: str) -> KeyplaneError:
    return KeyStateError(f"{arn} is pending deletion.")


def _pending_import(arn: str) -> KeyplaneError:
    return KeyStateError(f"{arn} is pending import.")


def _unavailable(arn: str) -> KeyplaneError:
    return KeyStateError(f"{arn} is unavailable.")


def _not_pending_deletion(arn: str) -> KeyplaneError:
    return KeyStateError(f"{arn} is not pending deletion.")


Refusal = Callable[[str], KeyplaneError]
E, D, PD, PI, UN = (
    KeyState.ENABLED,
    KeyState.DISABLED,
    KeyState.PENDING_DELETION,
    KeyState.PENDING_IMPORT,
    KeyState.UNAVAILABLE,
)

# For each operation group, the states that refuse it and how. A state missing from a
# row allows the operation. (AWS footnotes: a disabled key gives DisabledException; a
# key pending deletion gives KMSInvalidStateException for every operation that refuses
# it, which is what AWS returns today for cryptographic operations as well.)
_REFUSED: Final[Mapping[Op, Mapping[KeyState, Refusal]]] = {
    Op.CRYPTO: {
        D: _disabled,
        PD: _pending_deletion,
        PI: _pending_import,
        UN: _unavailable,
    },
    Op.DESCRIBE: {},
    Op.CREATE_ALIAS: {PD: _pending_deletion},
    Op.UPDATE_ALIAS_TARGET: {PD: _pending_deletion},
    Op.TAG: {PD: _pending_deletion},
    Op.ENABLE_DISABLE: {PD: _pending_deletion, PI: _pending_import},
    Op.SCHEDULE_DELETION: {PD: _pending_deletion},
    Op.ROTATION: {
        D: _disabled,
        PD: _pending_deletion,
        PI: _pending_import,
        UN: _unavailable,
    },
    # Footnote 8: a key pending deletion refuses both with KMSInvalidStateException.
    Op.IMPORT: {PD: _pending_deletion},
    Op.CANCEL_DELETION: {
        E: _not_pending_deletion,
        D: _not_pending_deletion,
        PI: _not_pending_deletion,
        UN: _not_pending_deletion,
    },
}


def require(state: KeyState, op: Op, arn: str) -> None:
    """Raise the error AWS gives when a key in ``state`` is asked for ``op``.

    Raises:
        DisabledError: the key is disabled and ``op`` needs it enabled.
        KeyStateError: any other state that refuses ``op``.
    """
    refusal = _REFUSED[op].get(state)
    if refusal is not None:
        raise refusal(arn)
