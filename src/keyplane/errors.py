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


# --- requests and the KMS service -----------------------------------------------------


class MalformedRequestError(KeyplaneError):
    """A request body that cannot be read: bad JSON, a member of the wrong type, bad
    base64."""


class UnknownOperationError(KeyplaneError):
    """A request names an operation the service does not have."""


class RequestTooLargeError(KeyplaneError):
    """A request's headers or body exceed the server's limits."""


class NotFoundError(KeyplaneError):
    """A named key, alias or other resource does not exist."""


class AlreadyExistsError(KeyplaneError):
    """A resource with that name already exists."""


class InvalidArnError(KeyplaneError):
    """An ARN that is malformed, or names another region or resource type."""


class InvalidAliasNameError(KeyplaneError):
    """An alias name that is malformed or reserved."""


class DisabledError(KeyplaneError):
    """The key is disabled."""


class KeyStateError(KeyplaneError):
    """The key's state does not allow the operation (KMSInvalidStateException)."""


class IncorrectKeyError(KeyplaneError):
    """A ciphertext was made under another key than the one the request names."""


class InvalidKeyUsageError(KeyplaneError):
    """The operation does not fit the key's usage or spec."""


class UnsupportedOperationError(KeyplaneError):
    """The operation is not supported for this key or in keyplane."""


class InvalidMarkerError(KeyplaneError):
    """A pagination marker that this service did not issue."""


class TagError(KeyplaneError):
    """A tag key or value that is malformed or reserved."""


class ThrottlingError(KeyplaneError):
    """The service is past its capacity or a quota; the client should retry later."""


# --- storage --------------------------------------------------------------------------


class StoreError(KeyplaneError):
    """The durable store failed or holds something it should not."""


class StoreConflictError(StoreError):
    """A record with that identity already exists in the store."""


class StoreNotFoundError(StoreError):
    """The store holds no record with that identity."""


class RootKeyError(KeyplaneError):
    """The root key is missing, malformed, or its file is not private to its owner."""


class DryRunError(KeyplaneError):
    """A DryRun request that would have succeeded (AWS reports it as an error)."""


# --- authentication -------------------------------------------------------------------


class AuthenticationError(KeyplaneError):
    """A request whose signature could not be checked or did not check out."""


class MissingAuthenticationError(AuthenticationError):
    """No Authorization header (or query signature) at all."""


class IncompleteSignatureError(AuthenticationError):
    """An Authorization header missing parts, or malformed."""


class UnrecognizedClientError(AuthenticationError):
    """The access key id is not one this service knows."""


class InvalidSignatureError(AuthenticationError):
    """The signature does not match, or the request's date is too far from now."""


# --- authorization --------------------------------------------------------------------


class AccessDeniedError(KeyplaneError):
    """The caller is authenticated, but no policy or grant allows the request (or one
    explicitly denies it)."""


class MalformedPolicyDocumentError(KeyplaneError):
    """A key or identity policy that is not valid JSON or not a valid policy, or one
    that would lock its author out of the key."""


class InvalidGrantTokenError(KeyplaneError):
    """A grant token that this service did not issue, or that is malformed."""


class InvalidGrantIdError(KeyplaneError):
    """A grant id that names no grant of the key."""


class ConflictError(KeyplaneError):
    """The request conflicts with work under way on the resource (AWS's
    ConflictException: an automatic rotation running or about to run)."""


# --- imported key material ------------------------------------------------------------


class IncorrectKeyMaterialError(KeyplaneError):
    """Imported material that is not what the key expects: not the material imported
    before, or new material the key already has."""


class ExpiredImportTokenError(KeyplaneError):
    """An import token past its 24 hours."""


class InvalidImportTokenError(KeyplaneError):
    """An import token this service did not issue for this key."""


# --- custom key stores ----------------------------------------------------------------


class CustomKeyStoreNotFoundError(NotFoundError):
    """No custom key store of the account has that id or name."""


class CustomKeyStoreNameInUseError(KeyplaneError):
    """Another custom key store of the account already has that name."""


class CustomKeyStoreInvalidStateError(KeyplaneError):
    """The custom key store's connection state does not allow the operation."""


class CustomKeyStoreHasKeysError(KeyplaneError):
    """The custom key store still holds KMS keys, in any key state."""


class CloudHsmClusterNotFoundError(NotFoundError):
    """No CloudHSM cluster of the account has that id."""


class CloudHsmClusterInUseError(KeyplaneError):
    """The cluster, or one that shares its backup history, backs another key store."""


class CloudHsmClusterNotActiveError(KeyplaneError):
    """The cluster is not initialized and active."""


class CloudHsmClusterInvalidConfigurationError(KeyplaneError):
    """The cluster lacks what the operation needs of it (active HSMs, say)."""


class CloudHsmClusterNotRelatedError(KeyplaneError):
    """The cluster does not share the backup history of the key store's cluster."""


class IncorrectTrustAnchorError(KeyplaneError):
    """The trust anchor certificate is not the one the cluster was initialized with."""


class ClusterLoginError(KeyplaneError):
    """A user could not log in to a CloudHSM cluster; the subclass says why."""


class ClusterUserNotFoundError(ClusterLoginError):
    """The cluster has no user of that name."""


class ClusterCredentialsError(ClusterLoginError):
    """The password is not the user's current one."""


class ClusterUserLockedOutError(ClusterLoginError):
    """The user is locked out of the cluster."""


class ClusterUserLoggedInError(ClusterLoginError):
    """The user is already logged in to the cluster elsewhere."""


class ClusterHsmsUnavailableError(ClusterLoginError):
    """The cluster has no active HSM to log in to."""


class ClusterRoleError(KeyplaneError):
    """A cluster user asked for something its role (or its ownership of a key) does
    not allow."""
