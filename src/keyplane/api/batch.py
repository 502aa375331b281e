"""The wire form of keyplane's batch extension (docs/batch-extension.md).

``X-Amz-Target: KeyplaneService.Encrypt`` (or ``Decrypt``, ``GenerateDataKey``) with a
body ``{"Items": [...]}``, each item holding the members of the single-item KMS
operation. The response is ``{"Results": [...]}`` in request order; each result holds
the members the single-item operation returns, or ``{"Error": {"Code", "Message"}}``.
A malformed item fails alone; only a malformed request as a whole is an error response.

Items are checked here against the same limits the KMS model sets for those members,
with a parser written for this shape: walking the generic model per item would cost
more than the cryptography.
"""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import orjson

from keyplane.api.errors import aws_error
from keyplane.errors import KeyplaneError, MalformedRequestError, ValidationError
from keyplane.kms import KmsService, RequestContext
from keyplane.kms.ops import batch

TARGET_PREFIX: Final = b"KeyplaneService."
MAX_KEY_ID: Final = 2048
MAX_BLOB: Final = 6144
DATA_KEY_SPECS: Final = ("AES_256", "AES_128")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(value: Any, member: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise MalformedRequestError(f"{member} must be a base64 string")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error as exc:
        raise MalformedRequestError(f"{member} is not valid base64") from exc
    if not 1 <= len(data) <= max_bytes:
        raise ValidationError(f"{member} must be 1 to {max_bytes} bytes long")
    return data


def _key_id(
    item: Mapping[str, Any], member: str = "KeyId", *, required: bool = True
) -> str | None:
    value = item.get(member)
    if value is None:
        if required:
            raise ValidationError(f"{member} is required")
        return None
    if not isinstance(value, str):
        raise MalformedRequestError(f"{member} must be a string")
    if not 1 <= len(value) <= MAX_KEY_ID:
        raise ValidationError(f"{member} must be 1 to {MAX_KEY_ID} characters long")
    return value


def _context(item: Mapping[str, Any]) -> dict[str, str] | None:
    value = item.get("EncryptionContext")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedRequestError("EncryptionContext must map strings to strings")
    return value


def _items(body: bytes) -> list[Any]:
    try:
        request = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError("the request body is not valid JSON") from exc
    if not isinstance(request, dict) or not isinstance(request.get("Items"), list):
        raise MalformedRequestError('the request body must be {"Items": [...]}')
    items: list[Any] = request["Items"]
    if not 1 <= len(items) <= batch.MAX_ITEMS:
        raise ValidationError(f"Items must hold 1 to {batch.MAX_ITEMS} items")
    return items


def _parse(
    raw: list[Any], parse_one: Callable[[Mapping[str, Any]], Any]
) -> tuple[list[Any], dict[int, KeyplaneError]]:
    """Parse every item; an item that fails to parse is set aside with its error."""
    parsed: list[Any] = []
    failed: dict[int, KeyplaneError] = {}
    for i, item in enumerate(raw):
        try:
            if not isinstance(item, dict):
                raise MalformedRequestError("each item must be a JSON object")
            parsed.append(parse_one(item))
        except KeyplaneError as exc:
            failed[i] = exc
    return parsed, failed


def _merge(n: int, failed: dict[int, KeyplaneError], done: list[Any]) -> list[Any]:
    """Results in request order: the parse failures where they were, the rest after."""
    if not failed:
        return done
    merged: list[Any] = []
    rest = iter(done)
    for i in range(n):
        merged.append(failed[i] if i in failed else next(rest))
    return merged


def _error(exc: KeyplaneError) -> dict[str, Any]:
    return {"Error": {"Code": aws_error(exc)[0], "Message": str(exc)}}


def _parse_encrypt(item: Mapping[str, Any]) -> batch.EncryptItem:
    return batch.EncryptItem(
        _key_id(item) or "",
        _unb64(item.get("Plaintext"), "Plaintext", 4096),
        _context(item),
    )


def _parse_decrypt(item: Mapping[str, Any]) -> batch.DecryptItem:
    return batch.DecryptItem(
        _unb64(item.get("CiphertextBlob"), "CiphertextBlob", MAX_BLOB),
        _context(item),
        _key_id(item, required=False),
    )


def _parse_data_key(item: Mapping[str, Any]) -> batch.DataKeyItem:
    number = item.get("NumberOfBytes")
    if number is not None and (type(number) is not int or not 1 <= number <= 1024):
        raise ValidationError("NumberOfBytes must be an integer from 1 to 1024")
    spec = item.get("KeySpec")
    if spec is not None and spec not in DATA_KEY_SPECS:
        raise ValidationError(f"KeySpec must be one of {', '.join(DATA_KEY_SPECS)}")
    return batch.DataKeyItem(_key_id(item) or "", number, spec, _context(item))


async def encrypt(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_encrypt)
    done = await batch.batch_encrypt(svc, ctx, parsed) if parsed else []
    results = [
        _error(r)
        if isinstance(r, KeyplaneError)
        else {
            "CiphertextBlob": _b64(r.ciphertext_blob),
            "KeyId": r.key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }
        for r in _merge(len(raw), failed, done)
    ]
    return orjson.dumps({"Results": results})


async def decrypt(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_decrypt)
    done = await batch.batch_decrypt(svc, ctx, parsed) if parsed else []
    results = [
        _error(r)
        if isinstance(r, KeyplaneError)
        else {
            "Plaintext": _b64(r.plaintext),
            "KeyId": r.key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }
        for r in _merge(len(raw), failed, done)
    ]
    return orjson.dumps({"Results": results})


async def generate_data_key(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_data_key)
    done = await batch.batch_generate_data_key(svc, ctx, parsed) if parsed else []
    results = [
        _error(r)
        if isinstance(r, KeyplaneError)
        else {
            "CiphertextBlob": _b64(r.ciphertext_blob),
            "Plaintext": _b64(r.plaintext),
            "KeyId": r.key.arn,
        }
        for r in _merge(len(raw), failed, done)
    ]
    return orjson.dumps({"Results": results})


BatchHandler = Callable[[KmsService, RequestContext, bytes], Awaitable[bytes]]

OPERATIONS: Final[Mapping[str, BatchHandler]] = {
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "GenerateDataKey": generate_data_key,
}
