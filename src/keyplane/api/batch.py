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

import numpy as np
import numpy.typing as npt
import orjson

from keyplane.api.errors import aws_error
from keyplane.errors import KeyplaneError, MalformedRequestError, ValidationError
from keyplane.kms import KmsService, RequestContext
from keyplane.kms.ops import batch

TARGET_PREFIX: Final = b"KeyplaneService."
MAX_KEY_ID: Final = 2048
MAX_BLOB: Final = 6144
DATA_KEY_SPECS: Final = ("AES_256", "AES_128")
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(value: Any, member: str, max_bytes: int) -> bytes:
    # Each refusal has the AWS error type the single-item operation gives: a missing
    # member is a ValidationException, one of the wrong type a SerializationException.
    if value is None:
        raise ValidationError(f"{member} is required")
    if not isinstance(value, str):
        raise MalformedRequestError(f"{member} must be a base64 string")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or a character outside ASCII
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


def context_member(item: Mapping[str, Any]) -> dict[str, str] | None:
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
    """Parse every item; an item that fails to parse is set aside with its error.

    Clients often send one item repeated (a thousand data keys under one key): an item
    equal to the one before it reuses that item's parse, and the same parsed object,
    which lets the service check it once.
    """
    parsed: list[Any] = []
    failed: dict[int, KeyplaneError] = {}
    previous: Any = None
    previous_parsed: Any = None
    for i, item in enumerate(raw):
        if previous_parsed is not None and item == previous:
            parsed.append(previous_parsed)
            continue
        try:
            if not isinstance(item, dict):
                raise MalformedRequestError("each item must be a JSON object")
            one = parse_one(item)
        except KeyplaneError as exc:
            failed[i] = exc
            previous = previous_parsed = None
            continue
        parsed.append(one)
        previous, previous_parsed = item, one
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
        context_member(item),
    )


def _parse_decrypt(item: Mapping[str, Any]) -> batch.DecryptItem:
    return batch.DecryptItem(
        _unb64(item.get("CiphertextBlob"), "CiphertextBlob", MAX_BLOB),
        context_member(item),
        _key_id(item, required=False),
    )


def _parse_data_key(item: Mapping[str, Any]) -> batch.DataKeyItem:
    number = item.get("NumberOfBytes")
    if number is not None:
        # Not a JSON integer, or past the model's 32-bit integer: a wrong type, as
        # the single-item operation reads it; an integer out of range is invalid.
        if type(number) is not int or not INT32_MIN <= number <= INT32_MAX:
            raise MalformedRequestError("NumberOfBytes must be an integer")
        if not 1 <= number <= 1024:
            raise ValidationError("NumberOfBytes must be an integer from 1 to 1024")
    spec = item.get("KeySpec")
    if spec is not None:
        if not isinstance(spec, str):
            raise MalformedRequestError("KeySpec must be a string")
        if spec not in DATA_KEY_SPECS:
            raise ValidationError(f"KeySpec must be one of {', '.join(DATA_KEY_SPECS)}")
    return batch.DataKeyItem(_key_id(item) or "", number, spec, context_member(item))


def _respond(
    n: int,
    failed: dict[int, KeyplaneError],
    done: list[Any],
    encode: Callable[[Any], dict[str, Any]],
) -> bytes:
    """The response body: each result in request order, encoded or as its error."""
    return orjson.dumps(
        {
            "Results": [
                _error(r) if isinstance(r, KeyplaneError) else encode(r)
                for r in _merge(n, failed, done)
            ]
        }
    )


async def encrypt(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_encrypt)
    done = await batch.batch_encrypt(svc, ctx, parsed) if parsed else []
    return _respond(
        len(raw),
        failed,
        done,
        lambda r: {
            "CiphertextBlob": _b64(r.ciphertext_blob),
            "KeyId": r.key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        },
    )


async def decrypt(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_decrypt)
    done = await batch.batch_decrypt(svc, ctx, parsed) if parsed else []
    return _respond(
        len(raw),
        failed,
        done,
        lambda r: {
            "Plaintext": _b64(r.plaintext),
            "KeyId": r.key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        },
    )


