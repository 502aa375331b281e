"""Every operation, every kind of malformed member, sent raw to a running server.

For each operation keyplane serves, a valid request (naming a real key, alias, grant,
ciphertext and grant token) is taken apart member by member, as the KMS model
describes each member: a value of each wrong JSON type, a string, blob, list or number
past its maximum or short of its minimum, a value outside its enum or its pattern, a
blob that is not base64, a key identifier that is malformed or names nothing, each
required member left out or null, and a body that is not a JSON object. Each request is
signed over its malformed body and sent on a kept-alive connection, and the answer
must be the AWS error for that malformation: its ``__type``, and a message naming the
member's path. An unknown member is ignored, as AWS's JSON services drop members they
do not model and as ``keyplane.api.shapes.parse_request`` documents.

Around each operation's table, the server's state (keys with their metadata, policies,
grants, tags and rotations, and the aliases) is read through boto3 and must not have
changed, and a normal Encrypt and Decrypt must still work.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.loaders import Loader

from keyplane.api import codec
from keyplane.api.shapes import _compile_pattern
from tests.integration.conftest import ACCOUNT, REGION, signed_headers

MODEL = Loader().load_service_model("kms", "service-2")
SHAPES: Mapping[str, Mapping[str, Any]] = MODEL["shapes"]
OPERATIONS = sorted(codec.OPERATIONS)
ADMIN = f"arn:aws:iam::{ACCOUNT}:user/admin"
ALIAS = "alias/malformed-test"
CONTEXT = {"purpose": "malformed"}
UNKNOWN = {"UnknownMember": {"nested": [1, "two", None]}}
MISSING_CLUSTER = "cluster-abcdefghijk"
MISSING_STORE = "cks-1234567890abcdef0"

SERIALIZATION = "SerializationException"
VALIDATION = "ValidationException"
# Errors any operation may answer, which the model lists for none of them.
COMMON = frozenset(
    {
        VALIDATION,
        SERIALIZATION,
        "AccessDeniedException",
        "IncompleteSignatureException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
        "ThrottlingException",
        "UnknownOperationException",
        "RequestEntityTooLargeException",
    }
)
_COUNT = r"^\d+ validation errors? detected: "


# --- the wire -------------------------------------------------------------------------


class Wire:
    """One kept-alive connection to the server, reopened if the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.sent = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Send one request signed over ``body``; the status and decoded answer."""
        head = b"POST / HTTP/1.1\r\nHost: x\r\n"
        for name, value in signed_headers(body, target).items():
            head += f"{name}: {value}\r\n".encode()
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.buffer = b""
        self.sock.sendall(request)
        self.sent += 1
        status, headers, answer = self._response()
        if headers.get(b"connection") == b"close":
            self.close()
        return status, json.loads(answer)

    def _response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self.sock is not None
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers[b"content-length"])
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(b" ")[1]), headers, body

    def _read(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        self.buffer += chunk


# --- the world each table names -----------------------------------------------------


@dataclass(frozen=True)
class World:
    key: str
    arn: str
    other: str  # a second key, for ReEncrypt and UpdateAlias
    blob: str  # base64, under ``key`` with CONTEXT
    token: str
    grant: str
    policy: str


@pytest.fixture(scope="module")
def world(kms: Any) -> World:
    meta = kms.create_key(
        Description="malformed", Tags=[{"TagKey": "k", "TagValue": "v"}]
    )["KeyMetadata"]
    key = meta["KeyId"]
    other = kms.create_key(Description="other")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=key)
    blob = kms.encrypt(KeyId=key, Plaintext=b"hi", EncryptionContext=CONTEXT)
    grant = kms.create_grant(
        KeyId=key,
        GranteePrincipal=ADMIN,
        RetiringPrincipal=ADMIN,
        Operations=["Encrypt", "Decrypt", "DescribeKey"],
    )
    return World(
        key=key,
        arn=meta["Arn"],
        other=other,
        blob=base64.b64encode(blob["CiphertextBlob"]).decode(),
        token=grant["GrantToken"],
        grant=grant["GrantId"],
        policy=kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"],
    )


@pytest.fixture(scope="module")
def wire(server: Any) -> Iterator[Wire]:
    connection = Wire(server.port)
    yield connection
    connection.close()


def baseline(operation: str, w: World) -> dict[str, Any]:
    """A valid request for ``operation``: every malformation below changes one member
    of it, so that the malformation alone can be what the server refuses."""
    key = {"KeyId": w.key}
    tokens = {"GrantTokens": [w.token]}
    page = {"Limit": 10}
    b64 = base64.b64encode(b"hi").decode()
    table: dict[str, dict[str, Any]] = {
        "CreateKey": {
            "Description": "d",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "Origin": "AWS_KMS",
            "Policy": w.policy,
            "BypassPolicyLockoutSafetyCheck": False,
            "Tags": [{"TagKey": "k", "TagValue": "v"}],
            "MultiRegion": False,
        },
        "DescribeKey": {**key, **tokens},
        "ListKeys": page,
        "EnableKey": key,
        "DisableKey": key,
        "ScheduleKeyDeletion": {**key, "PendingWindowInDays": 7},
        "CancelKeyDeletion": key,
        "UpdateKeyDescription": {**key, "Description": "new"},
        "CreateAlias": {"AliasName": "alias/malformed-new", "TargetKeyId": w.key},
        "UpdateAlias": {"AliasName": ALIAS, "TargetKeyId": w.other},
        "DeleteAlias": {"AliasName": ALIAS},
        "ListAliases": {**key, **page},
        "TagResource": {**key, "Tags": [{"TagKey": "k2", "TagValue": "v2"}]},
        "UntagResource": {**key, "TagKeys": ["k"]},
        "ListResourceTags": {**key, **page},
        "Encrypt": {
            **key,
            "Plaintext": b64,
            "EncryptionContext": CONTEXT,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DryRun": False,
            **tokens,
        },
        "Decrypt": {
            "CiphertextBlob": w.blob,
            "EncryptionContext": CONTEXT,
            **key,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DryRun": False,
            **tokens,
        },
        "ReEncrypt": {
            "CiphertextBlob": w.blob,
            "SourceEncryptionContext": CONTEXT,
            "SourceKeyId": w.key,
            "DestinationKeyId": w.other,
            "DestinationEncryptionContext": {"to": "other"},
            "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DryRun": False,
            **tokens,
        },
        "GenerateDataKey": {
            **key,
            "EncryptionContext": CONTEXT,
            "KeySpec": "AES_256",
            "DryRun": False,
            **tokens,
        },
        "GenerateDataKeyWithoutPlaintext": {
            **key,
            "EncryptionContext": CONTEXT,
            "NumberOfBytes": 32,
            "DryRun": False,
            **tokens,
        },
        "GenerateRandom": {"NumberOfBytes": 16},
        "PutKeyPolicy": {
            **key,
            "PolicyName": "default",
            "Policy": w.policy,
            "BypassPolicyLockoutSafetyCheck": False,
        },
        "GetKeyPolicy": {**key, "PolicyName": "default"},
        "ListKeyPolicies": {**key, **page},
        "CreateGrant": {
            **key,
            "GranteePrincipal": ADMIN,
            "RetiringPrincipal": ADMIN,
            "Operations": ["Encrypt"],
            "Constraints": {"EncryptionContextSubset": CONTEXT},
            "Name": "malformed",
            "DryRun": False,
            **tokens,
        },
        "ListGrants": {**key, **page, "GrantId": w.grant, "GranteePrincipal": ADMIN},
        "ListRetirableGrants": {"RetiringPrincipal": ADMIN, **page},
        "RetireGrant": {**key, "GrantId": w.grant, "DryRun": False},
        "RevokeGrant": {**key, "GrantId": w.grant, "DryRun": False},
        "EnableKeyRotation": {**key, "RotationPeriodInDays": 365},
        "DisableKeyRotation": key,
        "GetKeyRotationStatus": key,
        "RotateKeyOnDemand": key,
        "ListKeyRotations": {**key, "IncludeKeyMaterial": "ALL_KEY_MATERIAL", **page},
        # --- imported key material: the baseline key's origin is AWS_KMS, so these
        # change nothing (see _HARMLESS).
        "GetParametersForImport": {
            **key,
            "WrappingAlgorithm": "RSAES_OAEP_SHA_256",
            "WrappingKeySpec": "RSA_2048",
        },
        "ImportKeyMaterial": {
            **key,
            "ImportToken": b64,
            "EncryptedKeyMaterial": b64,
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
            "ImportType": "EXISTING_KEY_MATERIAL",
            "KeyMaterialId": "a" * 64,
            "KeyMaterialDescription": "malformed",
        },
        "DeleteImportedKeyMaterial": {**key, "KeyMaterialId": "a" * 64},
        # --- custom key stores: this server has no cluster and no key store, so
        # these name ones that do not exist (see _HARMLESS).
        "CreateCustomKeyStore": {
            "CustomKeyStoreName": "malformed-store",
            "CloudHsmClusterId": MISSING_CLUSTER,
            "TrustAnchorCertificate": "-----BEGIN CERTIFICATE-----",
            "KeyStorePassword": "kmsuser-password",
            "CustomKeyStoreType": "AWS_CLOUDHSM",
        },
        "DescribeCustomKeyStores": page,
        "ConnectCustomKeyStore": {"CustomKeyStoreId": MISSING_STORE},
        "DisconnectCustomKeyStore": {"CustomKeyStoreId": MISSING_STORE},
        "UpdateCustomKeyStore": {
            "CustomKeyStoreId": MISSING_STORE,
            "NewCustomKeyStoreName": "renamed",
        },
        "DeleteCustomKeyStore": {"CustomKeyStoreId": MISSING_STORE},
    }
    return table[operation]


# What each operation answers to its baseline plus an unknown member, with one change
# that keeps it from changing anything: a key that does not exist, a DryRun, or a
# policy that is not one. Operations that change nothing answer 200.
_HARMLESS: Mapping[str, tuple[dict[str, Any], str]] = {
    "CreateKey": ({"Policy": "not a policy"}, "MalformedPolicyDocumentException"),
    "EnableKey": ({"KeyId": "missing"}, "NotFoundException"),
    "DisableKey": ({"KeyId": "missing"}, "NotFoundException"),
    "ScheduleKeyDeletion": ({"KeyId": "missing"}, "NotFoundException"),
    "CancelKeyDeletion": ({"KeyId": "missing"}, "NotFoundException"),
    "UpdateKeyDescription": ({"KeyId": "missing"}, "NotFoundException"),
    "CreateAlias": ({"TargetKeyId": "missing"}, "NotFoundException"),
    "UpdateAlias": ({"TargetKeyId": "missing"}, "NotFoundException"),
    "DeleteAlias": ({"AliasName": "alias/missing"}, "NotFoundException"),
    "TagResource": ({"KeyId": "missing"}, "NotFoundException"),
    "UntagResource": ({"KeyId": "missing"}, "NotFoundException"),
    "PutKeyPolicy": ({"KeyId": "missing"}, "NotFoundException"),
    "CreateGrant": ({"DryRun": True}, "DryRunOperationException"),
    "RetireGrant": ({"DryRun": True}, "DryRunOperationException"),
    "RevokeGrant": ({"DryRun": True}, "DryRunOperationException"),
    "EnableKeyRotation": ({"KeyId": "missing"}, "NotFoundException"),
    "DisableKeyRotation": ({"KeyId": "missing"}, "NotFoundException"),
    "RotateKeyOnDemand": ({"KeyId": "missing"}, "NotFoundException"),
    "GetParametersForImport": ({}, "UnsupportedOperationException"),
    "ImportKeyMaterial": ({}, "UnsupportedOperationException"),
    "DeleteImportedKeyMaterial": ({}, "UnsupportedOperationException"),
    "CreateCustomKeyStore": ({}, "CloudHsmClusterNotFoundException"),
    "ConnectCustomKeyStore": ({}, "CustomKeyStoreNotFoundException"),
    "DisconnectCustomKeyStore": ({}, "CustomKeyStoreNotFoundException"),
    "UpdateCustomKeyStore": ({}, "CustomKeyStoreNotFoundException"),
    "DeleteCustomKeyStore": ({}, "CustomKeyStoreNotFoundException"),
}


# --- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One malformed request, and the error it must get."""

    what: str
    body: bytes
    kind: str  # the AWS __type, or "" for success
    message: str = ""  # a regular expression the message must match (search)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _json_kind(shape: Mapping[str, Any]) -> set[str]:
    """The JSON kinds a member of ``shape`` may take."""
    kind = shape["type"]
    if kind in ("string", "blob"):
        return {"string"}
    if kind in ("integer", "long"):
        return {"integer"}
    if kind in ("float", "double", "timestamp"):
        return {"integer", "decimal"}
    if kind == "boolean":
        return {"boolean"}
    if kind == "list":
        return {"list"}
    return {"object"}  # structure or map


