"""Fuzz target: every operation the server serves, through the whole stack.

Requests are drawn from the KMS model (tests/unit/api/_model.py), with the members that
name things (key ids, ARNs, aliases, ciphertexts, grant tokens and ids, principals,
policies, contexts) drawn mostly from what exists in the service, so that requests get
past key resolution into the operations themselves; then any of their values may be
swapped for arbitrary JSON. keyplane's batch and diagnostic extensions get the same
treatment. Whatever happens, the answer is a success or an AWS client error: never a
500, never an exception out of the protocol.

Corpus: ``corpus/dispatch/<Service>.<Operation>.<what>.json`` holds a raw body; in it
``$KEY``, ``$ARN``, ``$ALIAS``, ``$BLOB``, ``$TOKEN`` and ``$GRANT`` stand for a live
key id, its ARN, an alias of it, a ciphertext under it, a grant token and a grant id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api import codec
from keyplane.api.errors import AWS_ERRORS
from keyplane.api.server import EXTENSIONS
from tests.fuzz._fuzz import corpus, fuzz
from tests.fuzz.conftest import ALICE, ROOT, Answer, Kms
from tests.unit.api._model import SERVICE, SHAPES, input_shape, value_of

AWS_TYPES = frozenset(name for name, _ in AWS_ERRORS.values())
OPERATIONS = sorted(codec.OPERATIONS)
# Operations that can leave a pool key unusable, after which the pool is checked.
_HARMFUL = frozenset(
    {
        "DisableKey",
        "ScheduleKeyDeletion",
        "PutKeyPolicy",
        "DeleteAlias",
        "UpdateAlias",
        "RetireGrant",
        "RevokeGrant",
    }
)
_POOL_SIZE = 3
POOL_PLAINTEXT = base64.b64encode(b"pool").decode()

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "AA==", "YQ", "é", "alias/", "arn:aws:kms:", "x" * 5000]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CONTEXTS = st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)


@dataclass
class Pool:
    """Things that exist in the service, for requests to name."""

    keys: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # ids, ARNs, aliases, alias ARNs
    blobs: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    made: int = 0

    def add_key(self, kms: Kms) -> None:
        self.made += 1
        meta = kms.ok("TrentService.CreateKey", {"Description": "pool"})["KeyMetadata"]
        key, arn = meta["KeyId"], meta["Arn"]
        alias = f"alias/pool-{self.made}"
        kms.ok("TrentService.CreateAlias", {"AliasName": alias, "TargetKeyId": key})
        context = {"pool": str(self.made)}
        blob = kms.ok(
            "TrentService.Encrypt",
            {"KeyId": key, "Plaintext": POOL_PLAINTEXT, "EncryptionContext": context},
        )["CiphertextBlob"]
        grant = kms.ok(
            "TrentService.CreateGrant",
            {
                "KeyId": key,
                "GranteePrincipal": ALICE,
                "RetiringPrincipal": ROOT,
                "Operations": ["Encrypt", "Decrypt", "RetireGrant"],
            },
        )
        self.keys.append(key)
        # Names of keys that died stay for a while: requests should name those too.
        alias_arn = arn.rsplit(":key/", 1)[0] + ":" + alias
        self.names[:0] = [key, arn, alias, alias_arn]
        self.blobs.insert(0, (base64.b64decode(blob), context))
        self.tokens.insert(0, grant["GrantToken"])
        self.grants.insert(0, grant["GrantId"])
        for items in (self.names, self.blobs, self.tokens, self.grants):
            del items[4 * 4 * _POOL_SIZE :]

    def refresh(self, kms: Kms) -> None:
        """Drop keys that can no longer encrypt, and make new ones in their place."""
        for key in list(self.keys):
            answer = kms.call(
                "TrentService.Encrypt",
                orjson.dumps({"KeyId": key, "Plaintext": "AA=="}),
            )
            if answer.status != 200:
                self.keys.remove(key)
        while len(self.keys) < _POOL_SIZE:
            self.add_key(kms)


@pytest.fixture(scope="module")
def pool(kms: Kms) -> Pool:
    found = Pool()
    found.refresh(kms)
    return found


@dataclass(frozen=True)
class Ref:
    """A thing in the pool, by kind and index, resolved only when the request is sent.

    Strategies must not read the pool (it changes between examples, and hypothesis
    replays its draws); they draw these, and ``_resolve`` reads the pool.
    """

    kind: str
    index: int
    damage: tuple[int, int, int] | None = None  # for blobs: where, xor, cut


def _ref(kind: str) -> st.SearchStrategy[Ref]:
    return st.builds(Ref, st.just(kind), st.integers(0, 63))


_DAMAGE = st.tuples(st.integers(0, 99), st.integers(1, 255), st.integers(0, 99))
# Mostly what exists, so that requests get past key resolution; sometimes not.
_NAMES = st.one_of(_ref("names"), _ref("names"), value_of("KeyIdType"))
_BLOBS = st.one_of(
    _ref("blobs"),
    st.builds(Ref, st.just("blobs"), st.integers(0, 63), _DAMAGE),
    value_of("CiphertextType"),
)
_TOKENS = st.one_of(_ref("tokens"), _ref("tokens"), value_of("GrantTokenType"))
_MEMBERS: Mapping[str, st.SearchStrategy[Any]] = {
    "KeyIdType": _NAMES,
    "CiphertextType": _BLOBS,
    "GrantTokenList": st.lists(_TOKENS, max_size=2),
    "GrantTokenType": _TOKENS,
    "GrantIdType": _ref("grants") | value_of("GrantIdType"),
    "GrantOperationList": st.lists(
        st.sampled_from(["Encrypt", "Decrypt", "RetireGrant", "CreateGrant"]),
        min_size=1,
        max_size=3,
    )
    | value_of("GrantOperationList"),
    "AliasNameType": _ref("aliases")
    | st.from_regex(r"alias/(fuzz-[a-z0-9]{1,4}|aws/x|[a-z]{0,3})", fullmatch=True),
    "PrincipalIdType": st.sampled_from([ROOT, ALICE]) | value_of("PrincipalIdType"),
    # The context of the request's own ciphertext, so that Decrypt can succeed.
    "EncryptionContextType": st.one_of(
        st.just(Ref("blob context", 0)), _ref("contexts"), CONTEXTS
    ),
}


def _resolve(pool: Pool, node: Any, chosen: list[int] | None = None) -> Any:
    """``node`` with every ``Ref`` replaced by what the pool now holds."""
    chosen = [0] if chosen is None else chosen  # the index of the last blob
    if isinstance(node, Ref):
        if node.kind == "aliases":
            return pool.names[2::4][node.index % len(pool.names[2::4])]
        if node.kind == "contexts":
            return pool.blobs[node.index % len(pool.blobs)][1]
        if node.kind == "blob context":
            return pool.blobs[chosen[0]][1]
        items: list[Any] = getattr(pool, node.kind)
        index = node.index % len(items)
        if node.kind != "blobs":
            return items[index]
        chosen[0] = index
        blob = bytearray(items[index][0])
        if node.damage is not None:
            at, xor, cut = node.damage
            blob[at % len(blob)] ^= xor
            blob = blob[: cut * len(blob) // 99]
        return bytes(blob)
    if isinstance(node, dict):
        return {k: _resolve(pool, v, chosen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(pool, v, chosen) for v in node]
    return node


_POLICIES = [
    json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": effect,
                    "Principal": {"AWS": principal},
                    "Action": action,
                    "Resource": "*",
                    **extra,
                }
            ],
        }
    )
    for effect, principal, action, extra in [
        ("Allow", ROOT, "kms:*", {}),
        ("Allow", "*", "kms:*", {}),
        ("Allow", ALICE, ["kms:Encrypt", "kms:PutKeyPolicy"], {}),
        (
            "Allow",
            ROOT,
            "kms:*",
            {"Condition": {"StringEquals": {"kms:EncryptionContext:pool": "1"}}},
        ),
        ("Deny", "*", "kms:Decrypt", {}),
    ]
]


def _request(operation: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests the model allows for ``operation``, naming what exists (as ``Ref``)."""
    shape = SHAPES[input_shape(operation)]
    required = set(shape.get("required", ()))
    members = {}
    for name, ref in shape.get("members", {}).items():
        ours = _MEMBERS.get(ref["shape"])
        if ref["shape"] == "PolicyType":
            ours = st.sampled_from(_POLICIES) | value_of("PolicyType")
        members[name] = value_of(ref["shape"]) if ours is None else ours
    return st.fixed_dictionaries(
        {m: s for m, s in members.items() if m in required},
        optional={m: s for m, s in members.items() if m not in required},
    )


