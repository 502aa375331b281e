"""Fuzz target: the JSON request codec and member validation, for every operation.

``parse_request`` is given arbitrary bytes, arbitrary JSON, and valid requests (drawn
from the KMS model, as boto3 would send them) with values swapped for arbitrary JSON at
any depth. It may only refuse with an error that becomes an AWS 4xx error, and what it
accepts must come back the same when encoded again and parsed again.

tests/unit/api/test_shapes.py checks the messages case by case and fuzzes nine
operations; this target covers all of the model's operations.

Corpus: ``corpus/codec/<Operation>.<what>.json`` holds a raw request body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson
import pytest
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api import shapes
from keyplane.api.errors import aws_error
from keyplane.api.shapes import parse_request
from keyplane.errors import (
    MalformedRequestError,
    UnknownOperationError,
    ValidationError,
)
from tests.fuzz._fuzz import corpus, fuzz
from tests.unit.api._model import MODEL, SERVICE, SHAPES, input_shape, value_of

OPERATIONS = sorted(MODEL["operations"])
_SERIALIZER = create_serializer("json", include_validation=False)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["", "AA==", "YQ", "é", "AES_256", "k", "\u2028", "x" * 300, "x" * 9000]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@cache
def _encoder(operation: str) -> Callable[[object], object]:
    """keyplane's response encoder, compiled for the operation's input shape."""
    encoder = shapes._Compiler(SHAPES).encoder(input_shape(operation))
    assert encoder is not None
    return encoder


def _parses_or_refuses(operation: str, raw: bytes) -> None:
    refused: Exception | None = None
    try:
        request = parse_request(operation, raw)
    except (MalformedRequestError, ValidationError, UnknownOperationError) as exc:
        refused = exc
    if refused is not None:
        name, status = aws_error(refused)
        assert 400 <= status < 500, (name, refused)
        return
    members = SHAPES[input_shape(operation)].get("members", {})
    assert set(request) <= set(members)
    again = orjson.dumps(_encoder(operation)(request))
    assert parse_request(operation, again) == request


def _mutate(data: st.DataObject, node: Any) -> Any:
    if data.draw(st.integers(0, 4)) == 0:
        return data.draw(JSON)
    if isinstance(node, dict):
        return {k: _mutate(data, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mutate(data, v) for v in node]
    return node


@fuzz()
@given(operation=st.sampled_from(OPERATIONS), data=st.data())
def test_damaged_requests_parse_or_are_refused(operation, data):
    params = data.draw(value_of(input_shape(operation)), label="request")
    request = _SERIALIZER.serialize_to_request(
        params, SERVICE.operation_model(operation)
    )
    wire = orjson.loads(request["body"] or b"{}")
    # The standard library writes any integer; orjson only 64-bit ones.
    _parses_or_refuses(operation, json.dumps(_mutate(data, wire)).encode())


@fuzz()
@given(operation=st.sampled_from(OPERATIONS), value=JSON)
def test_any_json_parses_or_is_refused(operation, value):
    _parses_or_refuses(operation, json.dumps(value).encode())


@fuzz()
@given(
    operation=st.sampled_from([*OPERATIONS, "NoSuchOperation", ""]),
    raw=st.binary(max_size=96),
)
def test_any_bytes_parse_or_are_refused(operation, raw):
    _parses_or_refuses(operation, raw)


@pytest.mark.parametrize(("name", "raw"), corpus("codec"))
def test_corpus(name, raw):
    _parses_or_refuses(name.split(".", 1)[0], raw)
