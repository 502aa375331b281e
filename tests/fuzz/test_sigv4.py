"""Fuzz target: the SigV4 verifier, on what a client controls of a request.

Three properties:

* Authorization headers assembled from the header's own parts and noise, with any
  date, any signed-header list (absent names, upper case, repeats, empty entries) and
  any header values, fail only with an ``AuthenticationError``.
* A request botocore signs, over any set of extra headers (values with runs of spaces
  and tabs), any query string and any body, verifies; the same request with one thing
  changed (body, a signed header's value, the date, the target, the method, the
  query, the signature, a token added) does not.
* The verifier's short path, taken once a header prefix has verified, answers exactly
  what a fresh verifier answers, for any of those changed requests.

tests/unit/api/test_sigv4.py covers each refusal with AWS's message, and fuzzes the
header and date alone; this target adds signed-header lists, queries, many headers,
and the short path against the full one.

Corpus: ``corpus/sigv4/*.json``, each ``{"headers": {...}, "query": "..."}`` with
latin-1 text; the headers replace those of a request freshly signed at ``NOW``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api.sigv4 import Credential, Verified, Verifier
from keyplane.errors import AuthenticationError
from tests.fuzz._fuzz import corpus, fuzz

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ALICE = Credential(KEY_ID, SECRET, "arn:aws:iam::111122223333:user/alice", "1111")
NOW = dt.datetime(2026, 1, 1, 12, 0, 0)
NOW_TS = NOW.replace(tzinfo=dt.UTC).timestamp()
HOST = "127.0.0.1:4599"


@dataclass(frozen=True)
class Request:
    method: bytes
    path: bytes
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes

    def with_header(self, name: bytes, value: bytes | None) -> Request:
        headers = dict(self.headers)
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
        return replace(self, headers=headers)


def verifier() -> Verifier:
    return Verifier({KEY_ID: ALICE}, region="us-east-1", clock=lambda: NOW_TS)


def outcome(v: Verifier, r: Request) -> tuple[str, str]:
    """What the verifier answers: who signed, or the error's class and message."""
    try:
        verified = v.verify(r.method, r.path, r.query, r.headers, r.body)
    except AuthenticationError as exc:
        return type(exc).__name__, str(exc)
    assert isinstance(verified, Verified)
    return "verified", verified.credential.principal


def sign(
    body: bytes,
    headers: dict[str, str],
    params: list[tuple[str, str]],
    when: dt.datetime = NOW,
) -> Request:
    """A request signed by botocore, in the form the server hands the verifier."""
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=body,
        headers={
            "X-Amz-Target": "TrentService.Encrypt",
            "Content-Type": "application/x-amz-json-1.1",
            **headers,
        },
        params=params,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(Credentials(KEY_ID, SECRET), "kms", "us-east-1").add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    wire = {
        name.lower().encode(): value.encode("latin-1")
        for name, value in prepared.headers.items()
    }
    wire[b"host"] = url.netloc.encode()
    body = prepared.body or b""
    return Request(b"POST", url.path.encode(), url.query.encode(), wire, body)


# --- any Authorization header -------------------------------------------------------

_NAMES = st.sampled_from(
    [
        *(b"host", b"x-amz-date", b"x-amz-target", b"content-type", b"HOST"),
        *(b"x-absent", b"", b" ", b"host ", b"\xff", b"x-amz-content-sha256"),
        b"authorization",
    ]
)
_SIGNED = st.lists(_NAMES, max_size=6).map(b";".join)
_SCOPES = st.sampled_from(
    [
        b"AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request",
        b"AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request//",
        b"AKIDEXAMPLE/20260102/us-east-1/kms/aws4_request",
        b"AKIDEXAMPLE/20260101/eu-west-1/kms/aws4_request",
        b"AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request",
        b"UNKNOWN/20260101/us-east-1/kms/aws4_request",
        b"AKIDEXAMPLE/20260101/us-east-1/kms",
        b"/////",
        b"",
    ]
)
_HEX = st.text(alphabet="0123456789abcdef", min_size=0, max_size=70).map(str.encode)
_SEPARATORS = st.sampled_from([b", ", b",", b" ", b" ,  ", b"\t"])
_DATES = st.sampled_from(
    [
        b"20260101T120000Z",
        b"20260101T120459Z",
        b"20260101T125959Z",
        b"20251231T235959Z",
        b"20260101T120000",
        b"2026-01-01T12:00:00Z",
        b"Thu, 01 Jan 2026 12:00:00 GMT",
        b"99991231T235959Z",
        b"00000101T000000Z",
        b"20260230T120000Z",
        b"",
    ]
) | st.binary(max_size=20)


@st.composite
def authorizations(draw: st.DrawFn) -> bytes:
    parts = [
        b"Credential=" + draw(_SCOPES),
        b"SignedHeaders=" + draw(_SIGNED),
        b"Signature=" + draw(_HEX),
    ]
    parts = draw(st.permutations(parts))
    if draw(st.booleans()):
        parts = parts[: draw(st.integers(0, 3))]
    if draw(st.integers(0, 4)) == 0:
        parts.insert(draw(st.integers(0, len(parts))), draw(st.binary(max_size=12)))
    algorithm = draw(st.sampled_from([b"AWS4-HMAC-SHA256", b"AWS4-HMAC-SHA512", b""]))
    separator = draw(_SEPARATORS)
    return algorithm + b" " + separator.join(parts)


_HEADER_VALUES = st.binary(max_size=24) | st.sampled_from(
    [b"", b" ", b"a  b", b"\t a \t", b"\xe9", b"x\r\ny: z"]
)