_WRONG_TYPES: Mapping[str, Any] = {
    "string": "text",
    "integer": 7,
    "decimal": 1.5,
    "boolean": True,
    "list": ["text"],
    "object": {"text": "text"},
}


def _fits(shape: Mapping[str, Any], value: str) -> bool:
    pattern = shape.get("pattern")
    return pattern is None or _compile_pattern(pattern).fullmatch(value) is not None


def _string_of(shape: Mapping[str, Any], n: int) -> str:
    """A string of length ``n`` that fits the shape's pattern if any such is at hand."""
    for template in ("a" * n, ("a.b." + "c" * n)[:n], ("alias/" + "a" * n)[:n]):
        if len(template) == n and _fits(shape, template):
            return template
    return "a" * n


def _problem(path: str, text: str) -> str:
    return (
        _COUNT
        + r".*at '"
        + re.escape(path)
        + r"' failed to satisfy constraint: "
        + re.escape(text)
    )


def _at(path: str) -> str:
    return r" at '" + re.escape(path) + r"'$"


def _member_cases(
    name: str, shape_name: str, path: str, w: World
) -> Iterator[tuple[str, Any, str, str]]:
    """(what, value, __type, message pattern) for each malformation of one member."""
    shape = SHAPES[shape_name]
    kind = shape["type"]
    for json_kind, value in _WRONG_TYPES.items():
        if json_kind not in _json_kind(shape):
            yield f"{json_kind} for {kind}", value, SERIALIZATION, _at(path)
    lo, hi = shape.get("min"), shape.get("max")
    if kind == "string":
        if hi is not None:
            text = f"Member must have length less than or equal to {hi}"
            yield (
                "too long",
                _string_of(shape, hi + 1),
                VALIDATION,
                _problem(path, text),
            )
        if lo:
            text = f"Member must have length greater than or equal to {lo}"
            yield (
                "too short",
                _string_of(shape, lo - 1),
                VALIDATION,
                _problem(path, text),
            )
        if "enum" in shape:
            text = "Member must satisfy enum value set: ["
            yield "not in enum", "NOT_IN_ENUM", VALIDATION, _problem(path, text)
        if "pattern" in shape:
            text = "Member must satisfy regular expression pattern: "
            for bad in ("a b!", "\u0100", "\x01", "a\nb"):
                size_ok = (lo or 0) <= len(bad) <= (hi or len(bad))
                if size_ok and not _fits(shape, bad):
                    yield "off pattern", bad, VALIDATION, _problem(path, text)
                    break
        if shape_name == "KeyIdType":
            yield from _key_id_cases(w)
        if shape_name == "GrantTokenType":
            yield "unknown grant token", "not-a-token", "InvalidGrantTokenException", ""
    elif kind == "blob":
        invalid = "Invalid base64-encoded value"
        for bad in ("not base64!", "YQ=", "YQ==YQ==", "é"):
            yield (
                f"bad base64 {bad!r}",
                bad,
                SERIALIZATION,
                re.escape(invalid) + _at(path),
            )
        if hi is not None:
            data = base64.b64encode(bytes(hi + 1)).decode()
            text = f"Member must have length less than or equal to {hi}"
            yield "too long", data, VALIDATION, _problem(path, text)
        if lo:
            text = f"Member must have length greater than or equal to {lo}"
            yield "too short", "", VALIDATION, _problem(path, text)
    elif kind in ("integer", "long"):
        if hi is not None:
            text = f"Member must have value less than or equal to {hi}"
            yield "too large", hi + 1, VALIDATION, _problem(path, text)
        if lo is not None:
            text = f"Member must have value greater than or equal to {lo}"
            yield "too small", lo - 1, VALIDATION, _problem(path, text)
        yield "past int32", 2**31, SERIALIZATION, _at(path)
    elif kind == "list":
        member = shape["member"]["shape"]
        element = f"{path}.1.member"
        if hi is not None:
            text = f"Member must have length less than or equal to {hi}"
            value = [_string_of(SHAPES[member], 1)] * (hi + 1)
            yield "too many", value, VALIDATION, _problem(path, text)
        if lo:
            text = f"Member must have length greater than or equal to {lo}"
            yield "too few", [], VALIDATION, _problem(path, text)
        for what, value, error, message in _member_cases(name, member, element, w):
            if SHAPES[member]["type"] != "structure":
                yield f"element {what}", [value], error, message
    elif kind == "map":
        value_shape = SHAPES[shape["value"]["shape"]]
        for json_kind, value in _WRONG_TYPES.items():
            if json_kind not in _json_kind(value_shape):
                yield f"map value {json_kind}", {"k": value}, SERIALIZATION, _at(path)