_SERIALIZER = create_serializer("json", include_validation=False)


def _wire(operation: str, params: Mapping[str, Any]) -> Any:
    """``params`` as boto3 would put them on the wire, decoded back to JSON values."""
    request = _SERIALIZER.serialize_to_request(
        params, SERVICE.operation_model(operation)
    )
    raw = request["body"]
    return orjson.loads(raw or b"{}")


def _mutate(data: st.DataObject, node: Any, rate: int) -> Any:
    """``node`` with, on average, one value in ``rate`` swapped for arbitrary JSON."""
    if data.draw(st.integers(0, rate - 1)) == 0:
        return data.draw(JSON)
    if isinstance(node, dict):
        return {k: _mutate(data, v, rate) for k, v in node.items()}
    if isinstance(node, list):
        return [_mutate(data, v, rate) for v in node]
    return node


# keyplane's administration of emulated CloudHSM clusters (keyplane.api.clusters).
_CLUSTER_OPERATIONS = frozenset(
    {"CreateCloudHsmCluster", "DescribeCloudHsmClusters", "UpdateCloudHsmCluster"}
)


def _extension_body(pool: Pool, name: str, data: st.DataObject) -> Any:
    if name == "ExplainAccess":
        return _resolve(
            pool,
            data.draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Action": st.sampled_from(
                            ["kms:Encrypt", "kms:PutKeyPolicy", "*"]
                        )
                        | st.text(max_size=12),
                        "KeyId": _NAMES,
                        "Principal": st.sampled_from([ROOT, ALICE])
                        | st.text(max_size=12),
                        "EncryptionContext": CONTEXTS,
                    },
                )
            ),
        )
    if name == "AdvanceClock":
        # Small steps: a century at once would only test the clock's own bound.
        return {"Seconds": data.draw(st.integers(1, 3600) | st.floats(0, 3600))}
    if name == "RotateRootKey":
        return {}  # it takes no members; _mutate may swap in arbitrary JSON
    if name in _CLUSTER_OPERATIONS:
        return data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "ClusterId": st.sampled_from(
                        ["cluster-fuzzfuzzfuzz", "cluster-short", "cluster-1"]
                    )
                    | st.text(max_size=24),
                    "TrustAnchorCertificate": st.text(max_size=40),
                    "HsmCount": st.integers(-1, 30),
                    "Active": st.booleans(),
                    "KmsUserPassword": st.text(min_size=5, max_size=34),
                    "ExtraLatencyMs": st.floats(-1, 70_000),
                    "CapacityPerSecond": st.floats(-1, 1e13),
                    "DeleteKmsUser": st.booleans(),
                    "KmsUserLockedOut": st.booleans(),
                    "KmsUserLoggedIn": st.booleans(),
                    "SourceClusterId": st.just("cluster-fuzzfuzzfuzz")
                    | st.text(max_size=24),
                },
            )
        )
    items = data.draw(st.lists(_request(name), min_size=1, max_size=4))
    return {"Items": [_wire(name, _resolve(pool, i)) for i in items]}


