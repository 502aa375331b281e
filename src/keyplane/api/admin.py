"""keyplane's own operations: ``KeyplaneService.ExplainAccess``,
``KeyplaneService.AdvanceClock`` and ``KeyplaneService.RotateRootKey``.

Request ``{"Action": "kms:Encrypt", "KeyId": "...", "Principal": "arn:...",
"EncryptionContext": {...}}`` (only Action is required); the answer says whether that
request would be allowed, and which key policy statement, identity policy statement or
grant decides it. docs/identities.md describes it; ``keyplane explain`` calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from keyplane.api import clusters
from keyplane.api.batch import BatchHandler, context_member
from keyplane.errors import MalformedRequestError
from keyplane.kms import KmsService, RequestContext
from keyplane.kms.ops import explain


def _string(request: Mapping[str, Any], member: str, *, required: bool) -> str | None:
    value = request.get(member)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedRequestError(f"{member} must be a non-empty string")
    return value


def _object(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError("the request body is not valid JSON") from exc
    if not isinstance(request, dict):
        raise MalformedRequestError("the request body must be a JSON object")
    return request


async def explain_access(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    request = _object(body)
    principal, resource, decision = explain.explain_access(
        svc,
        ctx,
        action=_string(request, "Action", required=True) or "",
        principal=_string(request, "Principal", required=False),
        key_id=_string(request, "KeyId", required=False),
        encryption_context=context_member(request),
    )
    answer: dict[str, Any] = {
        "Principal": principal,
        "Action": request["Action"],
        "Resource": resource,
        "Allowed": decision.allowed,
        "ExplicitDeny": decision.explicit_deny,
        "Source": decision.source,
        "Reason": decision.reason,
    }
    if decision.statement is not None:
        answer["Statement"] = decision.statement
    if decision.grant_id is not None:
        answer["GrantId"] = decision.grant_id
    return orjson.dumps(answer)


async def advance_clock(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    """Move the service's clock forward (``[clock] adjustable = true`` only), for
    watching date rules happen; needs keyplane:AdvanceClock (or an account root)."""
    request = _object(body)
    seconds = request.get("Seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise MalformedRequestError("Seconds must be a number")
    svc.access.check_account(ctx, "keyplane:AdvanceClock")
    return orjson.dumps({"Now": svc.advance_clock(seconds)})


async def rotate_root_key(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    """Re-wrap every partition key under a new root key while the service keeps
    serving (docs/reliability.md); needs keyplane:RotateRootKey (or an account root).
    The answer is a count: no key, and nothing derived from one."""
    _object(body)
    svc.access.check_account(ctx, "keyplane:RotateRootKey")
    return orjson.dumps({"PartitionsRewrapped": await svc.rotate_root_key()})


OPERATIONS: Final[Mapping[str, BatchHandler]] = {
    "ExplainAccess": explain_access,
    "AdvanceClock": advance_clock,
    "RotateRootKey": rotate_root_key,
    # Emulated CloudHSM clusters, for custom key stores (keyplane.api.clusters).
    **clusters.OPERATIONS,
}
