"""The only place AWS error names live: keyplane's exceptions to ``__type`` and status.

Anything not listed becomes KMSInternalException (500) with a generic message; the
cause is logged with the request id, never sent to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from keyplane import errors as e

AWS_ERRORS: Final[Mapping[type[e.KeyplaneError], tuple[str, int]]] = {
    e.ValidationError: ("ValidationException", 400),
    e.MalformedRequestError: ("SerializationException", 400),
    e.UnknownOperationError: ("UnknownOperationException", 400),
    e.RequestTooLargeError: ("RequestEntityTooLargeException", 413),
    e.NotFoundError: ("NotFoundException", 400),
    e.AlreadyExistsError: ("AlreadyExistsException", 400),
    e.InvalidArnError: ("InvalidArnException", 400),
    e.InvalidAliasNameError: ("InvalidAliasNameException", 400),
    e.DisabledError: ("DisabledException", 400),
    e.KeyStateError: ("KMSInvalidStateException", 400),
    e.IncorrectKeyError: ("IncorrectKeyException", 400),
    e.InvalidKeyUsageError: ("InvalidKeyUsageException", 400),
    e.InvalidCiphertextError: ("InvalidCiphertextException", 400),
    e.UnsupportedOperationError: ("UnsupportedOperationException", 400),
    e.InvalidMarkerError: ("InvalidMarkerException", 400),
    e.TagError: ("TagException", 400),
    e.LimitExceededError: ("LimitExceededException", 400),
    e.DryRunError: ("DryRunOperationException", 400),
    e.ThrottlingError: ("ThrottlingException", 400),
    e.MissingAuthenticationError: ("MissingAuthenticationTokenException", 400),
    e.IncompleteSignatureError: ("IncompleteSignatureException", 400),
    e.UnrecognizedClientError: ("UnrecognizedClientException", 400),
    e.InvalidSignatureError: ("InvalidSignatureException", 400),
    e.AccessDeniedError: ("AccessDeniedException", 400),
    e.MalformedPolicyDocumentError: ("MalformedPolicyDocumentException", 400),
    e.InvalidGrantTokenError: ("InvalidGrantTokenException", 400),
    e.InvalidGrantIdError: ("InvalidGrantIdException", 400),
    e.ConflictError: ("ConflictException", 400),
    e.IncorrectKeyMaterialError: ("IncorrectKeyMaterialException", 400),
    e.ExpiredImportTokenError: ("ExpiredImportTokenException", 400),
    e.InvalidImportTokenError: ("InvalidImportTokenException", 400),
    # The HSM lost a slot the service still names: a server fault, retryable.
    e.KeyUnavailableError: ("KeyUnavailableException", 500),
    # --- custom key stores
    e.CustomKeyStoreNotFoundError: ("CustomKeyStoreNotFoundException", 400),
    e.CustomKeyStoreNameInUseError: ("CustomKeyStoreNameInUseException", 400),
    e.CustomKeyStoreInvalidStateError: ("CustomKeyStoreInvalidStateException", 400),
    e.CustomKeyStoreHasKeysError: ("CustomKeyStoreHasCMKsException", 400),
    e.CloudHsmClusterNotFoundError: ("CloudHsmClusterNotFoundException", 400),
    e.CloudHsmClusterInUseError: ("CloudHsmClusterInUseException", 400),
    e.CloudHsmClusterNotActiveError: ("CloudHsmClusterNotActiveException", 400),
    e.CloudHsmClusterInvalidConfigurationError: (
        "CloudHsmClusterInvalidConfigurationException",
        400,
    ),
    e.CloudHsmClusterNotRelatedError: ("CloudHsmClusterNotRelatedException", 400),
    e.IncorrectTrustAnchorError: ("IncorrectTrustAnchorException", 400),
}

INTERNAL: Final = ("KMSInternalException", 500)


def aws_error(error: BaseException) -> tuple[str, int]:
    """The AWS ``__type`` and HTTP status for ``error`` (walking its class's bases)."""
    for cls in type(error).__mro__:
        found = AWS_ERRORS.get(cls)
        if found is not None:
            return found
    return INTERNAL
