"""The one exception hierarchy of keyplane.

Every error keyplane raises on purpose is a ``KeyplaneError``, named for what went
wrong. This module imports nothing from keyplane; the API edge alone maps these classes
to AWS error names and HTTP statuses.
"""

from __future__ import annotations


class KeyplaneError(Exception):
    """Root of every error keyplane raises on purpose."""


class ValidationError(KeyplaneError):
    """An input is malformed or outside its allowed range."""


class InvalidCiphertextError(KeyplaneError):
    """A ciphertext failed authentication: altered, truncated, or the wrong context."""


class KeyUnavailableError(KeyplaneError):
    """The key slot a request names no longer exists in the HSM."""


class PartitionMismatchError(KeyplaneError):
    """A key slot was used through a partition or HSM that does not hold it."""


class PartitionUnavailableError(KeyplaneError):
    """The HSM partition a request names does not exist (or no longer exists)."""


class LimitExceededError(KeyplaneError):
    """A capacity limit of the HSM was reached."""


class InternalError(KeyplaneError):
    """A fault of keyplane itself rather than of the request."""


class MalformedNativeCallError(InternalError):
    """keyplane passed the native module a call it refuses (a keyplane bug)."""


class BufferSizeError(InternalError):
    """An output buffer handed to the native module was too small for its item."""


class HsmFaultError(InternalError):
    """The HSM failed internally: out of memory, the DRBG, or libcrypto."""
