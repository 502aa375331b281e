"""The values that cross the policy engine's boundary: who calls, what they ask, which
grants exist, and what was decided.

Plain immutable records only; parsing lives in ``_document`` and the evaluation order in
``_evaluate``. Nothing here reads a clock or touches I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyplane.policy._document import PolicyDocument


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal and the identity (IAM) policies attached to it.

    ``arn`` is ``arn:aws:iam::<account>:root``, ``...:user/<name>``, ``...:role/<name>``
    or an STS ``assumed-role`` session ARN.
    """

    arn: str
    account: str
    identity_policies: tuple[PolicyDocument, ...] = ()

    @property
    def is_root(self) -> bool:
        """Whether the caller is its account's root user, which IAM never restricts."""
        return self.arn.endswith(":root")


@dataclass(frozen=True, slots=True)
class Request:
    """One authorization question: may ``caller`` perform ``action`` on ``resource``?

    ``context`` holds condition keys with lower-cased names (``kms:calleraccount``,
    ``aws:currenttime`` as ISO 8601, ``aws:sourceip``, ...); a key that is absent is
    absent to the policy. The ``kms:EncryptionContext:*`` and
    ``kms:EncryptionContextKeys`` keys are always derived from ``encryption_context``.
    """

    caller: Caller
    action: str
    resource: str
    resource_account: str
    context: Mapping[str, object] = field(default_factory=dict)
    encryption_context: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant on the key being authorized. Grants only ever allow."""

    grant_id: str
    grantee: str
    operations: frozenset[str]
    encryption_context_equals: Mapping[str, str] | None = None
    encryption_context_subset: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`keyplane.policy.evaluate` and why.

    ``source`` is ``"key-policy"``, ``"identity-policy"``, ``"grant"`` or ``"none"``.
    On a denial it names the policy type that denied or whose missing allow decided
    (``"none"``: nothing allowed at all), which is what AWS's AccessDenied text reports.
    ``statement`` is the deciding statement's Sid, or ``#<index>`` (0-based) when it has
    none. ``context_free`` is true when no condition and no grant constraint was
    consulted, so the same caller, action, resource, policies and grants get the same
    decision under any request context and the caller may cache it.
    """

    allowed: bool
    source: str
    statement: str | None
    grant_id: str | None
    explicit_deny: bool
    context_free: bool
    reason: str