@fuzz(300)
@given(
    auth=authorizations(),
    date=st.none() | _DATES,
    http_date=st.none() | _DATES,
    extra=st.dictionaries(_NAMES, _HEADER_VALUES, max_size=3),
    query=st.sampled_from([b"", b"a=b", b"X-Amz-Algorithm=x", b"%zz=%", b"&&=&"]),
)
def test_any_authorization_header_fails_only_with_authentication_errors(
    auth, date, http_date, extra, query
):
    request = sign(b"{}", {}, [])
    headers = {**request.headers, **extra, b"authorization": auth}
    for name, value in ((b"x-amz-date", date), (b"date", http_date)):
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    forged = replace(request, headers=headers, query=query)
    result, message = outcome(verifier(), forged)
    # Nothing here is signed with the secret, so nothing may verify.
    assert result != "verified", message


# --- signed requests, and changed ones -----------------------------------------------

_HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
    max_size=30,
)
_EXTRA_HEADERS = st.dictionaries(
    st.from_regex(r"x-[a-z0-9-]{1,10}", fullmatch=True).filter(
        lambda n: not n.startswith("x-amz-")
    ),
    _HEADER_TEXT,
    max_size=4,
)
_PARAMS = st.lists(
    st.tuples(st.text(max_size=6), st.text(max_size=6)).filter(
        lambda p: p[0] != "X-Amz-Algorithm"
    ),
    max_size=3,
)
_CHANGES = st.sampled_from(
    [
        "body",
        "header value",
        "date second",
        "date day",
        "drop target",
        "other target",
        "method",
        "query",
        "signature",
        "token",
        "content sha256",
        "drop signed header",
    ]
)


def change(request: Request, how: str, data: st.DataObject) -> Request | None:
    """``request`` with one signed thing changed; None when there is nothing to
    change of that kind."""
    h = request.headers
    if how == "body":
        return replace(request, body=request.body + data.draw(st.binary(min_size=1)))
    if how == "header value":
        extras = sorted(
            n for n in h if n.startswith(b"x-") and not n.startswith(b"x-amz")
        )
        if not extras:
            return None
        name = data.draw(st.sampled_from(extras))
        value = h[name] + data.draw(st.sampled_from([b"x", b" x", b"\x00"]))
        return request.with_header(name, value)
    if how == "date second":
        return request.with_header(b"x-amz-date", b"20260101T120001Z")
    if how == "date day":
        return request.with_header(b"x-amz-date", b"20260102T120000Z")
    if how == "drop target":
        return request.with_header(b"x-amz-target", None)
    if how == "other target":
        return request.with_header(b"x-amz-target", b"TrentService.Decrypt")
    if how == "method":
        return replace(request, method=b"PUT")
    if how == "query":
        return replace(request, query=request.query + b"&z=1")
    if how == "signature":
        auth = h[b"authorization"]
        digit = data.draw(st.sampled_from(b"0123456789abcdef"))
        if auth[-1] == digit:
            return None
        return request.with_header(b"authorization", auth[:-1] + bytes([digit]))
    if how == "token":
        return request.with_header(b"x-amz-security-token", b"token")
    if how == "content sha256":
        return request.with_header(b"x-amz-content-sha256", b"0" * 64)
    auth = h[b"authorization"]
    signed = auth.split(b"SignedHeaders=")[1].split(b",")[0].split(b";")
    return request.with_header(data.draw(st.sampled_from(signed)), None)


@fuzz(200)
@given(
    body=st.binary(max_size=256),
    headers=_EXTRA_HEADERS,
    params=_PARAMS,
    how=_CHANGES,
    data=st.data(),
)
def test_signed_requests_verify_and_changed_ones_do_not(
    body, headers, params, how, data
):
    request = sign(body, headers, params)
    warm = verifier()
    assert outcome(warm, request) == ("verified", ALICE.principal)
    changed = change(request, how, data)
    if changed is None:
        return
    fresh = outcome(verifier(), changed)
    assert fresh[0] != "verified", (how, changed)
    # The warm verifier may take its short path for the changed request; it must
    # answer exactly what the full path answers.
    assert outcome(warm, changed) == fresh, how
    assert outcome(warm, request) == ("verified", ALICE.principal)


@fuzz(200)
@given(
    body=st.binary(max_size=64),
    headers=_EXTRA_HEADERS,
    later=st.integers(0, 600),
    noise=st.dictionaries(
        st.sampled_from([b"x-amz-date", b"date", b"x-amz-target", b"host"]),
        _HEADER_VALUES,
        max_size=2,
    ),
)
def test_the_short_path_answers_as_the_full_path_for_any_header_values(
    body, headers, later, noise
):
    first = sign(body, headers, [])
    warm = verifier()
    assert outcome(warm, first)[0] == "verified"
    # The same client a little later, with some headers replaced by noise.
    second = sign(body, headers, [], NOW + dt.timedelta(seconds=later))
    for name, value in noise.items():
        second = second.with_header(name, value)
    assert outcome(warm, second) == outcome(verifier(), second)


def _from_corpus(raw: bytes) -> Request:
    spec: dict[str, Any] = json.loads(raw)
    request = sign(b"{}", {}, [])
    headers = dict(request.headers)
    for name, value in spec.get("headers", {}).items():
        if value is None:
            headers.pop(name.encode("latin-1"), None)
        else:
            headers[name.encode("latin-1")] = value.encode("latin-1")
    return replace(
        request, headers=headers, query=spec.get("query", "").encode("latin-1")
    )


@pytest.mark.parametrize(("name", "raw"), corpus("sigv4"))
def test_corpus(name, raw):
    request = _from_corpus(raw)
    warm = verifier()
    outcome(warm, sign(b"{}", {}, []))
    fresh = outcome(verifier(), request)
    assert outcome(warm, request) == fresh
    if not name.startswith("valid"):
        assert fresh[0] != "verified", name
