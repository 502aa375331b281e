"""Fuzz target: the ciphertext blob parser, alone and behind Decrypt and ReEncrypt.

``_blob.parse`` may refuse only with InvalidCiphertextError, and what it accepts splits
back into the bytes it came from. Behind the API, real blobs (under two keys, one of
them rotated, each with its own encryption context) are damaged in structured ways: a
bit flipped, cut short, lengthened, another blob's header spliced on, the version,
key id or material version rewritten. A damaged blob never decrypts, through Decrypt,
ReEncrypt or the batch extension; it is refused with InvalidCiphertextException (or a
ValidationException when nothing is left of it), never with a fault.

Corpus: ``corpus/blob/*.bin``, raw blobs; each is parsed, and sent to Decrypt.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.errors import InvalidCiphertextError
from keyplane.kms import _blob
from tests.fuzz._fuzz import corpus, fuzz
from tests.fuzz.conftest import Kms

REFUSED = frozenset({"InvalidCiphertextException", "ValidationException"})


@dataclass(frozen=True)
class Sealed:
    blob: bytes
    context: dict[str, str]
    key: str


@pytest.fixture(scope="module")
def sealed(kms: Kms) -> list[Sealed]:
    """Blobs under two keys; the second key is rotated, with blobs of both versions."""
    found = []
    for n in range(2):
        key = kms.ok("TrentService.CreateKey", {})["KeyMetadata"]["KeyId"]
        for version in range(n + 1):
            if version:
                kms.ok("TrentService.RotateKeyOnDemand", {"KeyId": key})
            for size in (1, 100):
                context = {"key": str(n), "version": str(version)}
                blob = kms.ok(
                    "TrentService.Encrypt",
                    {
                        "KeyId": key,
                        "Plaintext": base64.b64encode(bytes(size)).decode(),
                        "EncryptionContext": context,
                    },
                )["CiphertextBlob"]
                found.append(Sealed(base64.b64decode(blob), context, key))
    return found


@st.composite
def damage(draw: st.DrawFn, blob: bytes, other: bytes) -> bytes:
    """``blob`` changed in one structured way (never left as it was)."""
    how = draw(
        st.sampled_from(
            ["flip", "cut", "extend", "splice", "version", "key", "material", "many"]
        )
    )
    data = bytearray(blob)
    if how == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "cut":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=32))
    elif how == "splice":
        if other[: _blob.HEADER_BYTES] == blob[: _blob.HEADER_BYTES]:
            data = bytearray(other[: _blob.HEADER_BYTES] + bytes(blob[21:]) + b"\0")
        else:
            data[: _blob.HEADER_BYTES] = other[: _blob.HEADER_BYTES]
    elif how == "version":
        data[0] = draw(st.integers(0, 255).filter(lambda v: v != blob[0]))
    elif how == "key":
        data[1:17] = draw(st.binary(min_size=16, max_size=16).filter(blob[1:17].__ne__))
    elif how == "material":
        (old,) = struct.unpack_from(">I", blob, 17)
        new = draw(st.sampled_from([0, 1, 2, 3, 2**32 - 1]).filter(old.__ne__))
        struct.pack_into(">I", data, 17, new)
    else:
        for _ in range(draw(st.integers(2, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        if data == blob:
            data[-1] ^= 1
    assert bytes(data) != blob
    return bytes(data)


def _decrypt_refuses(kms: Kms, blob: bytes, context: dict[str, str]) -> None:
    text = base64.b64encode(blob).decode()
    answer = kms.call(
        "TrentService.Decrypt",
        orjson.dumps({"CiphertextBlob": text, "EncryptionContext": context}),
    )
    assert answer.kind in REFUSED, answer
    answer = kms.call(
        "KeyplaneService.Decrypt",
        orjson.dumps(
            {"Items": [{"CiphertextBlob": text, "EncryptionContext": context}]}
        ),
    )
    if answer.status == 200:
        [result] = answer.body["Results"]
        assert result["Error"]["Code"] in REFUSED, answer
    else:
        assert answer.kind in REFUSED, answer


def _parse_only_refuses(data: bytes) -> None:
    refused: InvalidCiphertextError | None = None
    try:
        head, rest = _blob.parse(data)
    except InvalidCiphertextError as exc:
        refused = exc
    if refused is not None:
        assert str(refused) == ""  # AWS says nothing more about a bad blob
        return
    assert head.header + rest == data
    assert len(data) >= _blob.MIN_BLOB_BYTES
    assert _blob.header(head.key_id, head.material_version) == head.header


@fuzz()
@given(st.binary(max_size=120) | st.binary(min_size=50, max_size=51))
def test_the_parser_only_refuses_with_invalid_ciphertext(data):
    _parse_only_refuses(data)


@fuzz()
@given(data=st.data())
def test_a_damaged_blob_never_decrypts(kms, sealed, data):
    original = data.draw(st.sampled_from(sealed), label="blob")
    other = data.draw(st.sampled_from(sealed), label="other")
    damaged = data.draw(damage(original.blob, other.blob), label="damaged")
    _parse_only_refuses(damaged)
    _decrypt_refuses(kms, damaged, original.context)


@fuzz(100)
@given(data=st.data())
def test_a_damaged_blob_never_re_encrypts(kms, sealed, data):
    original = data.draw(st.sampled_from(sealed), label="blob")
    other = data.draw(st.sampled_from(sealed), label="other")
    damaged = data.draw(damage(original.blob, other.blob), label="damaged")
    answer = kms.call(
        "TrentService.ReEncrypt",
        orjson.dumps(
            {
                "CiphertextBlob": base64.b64encode(damaged).decode(),
                "SourceEncryptionContext": original.context,
                "DestinationKeyId": other.key,
            }
        ),
    )
    assert answer.kind in REFUSED, answer


@fuzz(100)
@given(data=st.data())
def test_a_blob_opens_only_under_its_own_context(kms, sealed, data):
    original = data.draw(st.sampled_from(sealed), label="blob")
    other = data.draw(st.sampled_from(sealed), label="other")
    context = data.draw(
        st.sampled_from([other.context, {}, {**original.context, "x": ""}])
        | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)
    )
    answer = kms.call(
        "TrentService.Decrypt",
        orjson.dumps(
            {
                "CiphertextBlob": base64.b64encode(original.blob).decode(),
                "EncryptionContext": context,
            }
        ),
    )
    if context == original.context:
        assert answer.status == 200, answer
    else:
        assert answer.kind == "InvalidCiphertextException", answer


def test_the_blobs_decrypt_undamaged(kms, sealed):
    for s in sealed:
        answer = kms.call(
            "TrentService.Decrypt",
            orjson.dumps(
                {
                    "CiphertextBlob": base64.b64encode(s.blob).decode(),
                    "EncryptionContext": s.context,
                }
            ),
        )
        assert answer.status == 200, answer


@pytest.mark.parametrize(("name", "raw"), corpus("blob"))
def test_corpus(kms, sealed, name, raw):
    _parse_only_refuses(raw)
    if raw:
        _decrypt_refuses(kms, raw, {})
