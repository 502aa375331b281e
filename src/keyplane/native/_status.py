"""The only place where the native module's status codes become exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from keyplane.errors import (
    BufferSizeError,
    HsmFaultError,
    InvalidCiphertextError,
    InvalidKeyUsageError,
    KeyplaneError,
    KeyUnavailableError,
    LimitExceededError,
    MalformedNativeCallError,
    PartitionMismatchError,
    PartitionUnavailableError,
    ValidationError,
)
from keyplane.native._kp import lib

_ERRORS: Final[Mapping[int, tuple[type[KeyplaneError], str]]] = {
    # An authentication failure says nothing more, on purpose.
    lib.KP_E_AUTH: (InvalidCiphertextError, "the ciphertext failed authentication"),
    lib.KP_E_LENGTH: (ValidationError, "an input length is outside its allowed range"),
    lib.KP_E_SLOT_GONE: (KeyUnavailableError, "the key slot no longer exists"),
    lib.KP_E_WRONG_PARTITION: (
        PartitionMismatchError,
        "the key slot belongs to another partition",
    ),
    lib.KP_E_PARTITION_GONE: (
        PartitionUnavailableError,
        "the HSM partition does not exist",
    ),
    lib.KP_E_CAPACITY: (LimitExceededError, "the HSM is at capacity"),
    lib.KP_E_ARGUMENT: (MalformedNativeCallError, "malformed call to the HSM"),
    lib.KP_E_BUFFER: (BufferSizeError, "an output range exceeds its buffer"),
    lib.KP_E_NOMEM: (HsmFaultError, "the HSM is out of memory"),
    lib.KP_E_RANDOM: (HsmFaultError, "the HSM's random source failed"),
    lib.KP_E_CRYPTO: (HsmFaultError, "the HSM's cipher failed"),
    lib.KP_E_KEY_TYPE: (
        InvalidKeyUsageError,
        "the key slot holds another kind of key",
    ),
}


def error_for(status: int) -> KeyplaneError:
    """The exception for a failed item or call (never called with ``KP_OK``)."""
    try:
        cls, message = _ERRORS[status]
    except KeyError:
        return HsmFaultError(f"the HSM returned an unknown status {status}")
    return cls(message)


def raise_for_status(status: int) -> None:
    """Raise the exception for a call's status; return quietly for ``KP_OK``.

    Raises:
        KeyplaneError: the subclass that ``status`` maps to.
    """
    if status != lib.KP_OK:
        raise error_for(status)


def item_error(status: int) -> KeyplaneError:
    """The error that failed one item, to return in its place in the results.

    Raises:
        KeyplaneError: instead of returning, when ``status`` is a fault of the HSM
            itself (memory, the DRBG, libcrypto, a malformed call), which fails the
            whole call rather than one item.
    """
    error = error_for(status)
    if lib.kp_status_is_fault(status):
        raise error
    return error


def raise_for_call(status: int, messages: Mapping[int, str]) -> None:
    """As ``raise_for_status``, with this call's own message for some codes (the
    exception class is still the table's), where the generic one would mislead.

    Raises:
        KeyplaneError: the subclass that ``status`` maps to.
    """
    if status == lib.KP_OK:
        return
    message = messages.get(status)
    if message is None:
        raise error_for(status)
    cls, _ = _ERRORS[status]
    raise cls(message)
