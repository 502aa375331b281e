"""keyplane's policy engine: key policies, IAM identity policies, grants and condition
keys, evaluated as AWS KMS evaluates them.

Pure and synchronous: it imports only the standard library and ``keyplane.errors``,
does no I/O and reads no clock (time arrives in the request context). Parse a policy
once with :func:`parse_policy`, then :func:`evaluate` it as often as needed.
"""

from keyplane.policy._document import KEY_POLICY_MAX_BYTES, PolicyDocument, parse_policy
from keyplane.policy._evaluate import (
    CONTEXT_OPERATIONS,
    access_denied_message,
    evaluate,
)
from keyplane.policy._model import Caller, Decision, Grant, Request

__all__ = [
    "CONTEXT_OPERATIONS",
    "KEY_POLICY_MAX_BYTES",
    "Caller",
    "Decision",
    "Grant",
    "PolicyDocument",
    "Request",
    "access_denied_message",
    "evaluate",
    "parse_policy",
]
