"""The KMS service: operations, key metadata and states, aliases, tags, the ciphertext
blob. It asks the HSM for cryptography and the store for durability; it knows nothing
of HTTP or wire names."""

from keyplane.kms._clock import AdjustableClock
from keyplane.kms._key_stores import (
    ClusterSpec,
    ConnectionState,
    CustomKeyStore,
    OwnedCluster,
)
from keyplane.kms._model import Alias, KeyGrant, KmsKey
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import KeyState
from keyplane.policy import Caller

__all__ = [
    "AdjustableClock",
    "Alias",
    "Caller",
    "ClusterSpec",
    "ConnectionState",
    "CustomKeyStore",
    "KeyGrant",
    "KeyState",
    "KmsKey",
    "KmsService",
    "OwnedCluster",
    "RequestContext",
]