def _key_id_cases(w: World) -> Iterator[tuple[str, Any, str, str]]:
    """Key identifiers that are malformed, or well formed and name no key."""
    not_found = "NotFoundException"
    yield (
        "malformed ARN",
        f"arn:aws:kms:{REGION}:{ACCOUNT}:nothing",
        "InvalidArnException",
        "^Invalid arn ",
    )
    yield (
        "ARN of no key id",
        f"arn:aws:kms:{REGION}:{ACCOUNT}:key/not-a-uuid",
        not_found,
        "",
    )
    yield "ARN of another region", w.arn.replace(REGION, "eu-west-1"), not_found, ""
    yield "not a key id", "not-a-key-id", not_found, ""
    yield "key id in upper case", w.key.upper(), not_found, ""
    yield "key id of no key", str(uuid.uuid4()), not_found, ""
    yield "alias of no key", "alias/no-such-alias", not_found, ""


def model_errors(operation: str) -> frozenset[str]:
    """The errors the model says ``operation`` may answer, and the common ones."""
    listed = MODEL["operations"][operation].get("errors", ())
    return COMMON | {error["shape"] for error in listed}


def table(operation: str, w: World) -> tuple[list[Case], list[Case]]:
    """The cases whose expected error the operation's model allows, and the rest:
    where keyplane answers an error AWS's model does not list for the operation."""
    allowed = model_errors(operation) | {""}
    found = cases(operation, w)
    return (
        [c for c in found if c.kind in allowed],
        [c for c in found if c.kind not in allowed],
    )