def _check(answer: Answer, what: str) -> None:
    assert answer.status != 500, f"{what}: {answer}"
    if answer.status == 200:
        return
    assert answer.status in (400, 413), f"{what}: {answer}"
    assert answer.kind in AWS_TYPES, f"{what}: {answer}"
    assert isinstance(answer.body.get("message"), str), f"{what}: {answer}"


@fuzz(300)
@given(
    operation=st.sampled_from(OPERATIONS),
    caller=st.sampled_from([ROOT, ALICE]),
    rate=st.sampled_from([4, 1000]),
    data=st.data(),
)
def test_any_request_to_any_operation_is_answered_without_a_fault(
    kms, pool, operation, caller, rate, data
):
    params = _resolve(pool, data.draw(_request(operation), label="request"))
    wire = _wire(operation, params)
    # The standard library writes any integer; orjson only 64-bit ones.
    body = json.dumps(_mutate(data, wire, rate)).encode()
    answer = kms.call(f"TrentService.{operation}", body, caller=caller)
    _check(answer, f"{operation} {body[:300]!r}")
    if operation == "Decrypt" and answer.status == 200:
        # Every blob a request can name is the pool's, or damaged, or random: only
        # an undamaged one decrypts, and to what the pool sealed.
        assert answer.body["Plaintext"] == POOL_PLAINTEXT, answer
    if operation in _HARMFUL and answer.status == 200:
        pool.refresh(kms)


@fuzz(100)
@given(
    name=st.sampled_from(sorted(EXTENSIONS)),
    caller=st.sampled_from([ROOT, ALICE]),
    rate=st.sampled_from([4, 1000]),
    data=st.data(),
)
def test_any_request_to_an_extension_is_answered_without_a_fault(
    kms, pool, name, caller, rate, data
):
    body = json.dumps(_mutate(data, _extension_body(pool, name, data), rate)).encode()
    answer = kms.call(f"KeyplaneService.{name}", body, caller=caller)
    _check(answer, f"{name} {body[:300]!r}")
    if answer.status == 200 and name in _HARMFUL:
        pool.refresh(kms)
    if answer.status == 200 and name == "Decrypt":
        for result in answer.body["Results"]:
            assert "Error" in result or result["Plaintext"] == POOL_PLAINTEXT, result


def _fill(pool: Pool, raw: bytes) -> bytes:
    blob, _ = pool.blobs[0]
    names = pool.names
    for placeholder, value in [
        (b"$KEY", names[0]),
        (b"$ARN", names[1]),
        (b"$ALIAS", names[2]),
        (b"$BLOB", base64.b64encode(blob).decode()),
        (b"$TOKEN", pool.tokens[0]),
        (b"$GRANT", pool.grants[0]),
    ]:
        raw = raw.replace(placeholder, value.encode())
    return raw


@pytest.mark.parametrize(("name", "raw"), corpus("dispatch"))
def test_corpus(kms, pool, name, raw):
    service, operation, _ = name.split(".", 2)
    answer = kms.call(f"{service}.{operation}", _fill(pool, raw))
    _check(answer, name)
    pool.refresh(kms)
