"""The root key's base64, made and read in buffers that can be zeroed: the codec must
agree with the standard library's strict base64 on every input."""

from __future__ import annotations

import base64
import binascii

from hypothesis import given
from hypothesis import strategies as st

from keyplane.storage import ROOT_KEY_BYTES, _root_key

B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def strict(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@given(st.binary(max_size=64))
def test_encoding_is_standard_base64(data):
    assert _root_key.b64encode_into(bytearray(data)) == base64.b64encode(data)


@given(st.binary(max_size=64))
def test_decoding_undoes_encoding(data):
    assert _root_key.b64decode_into(bytearray(base64.b64encode(data))) == data


@given(
    st.one_of(
        st.text(alphabet=B64_CHARS, max_size=48).map(str.encode),
        st.binary(max_size=48),
    )
)
def test_decoding_accepts_and_refuses_what_strict_base64_does(text):
    assert _root_key.b64decode_into(bytearray(text)) == strict(text)


def test_a_new_key_is_random_and_mutable():
    first, second = _root_key.random_key(), _root_key.random_key()
    assert isinstance(first, bytearray)
    assert len(first) == len(second) == ROOT_KEY_BYTES
    assert first != second