def cases(operation: str, w: World) -> list[Case]:
    """Every malformed request for ``operation``, built from the model, with the
    error keyplane answers it with."""
    input_shape = SHAPES[MODEL["operations"][operation]["input"]["shape"]]
    required = set(input_shape.get("required", ()))
    base = baseline(operation, w)
    found: list[Case] = []

    def add(what: str, request: Any, kind: str, message: str = "") -> None:
        found.append(Case(what, json.dumps(request).encode(), kind, message))

    for name, ref in input_shape["members"].items():
        path = _camel(name)
        for what, value, kind, message in _member_cases(name, ref["shape"], path, w):
            add(f"{name}: {what}", {**base, name: value}, kind, message)
        nested = SHAPES[ref["shape"]]
        parent = base.get(name)
        if nested["type"] == "list" and SHAPES[nested["member"]["shape"]]["type"] == (
            "structure"
        ):
            element = SHAPES[nested["member"]["shape"]]
            first = (parent or [{}])[0]
            for inner, inner_ref in element["members"].items():
                inner_path = f"{path}.1.member.{_camel(inner)}"
                for what, value, kind, message in _member_cases(
                    inner, inner_ref["shape"], inner_path, w
                ):
                    request = {**base, name: [{**first, inner: value}]}
                    add(f"{name}[0].{inner}: {what}", request, kind, message)
                if inner in element.get("required", ()):
                    request = {
                        **base,
                        name: [{k: v for k, v in first.items() if k != inner}],
                    }
                    add(
                        f"{name}[0].{inner}: missing",
                        request,
                        VALIDATION,
                        _problem(inner_path, "Member must not be null"),
                    )
        elif nested["type"] == "structure":
            for inner, inner_ref in nested["members"].items():
                inner_path = f"{path}.{_camel(inner)}"
                for what, value, kind, message in _member_cases(
                    inner, inner_ref["shape"], inner_path, w
                ):
                    request = {**base, name: {**(parent or {}), inner: value}}
                    add(f"{name}.{inner}: {what}", request, kind, message)
        if name in required:
            missing = {k: v for k, v in base.items() if k != name}
            text = "Member must not be null"
            add(f"{name}: missing", missing, VALIDATION, _problem(path, text))
            add(f"{name}: null", {**base, name: None}, VALIDATION, _problem(path, text))
    for what, raw, message in [
        ("body a list", b"[]", "^Start of list found where not expected$"),
        ("body a string", b'"KeyId"', "^Unexpected field type$"),
        ("body not JSON", b"{KeyId: 1}", "^Malformed JSON input at character "),
        ("body cut short", json.dumps(base).encode()[:-1], "^Unexpected end of input$"),
    ]:
        found.append(Case(what, raw, SERIALIZATION, message))
    change, kind = _HARMLESS.get(operation, ({}, ""))
    add("unknown member ignored", {**base, **change, **UNKNOWN}, kind)
    return found


