"""Fuzz target: the encryption context's canonical encoding, which is part of the AAD.

Any map of strings a request can carry (any Unicode but lone surrogates, which no JSON
body can hold: orjson refuses them) encodes without error, in an order-independent
way, and injectively: the bytes decode back to exactly the map they came from, so two
different contexts never give the same AAD. ``aad`` is the blob header followed by
that encoding, and so injective too for the fixed-size header.

tests/unit/kms/test_blob.py checks the same on short strings; this target draws from
all of Unicode, longer strings and more pairs, and the corpus keeps contexts that
differ only by what a careless encoding would lose.

Corpus: ``corpus/context/*.json``, each a JSON object of string to string.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.kms import _blob
from tests.fuzz._fuzz import corpus, fuzz

# Every code point but the surrogates, weighted towards the ones that matter to an
# encoding: NUL, separators, multi-byte and astral characters.
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8")
    | st.sampled_from(["\x00", "=", ",", ":", "\n", "é", "\U0001f511", "\u2028"]),
    max_size=40,
)
CONTEXTS = st.dictionaries(_TEXT, _TEXT, max_size=12)
HEADER = bytes(range(_blob.HEADER_BYTES))


def decode(data: bytes) -> dict[str, str]:
    """The context ``encode_context`` made ``data`` from; fails on anything else."""
    (count,), at = struct.unpack_from(">I", data), 4
    out: dict[str, str] = {}
    previous = b""
    for _ in range(count):
        fields = []
        for _ in range(2):
            (n,) = struct.unpack_from(">I", data, at)
            fields.append(data[at + 4 : at + 4 + n])
            assert len(fields[-1]) == n, "a length runs past the end"
            at += 4 + n
        key, value = fields
        assert key > previous or not out, "keys are not in strictly rising order"
        previous = key
        out[key.decode()] = value.decode()
    assert at == len(data), "bytes after the last pair"
    return out


def check(context: dict[str, str]) -> bytes:
    encoded = _blob.encode_context(context)
    assert decode(encoded) == context
    assert _blob.encode_context(dict(reversed(context.items()))) == encoded
    assert _blob.aad(HEADER, context) == HEADER + encoded
    return encoded


@fuzz(300)
@given(CONTEXTS)
def test_any_context_encodes_and_decodes_back(context):
    check(context)


@fuzz(300)
@given(CONTEXTS, CONTEXTS)
def test_different_contexts_never_encode_alike(a, b):
    assert (check(a) == check(b)) == (a == b)


@fuzz(300)
@given(CONTEXTS, _TEXT.filter(bool), _TEXT)
def test_moving_characters_between_key_and_value_changes_the_encoding(context, k, v):
    # The ambiguity a concatenating encoding would have: "ab"="c" against "a"="bc".
    rest = {a: b for a, b in context.items() if a not in (k, k[:-1])}
    assert check({**rest, k: v}) != check({**rest, k[:-1]: k[-1] + v})


_CORPUS = corpus("context")


@pytest.mark.parametrize(("name", "raw"), _CORPUS)
def test_corpus(name, raw):
    check(json.loads(raw))


def test_corpus_contexts_are_pairwise_distinct_in_encoding():
    contexts = [json.loads(p.values[1]) for p in _CORPUS]
    encodings = {}
    for context in contexts:
        encoded = check(context)
        other = encodings.setdefault(encoded, context)
        assert other == context
