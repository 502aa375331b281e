"""The ciphertext blob: self-describing, versioned, and authenticated end to end.

Layout of version 1 (all integers big-endian)::

    version (1) = 0x01 | key id (16, the UUID's bytes) | material version (4)
    | IV (12) | ciphertext | tag (16)

The 21-byte header and the canonical encoding of the encryption context are the AES-GCM
AAD, so changing any byte of the blob, or decrypting with another context, fails
authentication. The key id in the header lets Decrypt find the key without a KeyId; the
material version names which key material sealed it, so old ciphertexts keep decrypting
after rotation. A new layout gets a new version byte; parsing dispatches on it.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from keyplane.errors import InvalidCiphertextError

VERSION_1: Final = 1
HEADER_BYTES: Final = 21
SEALED_OVERHEAD: Final = 28  # IV and tag around the ciphertext
MIN_BLOB_BYTES: Final = HEADER_BYTES + SEALED_OVERHEAD + 1
_HEADER: Final = struct.Struct(">B16sI")
_COUNT: Final = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class BlobHeader:
    key_id: str
    material_version: int
    header: bytes  # the raw 21 bytes, part of the AAD


def header(key_id: str, material_version: int) -> bytes:
    """The header that starts every blob of this key id and material version."""
    return _HEADER.pack(VERSION_1, uuid.UUID(key_id).bytes, material_version)


def parse(blob: bytes) -> tuple[BlobHeader, bytes]:
    """Split a blob into its header and the sealed part (IV || ciphertext || tag).

    Raises:
        InvalidCiphertextError: too short, an unknown version, or a malformed header.
            It says nothing more specific, as AWS does not.
    """
    if len(blob) < MIN_BLOB_BYTES or blob[0] != VERSION_1:
        raise InvalidCiphertextError("")
    _, raw_id, material_version = _HEADER.unpack_from(blob)
    key_id = str(uuid.UUID(bytes=raw_id))
    head = blob[:HEADER_BYTES]
    return BlobHeader(key_id, material_version, head), blob[HEADER_BYTES:]


def encode_context(context: Mapping[str, str] | None) -> bytes:
    """The canonical, unambiguous bytes of an encryption context.

    Pairs sorted by the UTF-8 bytes of the key; a count, then each key and value
    length-prefixed. Two contexts give the same bytes exactly when they hold the same
    pairs, whatever their order (AWS: the context must match exactly, order aside).
    """
    if not context:
        return _COUNT.pack(0)
    items = sorted((k.encode(), v.encode()) for k, v in context.items())
    parts = [_COUNT.pack(len(items))]
    for key, value in items:
        parts += (_COUNT.pack(len(key)), key, _COUNT.pack(len(value)), value)
    return b"".join(parts)


def aad(blob_header: bytes, context: Mapping[str, str] | None) -> bytes:
    """The AAD that binds a blob's header and its encryption context."""
    return blob_header + encode_context(context)