# --- state --------------------------------------------------------------------------


def _pages(call: Any, key: str, **kw: Any) -> list[Any]:
    items, marker = [], None
    while True:
        page = call(**kw, **({"Marker": marker} if marker else {}))
        items += page[key]
        if not page.get("Truncated"):
            return items
        marker = page["NextMarker"]


def snapshot(kms: Any) -> dict[str, Any]:
    """Everything a malformed request might have changed, as boto3 reads it."""
    state: dict[str, Any] = {
        "aliases": _pages(kms.list_aliases, "Aliases"),
        "custom_key_stores": _pages(kms.describe_custom_key_stores, "CustomKeyStores"),
    }
    for entry in _pages(kms.list_keys, "Keys"):
        key = entry["KeyId"]
        grants = _pages(kms.list_grants, "Grants", KeyId=key)
        state[key] = {
            "metadata": kms.describe_key(KeyId=key)["KeyMetadata"],
            "policy": kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"],
            "grants": sorted(grants, key=lambda g: g["GrantId"]),
            "tags": _pages(kms.list_resource_tags, "Tags", KeyId=key),
            "rotation": kms.get_key_rotation_status(KeyId=key),
            "rotations": _pages(kms.list_key_rotations, "Rotations", KeyId=key),
        }
        state[key]["rotation"].pop("ResponseMetadata", None)
    return state