async def generate_data_key(svc: KmsService, ctx: RequestContext, body: bytes) -> bytes:
    raw = _items(body)
    parsed, failed = _parse(raw, _parse_data_key)
    if not failed and parsed.count(parsed[0]) == len(parsed):
        # One item repeated, the usual shape: made in one call and encoded in bulk.
        made = await batch.batch_generate_data_keys_alike(
            svc, ctx, parsed[0], len(parsed)
        )
        if isinstance(made, batch.DataKeyRows):
            try:
                return _encode_rows(made)
            finally:
                made.rows.fill(0)  # the plaintext keys, now only in the response
        done: list[Any] = made
    else:
        done = await batch.batch_generate_data_key(svc, ctx, parsed) if parsed else []
    tails: dict[str, bytes] = {}
    parts: list[bytes] = []
    for r in _merge(len(raw), failed, done):
        if isinstance(r, KeyplaneError):
            parts.append(orjson.dumps(_error(r)))
            continue
        key, plaintext, blob = r
        tail = tails.get(key.arn)
        if tail is None:
            tail = tails[key.arn] = b'","KeyId":' + orjson.dumps(key.arn) + b"}"
        parts.append(b"".join((_BLOB, _b64b(blob), _PLAIN, _b64b(plaintext), tail)))
    return b'{"Results":[' + b",".join(parts) + b"]}"


def _encode_rows(made: batch.DataKeyRows) -> bytes:
    """The response for data keys made together, built as a byte matrix: one row of
    JSON per item, every column filled for all items at once.

    Base64 of a whole matrix equals the rows' base64 side by side when each row is a
    multiple of three bytes long; shorter rows are padded with zero bytes and their
    last characters set back to ``=`` (which is what standard padding gives).
    """
    rows, k = made.rows, made.key_bytes
    n = rows.shape[0]
    header = np.frombuffer(made.header, dtype=np.uint8)
    blobs = np.empty((n, header.size + rows.shape[1] - k), dtype=np.uint8)
    blobs[:, : header.size] = header
    blobs[:, header.size :] = rows[:, k:]
    arn = b'","KeyId":' + orjson.dumps(made.key.arn) + b"},"
    columns: list[npt.NDArray[np.uint8]] = [
        np.frombuffer(_BLOB, dtype=np.uint8),
        _b64_rows(blobs),
        np.frombuffer(_PLAIN, dtype=np.uint8),
        _b64_rows(rows[:, :k]),
        np.frombuffer(arn, dtype=np.uint8),
    ]
    widths = [c.shape[-1] for c in columns]
    out = np.empty((n, sum(widths)), dtype=np.uint8)
    at = 0
    for column, width in zip(columns, widths, strict=True):
        out[:, at : at + width] = column  # a constant broadcasts down every row
        at += width
    encoded = out.tobytes()
    out.fill(0)
    return b'{"Results":[' + encoded[:-1] + b"]}"


def _b64_rows(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Standard base64 of each row of ``matrix``, as a matrix of ASCII bytes."""
    n, width = matrix.shape
    pad = -width % 3
    if pad:
        padded = np.zeros((n, width + pad), dtype=np.uint8)
        padded[:, :width] = matrix
        matrix = padded
    raw = np.ascontiguousarray(matrix).tobytes()
    text = binascii.b2a_base64(raw, newline=False)
    if pad:
        padded.fill(0)  # it held plaintext keys; the bytes copies are beyond reach
    encoded = np.frombuffer(text, dtype=np.uint8).reshape(n, (width + pad) // 3 * 4)
    if pad:
        encoded = encoded.copy()
        encoded[:, -pad:] = ord("=")
    return encoded


_BLOB: Final = b'{"CiphertextBlob":"'
_PLAIN: Final = b'","Plaintext":"'


def _b64b(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


BatchHandler = Callable[[KmsService, RequestContext, bytes], Awaitable[bytes]]

OPERATIONS: Final[Mapping[str, BatchHandler]] = {
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "GenerateDataKey": generate_data_key,
}
