"""Request parsing and response encoding against the KMS model, with AWS's messages."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import orjson
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.api import shapes
from keyplane.api.shapes import encode_response, operation_names, parse_request
from keyplane.errors import (
    MalformedRequestError,
    UnknownOperationError,
    ValidationError,
)

from ._model import MODEL, SERVICE, SHAPES, expected, input_shape, value_of

ALL_OPERATIONS = sorted(MODEL["operations"])
ONE = "1 validation error detected: "


def body(**members: Any) -> bytes:
    return orjson.dumps(members)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def problem(shown: str, path: str, text: str) -> str:
    return f"{shown} at '{path}' failed to satisfy constraint: {text}"


def assert_invalid(operation: str, raw: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request(operation, raw)
    assert str(caught.value) == message


def serialize(operation: str, params: dict[str, Any]) -> bytes:
    """The body boto3 would send for ``params``."""
    serializer = create_serializer("json", include_validation=False)
    request = serializer.serialize_to_request(
        params, SERVICE.operation_model(operation)
    )
    raw = request["body"]
    return raw if isinstance(raw, bytes) else raw.encode()


# --- the operations -----------------------------------------------------------------


def test_operation_names_are_the_models():
    names = operation_names()
    assert names == frozenset(MODEL["operations"])
    assert {"Encrypt", "Decrypt", "GenerateDataKey", "CreateKey"} <= names


@pytest.mark.parametrize("operation", ALL_OPERATIONS)
def test_empty_request_names_every_required_member(operation):
    shape = SHAPES[input_shape(operation)]
    required = [m for m in shape["members"] if m in shape.get("required", ())]
    if not required:
        assert parse_request(operation, b"") == {}
        assert parse_request(operation, b"{}") == {}
        return
    with pytest.raises(ValidationError) as caught:
        parse_request(operation, b"{}")
    message = str(caught.value)
    count = len(required)
    assert message.startswith(
        f"{count} validation error{'s' if count > 1 else ''} detected: "
    )
    for member in required:
        path = member[0].lower() + member[1:]
        assert problem("Value null", path, "Member must not be null") in message
    assert message.count("; ") == count - 1


@pytest.mark.parametrize("operation", ALL_OPERATIONS)
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_valid_request_parses_as_boto3_sends_it(operation, data):
    params = data.draw(value_of(input_shape(operation)))
    raw = serialize(operation, params)
    assert parse_request(operation, raw) == expected(input_shape(operation), params)


@cache
def input_encoder(operation: str) -> Callable[[object], object]:
    """Our response encoder, compiled for an input shape instead of an output."""
    encoder = shapes._Compiler(SHAPES).encoder(input_shape(operation))
    assert encoder is not None
    return encoder


@pytest.mark.parametrize("operation", ["Encrypt", "GenerateDataKey", "CreateKey"])
@settings(max_examples=200)
@given(data=st.data())
def test_common_requests_round_trip(operation, data):
    params = data.draw(value_of(input_shape(operation)))
    want = expected(input_shape(operation), params)
    ours = orjson.dumps(input_encoder(operation)(params))
    assert parse_request(operation, ours) == want
    got = parse_request(operation, serialize(operation, params))
    assert got == want
    members = SHAPES[input_shape(operation)]["members"]
    for member, value in got.items():
        is_blob = SHAPES[members[member]["shape"]]["type"] == "blob"
        assert isinstance(value, bytes) == is_blob


def test_unknown_operation():
    with pytest.raises(UnknownOperationError):
        parse_request("Encrypt2", b"{}")
    with pytest.raises(UnknownOperationError):
        parse_request("", b"")


# --- exact validation messages -------------------------------------------------------


def test_missing_key_id():
    assert_invalid(
        "DescribeKey",
        b"{}",
        ONE + problem("Value null", "keyId", "Member must not be null"),
    )


def test_key_id_too_long():
    key_id = "k" * 2049
    assert_invalid(
        "DescribeKey",
        body(KeyId=key_id),
        ONE
        + problem(
            f"Value '{key_id}'",
            "keyId",
            "Member must have length less than or equal to 2048",
        ),
    )


def test_key_id_empty():
    assert_invalid(
        "DescribeKey",
        body(KeyId=""),
        ONE
        + problem(
            "Value ''", "keyId", "Member must have length greater than or equal to 1"
        ),
    )


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0, "Member must have value greater than or equal to 1"),
        (1025, "Member must have value less than or equal to 1024"),
    ],
)
def test_number_of_bytes_out_of_range(number, text):
    assert_invalid(
        "GenerateRandom",
        body(NumberOfBytes=number),
        ONE + problem(f"Value '{number}'", "numberOfBytes", text),
    )


@pytest.mark.parametrize("number", [1, 1024])
def test_number_of_bytes_bounds_are_inclusive(number):
    assert parse_request("GenerateRandom", body(NumberOfBytes=number)) == {
        "NumberOfBytes": number
    }


def test_bad_data_key_spec():
    assert_invalid(
        "GenerateDataKey",
        body(KeyId="k", KeySpec="AES_512"),
        ONE
        + problem(
            "Value 'AES_512'",
            "keySpec",
            "Member must satisfy enum value set: [AES_256, AES_128]",
        ),
    )


def test_bad_key_spec_lists_the_models_values_in_order():
    values = ", ".join(SHAPES["KeySpec"]["enum"])
    assert_invalid(
        "CreateKey",
        body(KeySpec="AES_256"),
        ONE
        + problem(
            "Value 'AES_256'",
            "keySpec",
            f"Member must satisfy enum value set: [{values}]",
        ),
    )


def test_plaintext_too_long_is_not_shown():
    # AWS leaves blobs and sensitive members out of the message entirely.
    assert_invalid(
        "Encrypt",
        body(KeyId="k", Plaintext=b64(b"\x01" * 4097)),
        ONE
        + problem(
            "Value", "plaintext", "Member must have length less than or equal to 4096"
        ),
    )


def test_plaintext_of_4096_bytes_is_accepted():
    got = parse_request("Encrypt", body(KeyId="k", Plaintext=b64(b"\x01" * 4096)))
    assert got["Plaintext"] == b"\x01" * 4096


def test_empty_plaintext():
    assert_invalid(
        "Encrypt",
        body(KeyId="k", Plaintext=""),
        ONE
        + problem(
            "Value", "plaintext", "Member must have length greater than or equal to 1"
        ),
    )


def test_tag_without_value():
    assert_invalid(
        "CreateKey",
        body(Tags=[{"TagKey": "team", "TagValue": "x"}, {"TagKey": "env"}]),
        ONE
        + problem("Value null", "tags.2.member.tagValue", "Member must not be null"),
    )


def test_tag_key_too_long():
    key = "t" * 129
    assert_invalid(
        "TagResource",
        body(KeyId="k", Tags=[{"TagKey": key, "TagValue": ""}]),
        ONE
        + problem(
            f"Value '{key}'",
            "tags.1.member.tagKey",
            "Member must have length less than or equal to 128",
        ),
    )


def test_two_errors_at_once():
    assert_invalid(
        "GenerateDataKey",
        body(KeyId="", NumberOfBytes=2000),
        "2 validation errors detected: "
        + problem(
            "Value ''", "keyId", "Member must have length greater than or equal to 1"
        )
        + "; "
        + problem(
            "Value '2000'",
            "numberOfBytes",
            "Member must have value less than or equal to 1024",
        ),
    )


def test_length_and_pattern_both_reported():
    assert_invalid(
        "CreateAlias",
        body(AliasName="", TargetKeyId="k"),
        "2 validation errors detected: "
        + problem(
            "Value ''",
            "aliasName",
            "Member must have length greater than or equal to 1",
        )
        + "; "
        + problem(
            "Value ''",
            "aliasName",
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ),
    )


@pytest.mark.parametrize("alias", ["alias/has space", "alias/é", "alias/x\n"])
def test_pattern_must_match_in_full(alias):
    with pytest.raises(ValidationError, match="regular expression pattern"):
        parse_request("CreateAlias", body(AliasName=alias, TargetKeyId="k"))


def test_pattern_word_class_is_ascii_as_in_java():
    # PolicyName is "[\w]+"; Java's \w, like re.ASCII's, has no accented letters.
    assert parse_request("GetKeyPolicy", body(KeyId="k", PolicyName="default_1"))
    with pytest.raises(ValidationError, match="regular expression pattern"):
        parse_request("GetKeyPolicy", body(KeyId="k", PolicyName="défaut"))


@pytest.mark.parametrize(
    ("tail", "valid"),
    [
        ("bucket", True),
        ("a.b", True),
        ("b\u00e9", True),
        ("b\rx", False),
        ("b\u2028x", False),
        ("b\nx", False),
    ],
)
def test_dot_stops_at_line_terminators_as_in_java(tail, valid):
    arn = f"arn:aws:s3:us-east-1:111122223333:{tail}"
    raw = body(
        KeyId="k",
        GranteePrincipal="p",
        Operations=["Encrypt"],
        Constraints={"SourceArn": arn},
    )
    if valid:
        assert parse_request("CreateGrant", raw)["Constraints"] == {"SourceArn": arn}
    else:
        with pytest.raises(ValidationError, match=r"constraints\.sourceArn"):
            parse_request("CreateGrant", raw)


def test_sensitive_string_is_not_shown():
    assert_invalid(
        "UpdateCustomKeyStore",
        body(CustomKeyStoreId="cks-1", KeyStorePassword="short"),
        ONE
        + problem(
            "Value",
            "keyStorePassword",
            "Member must have length greater than or equal to 7",
        ),
    )


def test_too_many_grant_tokens():
    assert_invalid(
        "Encrypt",
        body(KeyId="k", Plaintext="AA==", GrantTokens=["t"] * 11),
        ONE
        + problem(
            "Value", "grantTokens", "Member must have length less than or equal to 10"
        ),
    )


def test_list_element_path():
    assert_invalid(
        "Encrypt",
        body(KeyId="k", Plaintext="AA==", GrantTokens=["t", ""]),
        ONE
        + problem(
            "Value ''",
            "grantTokens.2.member",
            "Member must have length greater than or equal to 1",
        ),
    )


def test_nested_structure_path():
    assert_invalid(
        "GenerateDataKey",
        body(KeyId="k", Recipient={"KeyEncryptionAlgorithm": "RSA"}),
        ONE
        + problem(
            "Value 'RSA'",
            "recipient.keyEncryptionAlgorithm",
            "Member must satisfy enum value set: ["
            + ", ".join(SHAPES["KeyEncryptionMechanism"]["enum"])
            + "]",
        ),
    )


# --- what parses and how ------------------------------------------------------------


def test_blobs_decode_to_bytes_and_the_rest_is_as_given():
    got = parse_request(
        "Encrypt",
        body(
            KeyId="alias/app",
            Plaintext=b64(b"\x00secret\xff"),
            EncryptionContext={"tenant": "t-42", "": ""},
            GrantTokens=["g"],
            EncryptionAlgorithm="SYMMETRIC_DEFAULT",
            DryRun=False,
        ),
    )
    assert got == {
        "KeyId": "alias/app",
        "Plaintext": b"\x00secret\xff",
        "EncryptionContext": {"tenant": "t-42", "": ""},
        "GrantTokens": ["g"],
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DryRun": False,
    }


def test_unknown_members_are_dropped():
    got = parse_request(
        "CreateKey",
        body(
            Description="d",
            Surprise=[1, {"x": None}],
            Tags=[{"TagKey": "a", "TagValue": "b", "Extra": 1}],
        ),
    )
    assert got == {"Description": "d", "Tags": [{"TagKey": "a", "TagValue": "b"}]}


def test_null_members_are_absent():
    assert parse_request("ListKeys", body(Limit=None, Marker=None)) == {}
    assert_invalid(
        "DescribeKey",
        body(KeyId=None),
        ONE + problem("Value null", "keyId", "Member must not be null"),
    )


def test_timestamps_become_float_seconds():
    got = parse_request(
        "ImportKeyMaterial",
        body(
            KeyId="k",
            ImportToken=b64(b"t"),
            EncryptedKeyMaterial=b64(b"m"),
            ValidTo=1700000000,
            ExpirationModel="KEY_MATERIAL_EXPIRES",
        ),
    )
    assert got["ValidTo"] == 1700000000.0
    assert type(got["ValidTo"]) is float


def test_empty_encryption_context_is_fine():
    assert (
        parse_request(
            "Encrypt", body(KeyId="k", Plaintext="AA==", EncryptionContext={})
        )["EncryptionContext"]
        == {}
    )


# --- malformed requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "members", "message"),
    [
        (
            "GenerateRandom",
            {"NumberOfBytes": "32"},
            "STRING_VALUE can not be converted to an Integer at 'numberOfBytes'",
        ),
        (
            "GenerateRandom",
            {"NumberOfBytes": True},
            "TRUE_VALUE can not be converted to an Integer at 'numberOfBytes'",
        ),
        (
            "GenerateRandom",
            {"NumberOfBytes": 32.0},
            "DECIMAL_VALUE can not be converted to an Integer at 'numberOfBytes'",
        ),
        (
            "GenerateRandom",
            {"NumberOfBytes": 2**31},
            "NUMBER_VALUE can not be converted to an Integer at 'numberOfBytes'",
        ),
        (
            "DescribeKey",
            {"KeyId": ["k"]},
            "Start of list found where not expected at 'keyId'",
        ),
        (
            "DescribeKey",
            {"KeyId": {"k": 1}},
            "Start of structure or map found where not expected at 'keyId'",
        ),
        (
            "DescribeKey",
            {"KeyId": 7},
            "NUMBER_VALUE can not be converted to a String at 'keyId'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": 12},
            "only base-64-encoded strings are convertible to bytes at 'plaintext'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "AA==", "GrantTokens": "g"},
            "Unexpected field type at 'grantTokens'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "AA==", "GrantTokens": [None]},
            "NULL_VALUE can not be converted to a String at 'grantTokens.1.member'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "AA==", "EncryptionContext": ["a"]},
            "Start of list found where not expected at 'encryptionContext'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "AA==", "EncryptionContext": {"a": 1}},
            "NUMBER_VALUE can not be converted to a String at 'encryptionContext'",
        ),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "AA==", "DryRun": "true"},
            "STRING_VALUE can not be converted to an Boolean at 'dryRun'",
        ),
        (
            "CreateKey",
            {"Tags": [["TagKey", "a"]]},
            "Start of list found where not expected at 'tags.1.member'",
        ),
        (
            "CreateKey",
            {"Tags": {"TagKey": "a"}},
            "Start of structure or map found where not expected at 'tags'",
        ),
        (
            "ImportKeyMaterial",
            {
                "KeyId": "k",
                "ImportToken": "AA==",
                "EncryptedKeyMaterial": "AA==",
                "ValidTo": "2024-01-01T00:00:00Z",
            },
            "STRING_VALUE can not be converted to a Date at 'validTo'",
        ),
    ],
)
def test_wrong_types(operation, members, message):
    with pytest.raises(MalformedRequestError) as caught:
        parse_request(operation, orjson.dumps(members))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "encoded", ["YQ=", "YQ", "Y", "YQ==YQ==", "Y Q==", "YQ==\n", "====", "YQ-_", "é"]
)
def test_bad_base64(encoded):
    with pytest.raises(MalformedRequestError) as caught:
        parse_request("Encrypt", body(KeyId="k", Plaintext=encoded))
    assert str(caught.value) == "Invalid base64-encoded value at 'plaintext'"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "Start of list found where not expected"),
        (b"[{}]", "Start of list found where not expected"),
        (b"1", "Unexpected field type"),
        (b'"KeyId"', "Unexpected field type"),
        (b"null", "Unexpected field type"),
        (b"true", "Unexpected field type"),
        (b"{", "Unexpected end of input"),
        (b" ", "Unexpected end of input"),
        (b'{"KeyId": "k"', "Unexpected end of input"),
    ],
)
def test_body_not_an_object(raw, message):
    with pytest.raises(MalformedRequestError) as caught:
        parse_request("DescribeKey", raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "raw",
    [b"{'KeyId': 'k'}", b'{"KeyId": "k"} x', b"\xff\xfe", b'{"a": NaN}', b"1e999"],
)
def test_invalid_json_is_malformed_and_not_echoed(raw):
    with pytest.raises(MalformedRequestError) as caught:
        parse_request("DescribeKey", raw)
    assert str(caught.value).startswith("Malformed JSON input at character ")
    assert "KeyId" not in str(caught.value)


# --- fuzzing ------------------------------------------------------------------------

FUZZED = [
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "CreateKey",
    "CreateGrant",
    "TagResource",
    "ImportKeyMaterial",
    "ListKeys",
    "ReEncrypt",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "AA==", "YQ", "AES_256", "k", "x" * 5000]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _mutate(data: st.DataObject, node: Any) -> Any:
    """``node`` with some of its values swapped for arbitrary JSON, at any depth."""
    if data.draw(st.integers(0, 4)) == 0:
        return data.draw(json_values)
    if isinstance(node, dict):
        return {k: _mutate(data, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mutate(data, v) for v in node]
    return node


def _parses_or_refuses(operation: str, raw: bytes) -> None:
    with contextlib.suppress(ValidationError, MalformedRequestError):
        parse_request(operation, raw)


@settings(max_examples=500)
@given(operation=st.sampled_from(FUZZED), data=st.data())
def test_fuzz_damaged_requests_only_raise_request_errors(operation, data):
    # Starting from a valid request reaches deep members (tags, constraints, the
    # recipient) that random objects almost never would.
    wire = orjson.loads(
        serialize(operation, data.draw(value_of(input_shape(operation))))
    )
    _parses_or_refuses(operation, json.dumps(_mutate(data, wire)).encode())


@settings(max_examples=300)
@given(operation=st.sampled_from(FUZZED), value=json_values)
def test_fuzz_any_json_only_raises_request_errors(operation, value):
    _parses_or_refuses(operation, json.dumps(value).encode())


@settings(max_examples=300)
@given(operation=st.sampled_from(FUZZED), raw=st.binary(max_size=64))
def test_fuzz_bytes_only_raise_request_errors(operation, raw):
    _parses_or_refuses(operation, raw)


@settings(max_examples=50, suppress_health_check=[HealthCheck.large_base_example])
@given(secret=st.binary(min_size=4097, max_size=4200))
def test_a_plaintext_never_reaches_a_message(secret):
    encoded = b64(secret)
    with pytest.raises(ValidationError) as caught:
        parse_request("Encrypt", body(KeyId="", Plaintext=encoded))
    assert encoded not in str(caught.value)
    assert repr(secret) not in str(caught.value)


# --- responses ----------------------------------------------------------------------


def decode(operation: str, raw: bytes) -> dict[str, Any]:
    """Read a response body as botocore does for boto3 callers."""
    parser = create_parser("json")
    output = SERVICE.operation_model(operation).output_shape
    parsed = parser.parse({"status_code": 200, "headers": {}, "body": raw}, output)
    parsed.pop("ResponseMetadata", None)
    return parsed


def test_encrypt_response_has_base64_blob_and_drops_none():
    raw = encode_response(
        "Encrypt",
        {
            "CiphertextBlob": b"\x00\x01\xfe",
            "KeyId": "arn:k",
            "EncryptionAlgorithm": None,
        },
    )
    assert orjson.loads(raw) == {"CiphertextBlob": "AAH+", "KeyId": "arn:k"}
    assert decode("Encrypt", raw) == {
        "CiphertextBlob": b"\x00\x01\xfe",
        "KeyId": "arn:k",
    }


def test_nested_tag_list_response():
    result = {
        "Tags": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": ""}],
        "NextMarker": None,
        "Truncated": False,
    }
    raw = encode_response("ListResourceTags", result)
    assert orjson.loads(raw) == {
        "Tags": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": ""}],
        "Truncated": False,
    }


def test_key_metadata_with_timestamps():
    created = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    deleting = datetime(2024, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    result = {
        "KeyMetadata": {
            "AWSAccountId": "111122223333",
            "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
            "Arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd",
            "CreationDate": created,
            "DeletionDate": deleting,
            "ValidTo": 1700000000,
            "Enabled": False,
            "Description": "",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "PendingDeletion",
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": False,
            "PendingDeletionWindowInDays": 7,
            "MultiRegionConfiguration": None,
        }
    }
    raw = encode_response("DescribeKey", result)
    wire = orjson.loads(raw)["KeyMetadata"]
    assert wire["CreationDate"] == created.timestamp() == 1714566615.25
    assert wire["DeletionDate"] == deleting.timestamp()
    assert wire["ValidTo"] == 1700000000.0
    assert "MultiRegionConfiguration" not in wire
    parsed = decode("DescribeKey", raw)["KeyMetadata"]
    assert parsed["CreationDate"] == created
    assert parsed["DeletionDate"] == deleting
    assert parsed["PendingDeletionWindowInDays"] == 7


def test_float_timestamp_passes_through():
    raw = encode_response(
        "DescribeKey", {"KeyMetadata": {"KeyId": "k", "CreationDate": 1.5}}
    )
    assert orjson.loads(raw) == {"KeyMetadata": {"KeyId": "k", "CreationDate": 1.5}}


def test_naive_datetime_is_refused():
    with pytest.raises(TypeError):
        encode_response(
            "DescribeKey",
            {"KeyMetadata": {"KeyId": "k", "CreationDate": datetime(2024, 1, 1)}},
        )


@pytest.mark.parametrize(
    "result",
    [
        {"CiphertextBlob": b"x", "Surprise": 1},
        {"CiphertextBlob": b"x", "keyId": "lower-case is not the AWS name"},
    ],
)
def test_unknown_member_raises(result):
    with pytest.raises(KeyError):
        encode_response("Encrypt", result)


def test_unknown_nested_member_raises():
    with pytest.raises(KeyError):
        encode_response("DescribeKey", {"KeyMetadata": {"KeyId": "k", "Secret": b"x"}})


def test_blob_of_wrong_type_raises():
    with pytest.raises(TypeError):
        encode_response("Encrypt", {"CiphertextBlob": "not bytes"})


def test_unknown_operation_in_response_raises():
    with pytest.raises(KeyError):
        encode_response("Encrypt2", {})


def test_operation_without_output():
    assert encode_response("CreateAlias", {}) == b"{}"
    with pytest.raises(KeyError):
        encode_response("CreateAlias", {"AliasName": "alias/x"})


def test_data_key_response_round_trips_through_botocore():
    result = {
        "CiphertextBlob": bytes(range(256)),
        "Plaintext": b"\x00" * 32,
        "KeyId": "arn:k",
        "KeyMaterialId": None,
        "CiphertextForRecipient": None,
    }
    raw = encode_response("GenerateDataKey", result)
    assert decode("GenerateDataKey", raw) == {
        "CiphertextBlob": bytes(range(256)),
        "Plaintext": b"\x00" * 32,
        "KeyId": "arn:k",
    }


# --- other models: maps with constrained keys and values, longs, doubles ------------

SYNTHETIC = {
    "operations": {
        "Put": {"name": "Put", "input": {"shape": "PutRequest"}},
    },
    "shapes": {
        "PutRequest": {
            "type": "structure",
            "required": ["Labels"],
            "members": {
                "Labels": {"shape": "Labels"},
                "Size": {"shape": "Size"},
                "Ratio": {"shape": "Ratio"},
            },
        },
        "Labels": {
            "type": "map",
            "key": {"shape": "LabelKey"},
            "value": {"shape": "LabelValue"},
            "min": 1,
            "max": 2,
        },
        "LabelKey": {"type": "string", "min": 1, "max": 3},
        "LabelValue": {"type": "string", "max": 2},
        "Size": {"type": "long", "min": 0},
        "Ratio": {"type": "double", "min": 0, "max": 1},
    },
}


def synthetic(members: dict[str, Any]) -> dict[str, Any]:
    compiled = shapes._compile(SYNTHETIC)
    problems: list[tuple[str, str, str]] = []
    got = compiled.parsers["Put"](members, "", problems)
    if problems:
        raise shapes._validation_error(problems)
    return got


def test_map_with_constrained_keys_and_values():
    assert synthetic({"Labels": {"a": "b"}, "Size": 2**40, "Ratio": 0.5}) == {
        "Labels": {"a": "b"},
        "Size": 2**40,
        "Ratio": 0.5,
    }
    with pytest.raises(ValidationError) as caught:
        synthetic({"Labels": {"long": "value"}})
    assert str(caught.value) == (
        "2 validation errors detected: "
        + problem(
            "Value",
            "labels",
            "Map keys must satisfy constraint: [Member must have length less than "
            "or equal to 3, Member must have length greater than or equal to 1]",
        )
        + "; "
        + problem(
            "Value",
            "labels",
            "Map value must satisfy constraint: "
            "[Member must have length less than or equal to 2]",
        )
    )
    with pytest.raises(ValidationError, match=r"less than or equal to 2$"):
        synthetic({"Labels": {"a": "", "b": "", "c": ""}})


def test_long_and_double_ranges():
    with pytest.raises(ValidationError, match="Value '-1' at 'size'"):
        synthetic({"Labels": {"a": ""}, "Size": -1})
    with pytest.raises(ValidationError, match=re.escape("Value '1.5' at 'ratio'")):
        synthetic({"Labels": {"a": ""}, "Ratio": 1.5})
    with pytest.raises(MalformedRequestError):
        synthetic({"Labels": {"a": ""}, "Size": 2**63})
    with pytest.raises(MalformedRequestError):
        synthetic({"Labels": {"a": ""}, "Ratio": "0.5"})
    assert math.isclose(synthetic({"Labels": {"a": ""}, "Ratio": 1})["Ratio"], 1)


def test_recursive_shapes_are_refused_at_compile_time():
    model = {
        "operations": {"Op": {"name": "Op", "input": {"shape": "Node"}}},
        "shapes": {
            "Node": {"type": "structure", "members": {"Next": {"shape": "Node"}}},
        },
    }
    with pytest.raises(ValueError, match="recursive"):
        shapes._compile(model)