def still_serves(kms: Any, w: World) -> None:
    sealed = kms.encrypt(KeyId=ALIAS, Plaintext=b"still", EncryptionContext=CONTEXT)
    opened = kms.decrypt(
        CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT
    )
    assert opened["Plaintext"] == b"still"
    assert opened["KeyId"] == w.arn


# --- the tests ------------------------------------------------------------------------


def test_every_operation_has_a_baseline_and_cases(world):
    assert set(OPERATIONS) <= set(MODEL["operations"])
    for operation in OPERATIONS:
        assert len(table(operation, world)[0]) > 5, operation


@pytest.mark.parametrize("operation", OPERATIONS)
def test_malformed_members_get_aws_errors_and_change_nothing(
    kms, wire, world, operation
):
    before = snapshot(kms)
    wrong = []
    for case in table(operation, world)[0]:
        status, answer = wire.call(f"TrentService.{operation}", case.body)
        got = answer.get("__type", "") if status != 200 else ""
        want_status = 200 if not case.kind else 400
        message = answer.get("message", "")
        if (
            status != want_status
            or got != case.kind
            or (case.message and not re.search(case.message, message))
        ):
            wrong.append(f"{case.what}: {status} {got} {message[:300]!r}")
    assert not wrong, f"{operation}: {len(wrong)} wrong answers:\n" + "\n".join(wrong)
    assert snapshot(kms) == before
    still_serves(kms, world)


def _gaps() -> list[Any]:
    # The world is only needed for the request bodies; the ids here are placeholders
    # that the test swaps for the real ones.
    placeholder = World("KEY", "ARN", "OTHER", "BLOB", "TOKEN", "GRANT", "POLICY")
    return [
        pytest.param(operation, case.what, id=f"{operation}-{case.what}")
        for operation in OPERATIONS
        for case in table(operation, placeholder)[1]
    ]


@pytest.mark.xfail(
    strict=True,
    reason="keyplane answers an error that AWS's model does not list for this "
    "operation: InvalidArnException where only NotFoundException is listed, and "
    "InvalidGrantTokenException from DescribeKey",
)
@pytest.mark.parametrize(("operation", "what"), _gaps())
def test_errors_the_model_does_not_list_for_the_operation(
    kms, wire, world, operation, what
):
    [case] = [c for c in table(operation, world)[1] if c.what == what]
    status, answer = wire.call(f"TrentService.{operation}", case.body)
    assert status == 200 or answer["__type"] in model_errors(operation), answer


