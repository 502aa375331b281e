"""Fuzz target: key policy documents, parsed and then enforced.

Documents are drawn shaped like policies (statements with principals, actions and
conditions over the encryption context, the caller and the clock) with any part
swapped for arbitrary JSON, or as text cut or spliced. ``parse_policy`` may only refuse
them as malformed or too large. Each one is then given to CreateKey, as the account's
root; whatever it makes of it, the answer is never a fault, and a key it creates keeps
three promises:

* unless the lockout check was bypassed, the root can put the same policy again
  (that is what the check is for);
* ExplainAccess decides as enforcement does: for DescribeKey and for Encrypt with a
  drawn encryption context, by the root and by a user whose identity policy allows
  all of KMS, "allowed" exactly when the operation is not refused for access;
* the key answers every other operation without a fault.

tests/unit/policy/test_properties.py fuzzes the parser alone, and the evaluator's
monotonicity; this target adds the path through the service and the agreement of
ExplainAccess with enforcement.

Corpus: ``corpus/policy/*.json``, each a policy document as text.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.errors import LimitExceededError, MalformedPolicyDocumentError
from keyplane.policy import parse_policy
from tests.fuzz._fuzz import corpus, fuzz
from tests.fuzz.conftest import ACCOUNT, ALICE, ROOT, Kms

# Keys made per service before a fresh one takes over, so a long run stays small.
_KEYS_PER_SERVICE = 2000
# What CreateKey may refuse a drawn policy with.
_POLICY_REFUSALS = frozenset(
    {
        "MalformedPolicyDocumentException",
        "LimitExceededException",
        "ValidationException",  # the model's own length and character limits
    }
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
PRINCIPALS = st.sampled_from(
    [
        "*",
        {"AWS": "*"},
        {"AWS": ROOT},
        {"AWS": ACCOUNT},
        {"AWS": ALICE},
        {"AWS": [ALICE, ROOT]},
        {"AWS": f"arn:aws:iam::{ACCOUNT}:user/*"},
        {"AWS": "arn:aws:iam::444455556666:root"},
        {"Service": "ec2.amazonaws.com"},
        {"Federated": "x"},
        {"AWS": []},
    ]
)
ACTIONS = st.sampled_from(
    [
        "*",
        "kms:*",
        "kms:Encrypt",
        "kms:Describe*",
        "kms:PutKeyPolicy",
        "KMS:ENCRYPT",
        "kms:?ncrypt",
        ["kms:Encrypt", "kms:DescribeKey", "kms:PutKeyPolicy"],
        "iam:*",
        [],
    ]
)
RESOURCES = st.sampled_from(
    ["*", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*", "arn:aws:kms:*", ["*"], []]
)
OPERATORS = st.sampled_from(
    [
        "StringEquals",
        "StringNotEquals",
        "StringLike",
        "StringNotLike",
        "StringEqualsIgnoreCase",
        "ForAnyValue:StringEquals",
        "ForAllValues:StringLike",
        "StringEqualsIfExists",
        "Null",
        "Bool",
        "NumericLessThan",
        "DateLessThan",
        "DateGreaterThan",
        "ArnLike",
        "IpAddress",
        "NotIpAddress",
        "BinaryEquals",
        "Bogus",
    ]
)
CONDITION_KEYS = st.sampled_from(
    [
        "kms:EncryptionContext:purpose",
        "kms:encryptioncontext:Purpose",
        "kms:EncryptionContextKeys",
        "kms:CallerAccount",
        "aws:PrincipalArn",
        "aws:SourceIp",
        "aws:CurrentTime",
        "aws:SecureTransport",
        "kms:GrantOperations",
        "kms:KeySpec",
        "kms:RequestAlias",
        "bogus:Key",
    ]
)
VALUES = st.sampled_from(
    [
        "test",
        "Test",
        "t*",
        "?est",
        "*",
        "",
        ACCOUNT,
        ALICE,
        "127.0.0.1/32",
        "10.0.0.0/8",
        "2000-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "true",
        "false",
        "${aws:username}",
        "purpose",
    ]
)
CONDITIONS = st.dictionaries(
    OPERATORS,
    st.dictionaries(
        CONDITION_KEYS, VALUES | st.lists(VALUES, max_size=3), min_size=1, max_size=2
    ),
    max_size=2,
)
CONTEXTS = st.sampled_from(
    [{}, {"purpose": "test"}, {"purpose": "Test"}, {"Purpose": "test"}, {"a": ""}]
) | st.dictionaries(st.sampled_from(["purpose", "a"]), VALUES, max_size=2)


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": draw(st.sampled_from(["Allow", "Allow", "Deny", "allow"])),
        draw(st.sampled_from(["Principal", "Principal", "NotPrincipal"])): draw(
            PRINCIPALS
        ),
        draw(st.sampled_from(["Action", "Action", "NotAction"])): draw(ACTIONS),
        draw(st.sampled_from(["Resource", "Resource", "NotResource"])): draw(RESOURCES),
    }
    if draw(st.booleans()):
        statement["Condition"] = draw(CONDITIONS)
    if draw(st.booleans()):
        statement["Sid"] = draw(st.sampled_from(["a", "b", "", "Sid 1"]))
    return statement


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Policy text: mostly well formed, sometimes broken in any one place."""
    root_allow = {
        "Effect": "Allow",
        "Principal": {"AWS": ROOT},
        "Action": "kms:*",
        "Resource": "*",
    }
    listed = draw(st.lists(statements(), min_size=1, max_size=4))
    if draw(st.booleans()):
        listed.insert(0, root_allow)
    document: Any = {
        "Version": draw(st.sampled_from(["2012-10-17", "2012-10-17", "2008-10-17"])),
        "Statement": listed,
    }
    how = draw(st.sampled_from(["as is", "as is", "swap", "cut", "single", "extra"]))
    if how == "swap":
        document = _swap(draw, document)
    elif how == "single":
        document["Statement"] = listed[0]
    elif how == "extra":
        document[draw(st.sampled_from(["Id", "Bogus", "version"]))] = draw(JSON)
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    if how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _swap(draw: st.DrawFn, node: Any) -> Any:
    """``node`` with one value in five swapped for arbitrary JSON, at any depth."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON)
    if isinstance(node, dict):
        return {k: _swap(draw, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap(draw, v) for v in node]
    return node


class Services:
    """The in-process service of the module, replaced by a fresh one now and then."""

    def __init__(self, kms: Kms, tmp: Any) -> None:
        self.current = kms
        self.tmp = tmp
        self.made: list[Kms] = []

    def get(self) -> Kms:
        if len(self.current.service.keys) >= _KEYS_PER_SERVICE:
            fresh = Kms(self.tmp.mktemp("policy"))
            self.made.append(fresh)
            self.current = fresh
        return self.current


@pytest.fixture(scope="module")
def services(kms, tmp_path_factory):
    held = Services(kms, tmp_path_factory)
    yield held
    for made in held.made:
        made.close()


def _parse_only_refuses(text: str) -> None:
    for kind in ("key", "identity"):
        with contextlib.suppress(MalformedPolicyDocumentError, LimitExceededError):
            parse_policy(text, kind=kind)


def _explained(kms: Kms, action: str, who: str, key: str, context: Any) -> bool | None:
    """What ExplainAccess says of ``who`` doing ``action``; None when the root may not
    ask (it needs kms:GetKeyPolicy on the key)."""
    request = {"Action": action, "Principal": who, "KeyId": key}
    if context is not None:
        request["EncryptionContext"] = context
    answer = kms.call("KeyplaneService.ExplainAccess", orjson.dumps(request))
    if answer.kind == "AccessDeniedException":
        return None
    assert answer.status == 200, answer
    return bool(answer.body["Allowed"])


def _enforced(kms: Kms, target: str, members: dict[str, Any], who: str) -> bool:
    answer = kms.call(target, orjson.dumps(members), caller=who)
    assert answer.status != 500, answer
    return answer.kind != "AccessDeniedException"


def check(kms: Kms, text: str, bypass: bool, context: dict[str, str]) -> None:
    _parse_only_refuses(text)
    answer = kms.call(
        "TrentService.CreateKey",
        orjson.dumps({"Policy": text, "BypassPolicyLockoutSafetyCheck": bypass}),
    )
    if answer.status != 200:
        assert answer.kind in _POLICY_REFUSALS, answer
        return
    key = answer.body["KeyMetadata"]["KeyId"]
    if not bypass:
        again = {"KeyId": key, "Policy": text}
        put = kms.call("TrentService.PutKeyPolicy", orjson.dumps(again))
        assert put.status == 200, put
    for who in (ROOT, ALICE):
        for action, target, members, ec in [
            ("kms:DescribeKey", "TrentService.DescribeKey", {"KeyId": key}, None),
            (
                "kms:Encrypt",
                "TrentService.Encrypt",
                {"KeyId": key, "Plaintext": "AA==", "EncryptionContext": context},
                context,
            ),
        ]:
            explained = _explained(kms, action, who, key, ec)
            enforced = _enforced(kms, target, members, who)
            if explained is not None:
                assert explained == enforced, (who, action, text, context)
    for target, members in [
        ("TrentService.GetKeyPolicy", {"KeyId": key}),
        ("TrentService.ListGrants", {"KeyId": key}),
        (
            "TrentService.CreateGrant",
            {"KeyId": key, "GranteePrincipal": ALICE, "Operations": ["Encrypt"]},
        ),
        ("TrentService.GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"}),
        ("TrentService.ScheduleKeyDeletion", {"KeyId": key}),
    ]:
        for who in (ROOT, ALICE):
            _enforced(kms, target, members, who)


@fuzz(150)
@given(text=documents(), bypass=st.booleans(), context=CONTEXTS)
def test_any_policy_is_refused_or_kept_to(services, text, bypass, context):
    check(services.get(), text, bypass, context)


@pytest.mark.parametrize(("name", "raw"), corpus("policy"))
@pytest.mark.parametrize("bypass", [False, True])
def test_corpus(kms, name, raw, bypass):
    check(kms, raw.decode("utf-8", "surrogatepass"), bypass, {"purpose": "test"})
