"""The ciphertext blob: layout, context encoding, and a parser that refuses garbage."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.errors import InvalidCiphertextError
from keyplane.kms import _blob

contexts = st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=8)


@given(st.binary(max_size=200))
def test_parser_only_ever_refuses_with_invalid_ciphertext(data):
    try:
        head, sealed = _blob.parse(data)
    except InvalidCiphertextError:
        return
    assert head.header == data[: _blob.HEADER_BYTES]
    assert sealed == data[_blob.HEADER_BYTES :]
    assert len(sealed) >= _blob.SEALED_OVERHEAD + 1


@given(
    st.uuids(version=4), st.integers(1, 2**32 - 1), st.binary(min_size=29, max_size=64)
)
def test_header_round_trip(key_id, version, sealed):
    blob = _blob.header(str(key_id), version) + sealed
    head, rest = _blob.parse(blob)
    assert (head.key_id, head.material_version, rest) == (str(key_id), version, sealed)


def test_unknown_version_and_short_blobs_are_refused():
    good = _blob.header(str(uuid.uuid4()), 1) + bytes(29)
    for bad in (b"", good[:-1], b"\x02" + good[1:]):
        with pytest.raises(InvalidCiphertextError):
            _blob.parse(bad)


@given(contexts)
def test_context_encoding_ignores_order(context):
    reordered = dict(reversed(list(context.items())))
    assert _blob.encode_context(context) == _blob.encode_context(reordered)


@given(contexts, contexts)
def test_context_encoding_is_unambiguous(a, b):
    assert (_blob.encode_context(a) == _blob.encode_context(b)) == (a == b)


def test_context_encoding_separates_keys_from_values():
    # Concatenation without lengths would make these two collide.
    assert _blob.encode_context({"ab": "c"}) != _blob.encode_context({"a": "bc"})
    assert _blob.encode_context(None) == _blob.encode_context({})