# --- regressions found by the fuzz targets ------------------------------------------


@pytest.mark.parametrize("operation", ["Decrypt", "ReEncrypt"])
def test_a_missing_ciphertext_is_a_validation_error(wire, world, operation):
    # The model leaves CiphertextBlob optional (for DryRunModifiers); keyplane once
    # answered its absence with a 500.
    request = {
        k: v for k, v in baseline(operation, world).items() if k != "CiphertextBlob"
    }
    status, answer = wire.call(
        f"TrentService.{operation}", json.dumps(request).encode()
    )
    assert (status, answer["__type"]) == (400, VALIDATION)
    assert answer["message"] == (
        "1 validation error detected: Value null at 'ciphertextBlob' failed to "
        "satisfy constraint: Member must not be null"
    )
    request["DryRun"] = True
    request["DryRunModifiers"] = ["IGNORE_CIPHERTEXT"]
    status, answer = wire.call(
        f"TrentService.{operation}", json.dumps(request).encode()
    )
    assert (status, answer["__type"]) == (400, "UnsupportedOperationException")


def test_a_batch_item_without_its_ciphertext_fails_as_decrypt_would(wire, world):
    # The batch extension once answered a missing blob as a wrong type
    # (SerializationException) where Decrypt answers ValidationException.
    body = json.dumps({"Items": [{"EncryptionContext": CONTEXT}]}).encode()
    status, answer = wire.call("KeyplaneService.Decrypt", body)
    assert status == 200, answer
    [result] = answer["Results"]
    assert result["Error"]["Code"] == VALIDATION


@pytest.mark.parametrize(
    ("operation", "item"),
    [
        ("Encrypt", {"Plaintext": "\u00e9"}),
        ("Decrypt", {"CiphertextBlob": "\u00e9A=="}),
    ],
)
def test_a_batch_item_of_non_ascii_base64_fails_alone(wire, world, operation, item):
    # binascii refuses a non-ASCII str with ValueError, not binascii.Error; the batch
    # extension once let it escape and answered the whole batch with a 500.
    good = {"KeyId": world.key, "Plaintext": "aGk="}
    if operation == "Decrypt":
        good = {"CiphertextBlob": world.blob, "EncryptionContext": CONTEXT}
    bad = {**good, **item}
    body = json.dumps({"Items": [good, bad, good]}).encode()
    status, answer = wire.call(f"KeyplaneService.{operation}", body)
    assert status == 200, answer
    first, second, third = answer["Results"]
    assert "Error" not in first and "Error" not in third
    assert second["Error"]["Code"] == SERIALIZATION


# --- the batch extension ------------------------------------------------------------

# The members a batch item takes (docs/batch-extension.md).
_ITEM_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "Encrypt": ("KeyId", "Plaintext", "EncryptionContext"),
    "Decrypt": ("CiphertextBlob", "EncryptionContext", "KeyId"),
    "GenerateDataKey": ("KeyId", "KeySpec", "NumberOfBytes", "EncryptionContext"),
}


@pytest.mark.parametrize("operation", sorted(_ITEM_MEMBERS))
def test_a_malformed_batch_item_fails_alone_as_the_single_operation_would(
    kms, wire, world, operation
):
    # docs/batch-extension.md: an item that fails has "the code ... the single-item
    # operation would have given; the other items are unaffected".
    members = _ITEM_MEMBERS[operation]
    good = {k: v for k, v in baseline(operation, world).items() if k in members}
    before = snapshot(kms)
    wrong = []
    for case in cases(operation, world):
        if case.what.split(":")[0] not in members:
            continue
        request = json.loads(case.body)
        item = {k: v for k, v in request.items() if k in members}
        body = json.dumps({"Items": [good, item, good]}).encode()
        status, answer = wire.call(f"KeyplaneService.{operation}", body)
        if status != 200:
            wrong.append(f"{case.what}: the whole batch failed: {answer}")
            continue
        first, result, last = answer["Results"]
        code = result.get("Error", {}).get("Code", "")
        if "Error" in first or "Error" in last or code != case.kind:
            wrong.append(f"{case.what}: {code or 'success'}, not {case.kind}")
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong)
    assert snapshot(kms) == before
