"""SigV4 verification against requests signed by botocore's own signer, and every way a
request is refused, with AWS's message texts."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keyplane.api import sigv4
from keyplane.api.sigv4 import Credential, Verified, Verifier
from keyplane.errors import (
    AuthenticationError,
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationError,
    UnrecognizedClientError,
)

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ALICE = Credential(
    access_key_id=KEY_ID,
    secret_access_key=SECRET,
    principal="arn:aws:iam::111122223333:user/alice",
    account="111122223333",
)
NOW = dt.datetime(2026, 1, 1, 12, 0, 0)
NOW_TS = NOW.replace(tzinfo=dt.UTC).timestamp()
BODY = b'{"KeyId":"alias/test","Plaintext":"aGVsbG8gd29ybGQ="}'
HOST = "127.0.0.1:4599"

# AWS's texts, written out here rather than imported, so a change in the module shows.
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Request:
    """A request as the server hands it to the verifier."""

    method: bytes
    path: bytes
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes

    def with_headers(self, **changes: bytes | None) -> Request:
        """A copy with headers set (names use _ for -), or removed when None."""
        headers = dict(self.headers)
        for name, value in changes.items():
            key = name.replace("_", "-").encode()
            if value is None:
                headers.pop(key, None)
            else:
                headers[key] = value
        return replace(self, headers=headers)

    def with_auth(self, auth: bytes) -> Request:
        return self.with_headers(authorization=auth)

    @property
    def auth(self) -> bytes:
        return self.headers[b"authorization"]

    @property
    def signature(self) -> bytes:
        """The Signature parameter's value, or empty when there is none."""
        found = re.search(
            rb"Signature=([^,\s]*)", self.headers.get(b"authorization", b"")
        )
        return found[1] if found else b""


def sign(
    body: bytes = BODY,
    *,
    headers: Mapping[str, str | None] | None = None,
    params: Any = None,
    path: str = "/",
    key_id: str = KEY_ID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "us-east-1",
    service: str = "kms",
    when: dt.datetime = NOW,
) -> Request:
    """Sign a KMS-style request with botocore, and turn it into the server's form."""
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}{path}",
        data=body,
        headers={
            name: value
            for name, value in {
                "X-Amz-Target": "TrentService.Encrypt",
                "Content-Type": "application/x-amz-json-1.1",
                **(headers or {}),
            }.items()
            if value is not None  # None leaves a default header out
        },
        params=params or {},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(Credentials(key_id, secret, token), service, region).add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    wire = {
        name.lower().encode(): value.encode("latin-1")
        for name, value in prepared.headers.items()
    }
    wire[b"host"] = url.netloc.encode()
    return Request(
        method=prepared.method.encode(),
        path=url.path.encode(),
        query=url.query.encode(),
        headers=wire,
        body=prepared.body or b"",
    )


def verifier(
    *,
    now: float = NOW_TS,
    region: str | None = "us-east-1",
    credentials: Mapping[str, Credential] | None = None,
    **options: Any,
) -> Verifier:
    return Verifier(
        {KEY_ID: ALICE} if credentials is None else credentials,
        region=region,
        clock=lambda: now,
        **options,
    )


def verify(request: Request, v: Verifier | None = None) -> Verified:
    return (v or verifier()).verify(
        request.method, request.path, request.query, request.headers, request.body
    )


def refused(
    request: Request,
    error: type[AuthenticationError],
    message: str,
    v: Verifier | None = None,
) -> None:
    """The request is refused with exactly ``error`` and ``message``, and the message
    gives away neither the secret nor the whole signature."""
    with pytest.raises(AuthenticationError) as caught:
        verify(request, v)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert SECRET not in message
    signature = request.signature.decode("latin-1")
    assert len(signature) < 16 or signature not in message


def shown(auth: bytes) -> str:
    """The header as the messages quote it: a signature cut to its first 8 digits."""
    return re.sub(
        r"[0-9a-fA-F]{16,}", lambda m: m.group()[:8] + "...", auth.decode("latin-1")
    )


# --- requests that verify -------------------------------------------------------------


def test_botocore_request_verifies() -> None:
    request = sign()
    assert request.headers[b"x-amz-date"] == b"20260101T120000Z"
    assert verify(request) == Verified(
        credential=ALICE, region="us-east-1", service="kms"
    )


def test_any_region_when_none_is_configured() -> None:
    found = verify(sign(region="eu-west-1"), verifier(region=None))
    assert found.region == "eu-west-1"
    assert found.service == "kms"


@pytest.mark.parametrize(
    "params",
    [
        {"b": "x y+z", "a": "é/~", "a ": "1", "empty": ""},
        [("a", "2"), ("a", "1"), ("b", "")],
        {"Action": "Encrypt", "*": "(!)", "%": "%25"},
    ],
    ids=["encoded", "repeated", "reserved"],
)
def test_query_strings_verify(params: Any) -> None:
    request = sign(params=params)
    assert request.query
    assert verify(request).credential is ALICE


def test_paths_are_normalized_and_encoded_twice() -> None:
    request = sign(path="/a%20b/./c/../d//e/")
    assert request.path == b"/a%20b/./c/../d//e/"
    assert verify(request).credential is ALICE


def test_header_values_are_trimmed_and_spaces_collapsed() -> None:
    request = sign(headers={"X-Custom": "  a   b \t c  ", "X-Other": "x"})
    assert verify(request).credential is ALICE
    # A proxy that trims the value, or collapses its spaces, changes nothing.
    assert verify(request.with_headers(x_custom=b"a b c")).credential is ALICE


@pytest.mark.parametrize(
    "layout",
    [
        "{alg}   Credential={c},SignedHeaders={h},Signature={s}",
        "  {alg} Credential={c} SignedHeaders={h} Signature={s}  ",
        "{alg}\tCredential={c} ,\tSignedHeaders={h} , , Signature={s}",
        "{alg} Signature={s}, Credential={c}, SignedHeaders={h}, Unknown=x",
    ],
)
def test_authorization_header_layouts(layout: str) -> None:
    request = sign()
    fields = dict(
        re.findall(
            r"(Credential|SignedHeaders|Signature)=([^,\s]+)", request.auth.decode()
        )
    )
    auth = layout.format(
        alg="AWS4-HMAC-SHA256",
        c=fields["Credential"],
        h=fields["SignedHeaders"],
        s=fields["Signature"],
    )
    assert verify(request.with_auth(auth.encode())).credential is ALICE


def test_trailing_slashes_after_the_scope_are_ignored() -> None:
    request = sign()
    auth = request.auth.replace(b"/aws4_request,", b"/aws4_request//,")
    assert verify(request.with_auth(auth)).credential is ALICE


def test_unsigned_headers_may_be_added() -> None:
    request = sign().with_headers(user_agent=b"Boto3/1.40", x_amzn_trace_id=b"Root=1")
    assert verify(request).credential is ALICE


def test_date_header_instead_of_x_amz_date() -> None:
    # botocore then sends an HTTP date and signs the same moment in basic format.
    request = sign(headers={"Date": "set by the signer"})
    assert b"x-amz-date" not in request.headers
    assert request.headers[b"date"] == b"Thu, 01 Jan 2026 12:00:00 -0000"
    assert verify(request).credential is ALICE
    expired = verifier(now=NOW_TS + 301)
    with pytest.raises(
        InvalidSignatureError, match=r"^Signature expired: 20260101T1200"
    ):
        verify(request, expired)


def test_matching_content_sha256_header() -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    request = sign(headers={"X-Amz-Content-SHA256": digest})
    assert verify(request).credential is ALICE


def test_order_of_repeated_query_parameters_does_not_matter() -> None:
    request = sign(params=[("a", "1"), ("a", "2")])
    swapped = replace(request, query=b"a=2&a=1")
    assert verify(swapped).credential is ALICE


# --- refusals -------------------------------------------------------------------------


def test_no_authorization_header() -> None:
    refused(
        sign().with_headers(authorization=None),
        MissingAuthenticationError,
        "Missing Authentication Token",
    )
    refused(
        sign().with_auth(b""),
        MissingAuthenticationError,
        "Missing Authentication Token",
    )


def test_query_string_signing_counts_as_no_authentication() -> None:
    request = replace(
        sign().with_headers(authorization=None),
        query=b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x",
    )
    refused(request, MissingAuthenticationError, "Missing Authentication Token")


def test_header_and_query_signature_together() -> None:
    request = replace(sign(), query=b"X-Amz-Algorithm=AWS4-HMAC-SHA256")
    refused(
        request,
        InvalidSignatureError,
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as "
        "HTTP header.",
    )


def test_other_algorithm() -> None:
    request = sign()
    auth = request.auth.replace(b"AWS4-HMAC-SHA256", b"AWS4-HMAC-SHA512")
    refused(
        request.with_auth(auth),
        IncompleteSignatureError,
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' "
        "(only AWS4-HMAC-SHA256 for now). ",
    )


def test_other_schemes() -> None:
    request = sign()
    refused(
        request.with_auth(b"Bearer abc.def"),
        IncompleteSignatureError,
        "'abc.def' not a valid key=value pair (missing equal-sign) in Authorization "
        "header: 'Bearer abc.def'.",
    )
    refused(
        request.with_auth(b"Basic"),
        IncompleteSignatureError,
        "Authorization header requires 'Credential' parameter. Authorization header "
        "requires 'Signature' parameter. Authorization header requires 'SignedHeaders' "
        "parameter. Authorization=Basic",
    )


def test_space_inside_a_value() -> None:
    request = sign()
    auth = request.auth.replace(b"Credential=", b"Credential= ")
    credential = re.search(rb"Credential= ([^,]+),", auth)
    assert credential
    refused(
        request.with_auth(auth),
        IncompleteSignatureError,
        f"'{credential[1].decode()}' not a valid key=value pair (missing equal-sign) "
        f"in Authorization header: '{shown(auth)}'.",
    )


@pytest.mark.parametrize("missing", ["Credential", "SignedHeaders", "Signature"])
def test_missing_parameter(missing: str) -> None:
    request = sign()
    auth = re.sub(rf"{missing}=[^,]+(, )?".encode(), b"", request.auth).rstrip(b", ")
    assert missing.encode() not in auth
    message = f"Authorization header requires '{missing}' parameter. "
    refused(
        request.with_auth(auth),
        IncompleteSignatureError,
        f"{message}Authorization={shown(auth)}",
    )


def test_empty_values_count_as_missing() -> None:
    auth = b"AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature="
    refused(
        sign().with_auth(auth),
        IncompleteSignatureError,
        "Authorization header requires 'Credential' parameter. Authorization header "
        f"requires 'Signature' parameter. Authorization={auth.decode()}",
    )


def test_missing_date() -> None:
    request = sign().with_headers(x_amz_date=None)
    refused(
        request,
        IncompleteSignatureError,
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
        f"header. Authorization={shown(request.auth)}",
    )


@pytest.mark.parametrize("twice", ["Credential", "SignedHeaders", "Signature"])
def test_repeated_parameter(twice: str) -> None:
    request = sign()
    auth = request.auth + f", {twice}=x".encode()
    refused(
        request.with_auth(auth),
        IncompleteSignatureError,
        f"Authorization header has more than one '{twice}' parameter. "
        f"Authorization={shown(auth)}",
    )


@pytest.mark.parametrize(
    "date", [b"2026-01-01T12:00:00Z", b"20260230T120000Z", b"20260101T120000", b""]
)
def test_malformed_date(date: bytes) -> None:
    v = verifier()
    verify(sign(), v)  # a good date first, so a cached parse cannot answer for it
    refused(
        sign().with_headers(x_amz_date=date),
        IncompleteSignatureError,
        f"Date must be in ISO-8601 'basic format'. Got '{date.decode()}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
        v,
    )


def test_x_amz_date_must_be_basic_format_even_when_date_would_parse() -> None:
    refused(
        sign().with_headers(x_amz_date=b"Thu, 01 Jan 2026 12:00:00 GMT"),
        IncompleteSignatureError,
        "Date must be in ISO-8601 'basic format'. Got 'Thu, 01 Jan 2026 12:00:00 GMT'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
    )


@pytest.mark.parametrize(
    "scope",
    [b"AKIDEXAMPLE/20260101/us-east-1/kms", b"AKIDEXAMPLE/20260101/us-east-1/kms/x/y"],
)
def test_malformed_scope(scope: bytes) -> None:
    request = sign()
    auth = re.sub(rb"Credential=[^,]+", b"Credential=" + scope, request.auth)
    refused(
        request.with_auth(auth),
        IncompleteSignatureError,
        "Credential must have exactly 5 slash-delimited elements, e.g. "
        f"keyid/date/region/service/term, got '{scope.decode()}'",
    )


def test_wrong_terminator() -> None:
    request = sign()
    auth = request.auth.replace(b"/aws4_request", b"/aws5_request")
    refused(
        request.with_auth(auth),
        InvalidSignatureError,
        "Credential should be scoped with a valid terminator: 'aws4_request', "
        "not 'aws5_request'. ",
    )


def test_unknown_access_key() -> None:
    refused(sign(key_id="AKIDUNKNOWN"), UnrecognizedClientError, INVALID_TOKEN)


def test_wrong_secret() -> None:
    refused(sign(secret="not the secret"), InvalidSignatureError, MISMATCH)


def test_tampered_body() -> None:
    request = sign()
    refused(
        replace(request, body=BODY.replace(b"test", b"TEST")),
        InvalidSignatureError,
        MISMATCH,
    )


def test_changed_signed_header() -> None:
    request = sign().with_headers(x_amz_target=b"TrentService.Decrypt")
    refused(request, InvalidSignatureError, MISMATCH)


def test_absent_signed_header() -> None:
    refused(sign().with_headers(content_type=None), InvalidSignatureError, MISMATCH)


def test_changed_method_path_or_query() -> None:
    request = sign(params={"a": "1"})
    refused(replace(request, method=b"PUT"), InvalidSignatureError, MISMATCH)
    refused(replace(request, path=b"/other"), InvalidSignatureError, MISMATCH)
    refused(replace(request, query=b"a=2"), InvalidSignatureError, MISMATCH)


def test_host_not_signed() -> None:
    request = sign()
    auth = request.auth.replace(b"content-type;host;", b"content-type;")
    assert b"host" not in auth
    refused(
        request.with_auth(auth),
        InvalidSignatureError,
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
    )


def test_changed_host() -> None:
    refused(
        sign().with_headers(host=b"127.0.0.1:4600"), InvalidSignatureError, MISMATCH
    )


def test_mismatched_content_sha256_header() -> None:
    digest = hashlib.sha256(b"another body").hexdigest()
    refused(
        sign(headers={"X-Amz-Content-SHA256": digest}),
        InvalidSignatureError,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )


@pytest.mark.parametrize("seconds", [-300, 300, 0])
def test_date_at_the_edge_of_the_window(seconds: int) -> None:
    request = sign(when=NOW + dt.timedelta(seconds=seconds))
    assert verify(request).credential is ALICE


def test_date_too_old() -> None:
    refused(
        sign(when=NOW - dt.timedelta(seconds=301)),
        InvalidSignatureError,
        "Signature expired: 20260101T115459Z is now earlier than 20260101T115500Z "
        "(20260101T120000Z - 5 min.)",
    )


def test_date_in_the_future() -> None:
    refused(
        sign(when=NOW + dt.timedelta(seconds=301)),
        InvalidSignatureError,
        "Signature not yet current: 20260101T120501Z is still later than "
        "20260101T120500Z (20260101T120000Z + 5 min.)",
    )


def test_edge_with_a_fractional_clock() -> None:
    # Exactly 300 s old verifies; a millisecond more does not, though both nows print
    # as the same second in the message.
    request = sign(when=NOW - dt.timedelta(seconds=300))
    assert verify(request, verifier(now=NOW_TS)).credential is ALICE
    refused(
        request,
        InvalidSignatureError,
        "Signature expired: 20260101T115500Z is now earlier than 20260101T115500Z "
        "(20260101T120000Z - 5 min.)",
        verifier(now=NOW_TS + 0.001),
    )
    ahead = sign(when=NOW + dt.timedelta(seconds=300))
    assert verify(ahead, verifier(now=NOW_TS)).credential is ALICE
    with pytest.raises(InvalidSignatureError, match=r"^Signature not yet current"):
        verify(ahead, verifier(now=NOW_TS - 0.001))


@pytest.mark.parametrize(("skew", "text"), [(900, "15 min"), (90, "90 sec")])
def test_other_skews_are_worded_like_aws(skew: float, text: str) -> None:
    request = sign(when=NOW - dt.timedelta(seconds=skew + 1))
    with pytest.raises(InvalidSignatureError) as caught:
        verify(request, verifier(max_skew_seconds=skew))
    assert str(caught.value).endswith(f"(20260101T120000Z - {text}.)")


def test_negative_skew_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="max_skew_seconds"):
        verifier(max_skew_seconds=-1)


def test_scope_date_differs_from_request_date() -> None:
    evening = dt.datetime(2026, 1, 1, 23, 58, 0)
    request = sign(when=evening).with_headers(x_amz_date=b"20260102T000010Z")
    late = dt.datetime(2026, 1, 2, 0, 0, 10, tzinfo=dt.UTC).timestamp()
    refused(
        request,
        InvalidSignatureError,
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
        "date from HTTP: '20260101' != '20260102', from '20260102T000010Z'. ",
        verifier(now=late),
    )


def test_wrong_region() -> None:
    refused(
        sign(region="eu-west-1"),
        InvalidSignatureError,
        "Credential should be scoped to a valid region, not 'eu-west-1'. ",
    )


def test_empty_region_is_refused_even_when_any_is_allowed() -> None:
    refused(
        sign(region=""),
        InvalidSignatureError,
        "Credential should be scoped to a valid region, not ''. ",
        verifier(region=None),
    )


def test_wrong_service() -> None:
    refused(
        sign(service="s3"),
        InvalidSignatureError,
        "Credential should be scoped to correct service: 'kms'. ",
    )


def test_every_scope_fault_is_reported_at_once() -> None:
    request = sign(region="eu-west-1", service="s3")
    auth = request.auth.replace(b"/20260101/", b"/20251231/").replace(
        b"aws4_request", b"aws5_request"
    )
    refused(
        request.with_auth(auth),
        InvalidSignatureError,
        "Credential should be scoped to a valid region, not 'eu-west-1'. "
        "Credential should be scoped to correct service: 'kms'. "
        "Credential should be scoped with a valid terminator: 'aws4_request', "
        "not 'aws5_request'. "
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
        "date from HTTP: '20251231' != '20260101', from '20260101T120000Z'. ",
    )


def test_session_token_is_unknown() -> None:
    request = sign(token="FwoGZXIvYXdzEXAMPLE")
    assert b"x-amz-security-token" in request.auth
    refused(request, UnrecognizedClientError, INVALID_TOKEN)
    # An unsigned token is refused the same way.
    refused(
        sign().with_headers(x_amz_security_token=b"token"),
        UnrecognizedClientError,
        INVALID_TOKEN,
    )


def test_checks_run_in_aws_order() -> None:
    # Expired and for another region: the date is checked first.
    old = sign(region="eu-west-1", when=NOW - dt.timedelta(hours=1))
    with pytest.raises(InvalidSignatureError, match=r"^Signature expired"):
        verify(old)
    # Unknown key in the wrong region: the scope is checked before the key.
    with pytest.raises(InvalidSignatureError, match=r"^Credential should be scoped"):
        verify(sign(key_id="AKIDUNKNOWN", region="eu-west-1"))
    # Host unsigned with another algorithm: the host comes first.
    request = sign()
    auth = request.auth.replace(b"content-type;host;", b"content-type;")
    auth = auth.replace(b"AWS4-HMAC-SHA256", b"AWS4-X")
    with pytest.raises(InvalidSignatureError, match=r"^'Host'"):
        verify(request.with_auth(auth))


def test_reprs_hide_secrets() -> None:
    assert SECRET not in repr(ALICE)
    v = verifier()
    verify(sign(), v)
    [signer] = v._cache.values()
    assert "hidden" in repr(signer)


# --- the derived-key cache ------------------------------------------------------------


def test_one_derivation_per_key_and_day(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.digest

    def counting(key: bytes, msg: bytes, digest: str) -> bytes:
        calls.append(msg)
        return real(key, msg, digest)

    monkeypatch.setattr(sigv4.hmac, "digest", counting)
    v = verifier()
    for _ in range(5):
        verify(sign(), v)
    assert calls == [b"20260101", b"us-east-1", b"kms", b"aws4_request"]


def test_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    v = verifier(region=None)
    size = 1024
    for i in range(size):
        v._signer(ALICE, "20260101", f"region-{i}", "kms")
    v._signer(ALICE, "20260101", "region-0", "kms")  # now the most recent
    for i in range(size, size + 10):
        v._signer(ALICE, "20260101", f"region-{i}", "kms")
    regions = {key[3] for key in v._cache}
    assert len(v._cache) == size
    assert "region-0" in regions
    assert not {f"region-{i}" for i in range(1, 11)} & regions
    assert f"region-{size + 9}" in regions


def test_rotated_secret_is_not_served_from_the_cache() -> None:
    credentials = {KEY_ID: ALICE}
    v = verifier(credentials=credentials)
    assert verify(sign(), v).credential is ALICE
    rotated = replace(ALICE, secret_access_key="a new secret")
    credentials[KEY_ID] = rotated
    refused(sign(), InvalidSignatureError, MISMATCH, v)
    assert verify(sign(secret="a new secret"), v).credential is rotated


def test_changed_principal_with_the_same_secret_is_answered() -> None:
    credentials = {KEY_ID: ALICE}
    v = verifier(credentials=credentials)
    verify(sign(), v)
    moved = replace(ALICE, principal="arn:aws:iam::111122223333:user/bob")
    credentials[KEY_ID] = moved
    assert verify(sign(), v).credential is moved


@given(key=st.binary(min_size=32, max_size=32), message=st.binary(max_size=512))
def test_signer_is_hmac_sha256(key: bytes, message: bytes) -> None:
    expected = hmac.new(key, message, hashlib.sha256).hexdigest().encode()
    assert sigv4._Signer(key).hexdigest(message) == expected


# --- properties -----------------------------------------------------------------------

_AUTH_PIECES = st.sampled_from(
    [
        b"AWS4-HMAC-SHA256",
        b" ",
        b",",
        b"=",
        b"/",
        b";",
        b"Credential=",
        b"SignedHeaders=",
        b"Signature=",
        b"AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request",
        b"AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request/",
        b"AKIDEXAMPLE/20260101//kms/aws4_request",
        b"host;x-amz-date",
        b"content-type;host;x-amz-date;x-amz-target",
        b"0" * 64,
        b"\xff\xfe",
        b"\t",
    ]
)


@settings(max_examples=300)
@given(
    auth=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | st.lists(_AUTH_PIECES | st.binary(max_size=8), max_size=12).map(b"".join),
    date=st.none() | st.just(b"20260101T120000Z") | st.binary(max_size=32),
)
@example(
    auth=b"AWS4-HMAC-SHA256 Credential=\xe9/20260101/us-east-1/kms/aws4_request, "
    b"SignedHeaders=host, Signature=\xff",
    date=b"20260101T120000Z",
)
def test_any_authorization_header_fails_only_with_authentication_errors(
    auth: bytes, date: bytes | None
) -> None:
    request = sign().with_auth(auth).with_headers(x_amz_date=date)
    with pytest.raises(AuthenticationError):
        verify(request)


@settings(max_examples=100)
@given(date=st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_date_header_fails_only_with_authentication_errors(date: bytes) -> None:
    request = sign(headers={"Date": "x"}).with_headers(date=date)
    with pytest.raises(AuthenticationError):
        verify(request)


_HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=2048),
    value=_HEADER_TEXT,
    name=st.from_regex(r"x-[a-z0-9]{1,12}", fullmatch=True),
    data=st.data(),
)
def test_signed_requests_verify_and_any_flip_fails(
    body: bytes, value: str, name: str, data: st.DataObject
) -> None:
    request = sign(body, headers={name: value})
    assert verify(request).credential is ALICE

    if body:
        at = data.draw(st.integers(0, len(body) - 1), label="body byte")
        flip = data.draw(st.integers(1, 255), label="xor")
        tampered = bytearray(body)
        tampered[at] ^= flip
        with pytest.raises(InvalidSignatureError, match=r"^The request signature"):
            verify(replace(request, body=bytes(tampered)))

    signature = request.signature
    at = data.draw(st.integers(0, len(signature) - 1), label="signature digit")
    digit = data.draw(
        st.sampled_from(b"0123456789abcdef").filter(lambda d: d != signature[at]),
        label="new digit",
    )
    forged = signature[:at] + bytes([digit]) + signature[at + 1 :]
    auth = request.auth[: -len(signature)] + forged
    with pytest.raises(InvalidSignatureError, match=r"^The request signature"):
        verify(request.with_auth(auth))


# --- the remembered prefix ------------------------------------------------------------
# After a header verified once, requests with the same prefix (credential scope and
# signed headers) take a shorter path; it must refuse exactly what the full one does.


def _warm() -> Verifier:
    v = verifier()
    verify(sign(), v)
    return v


def _short_path_calls(v: Verifier, request: Request) -> list[Any]:
    """Verify ``request`` and return what the short path answered (empty when it was
    not taken); it raises as verify raises."""
    answers: list[Any] = []
    original = Verifier._verify_planned

    def spy(self: Verifier, *args: Any) -> Any:
        answers.append(original(self, *args))
        return answers[-1]

    with mock.patch.object(Verifier, "_verify_planned", spy):
        verify(request, v)
    return answers


def test_the_short_path_accepts_a_fresh_signature():
    v = _warm()
    other = sign(b'{"KeyId":"alias/test","Plaintext":"b3RoZXI="}')
    (answer,) = _short_path_calls(v, other)
    assert answer is not None and answer.credential is ALICE
    # ...and a cold verifier takes the full path for the same request.
    assert _short_path_calls(verifier(), other) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: replace(r, body=r.body + b" "), MISMATCH),
        (lambda r: r.with_headers(x_amz_target=b"TrentService.Decrypt"), MISMATCH),
        (lambda r: r.with_headers(content_type=None), MISMATCH),
        (
            lambda r: r.with_auth(r.auth[:-4] + b"0000"),
            MISMATCH,
        ),
        (lambda r: r.with_headers(x_amz_security_token=b"t"), INVALID_TOKEN),
    ],
)
def test_the_short_path_refuses_what_the_full_path_refuses(change, message):
    v = _warm()
    request = change(sign())
    spied = mock.patch.object(
        Verifier, "_verify_planned", autospec=True, side_effect=Verifier._verify_planned
    )
    with spied as short_path, pytest.raises(AuthenticationError) as warm:
        verify(request, v)
    assert short_path.called
    with pytest.raises(AuthenticationError) as cold:
        verify(request)
    assert (type(warm.value), str(warm.value)) == (type(cold.value), str(cold.value))
    assert str(warm.value) == message


def test_an_unsigned_operation_is_refused_on_both_paths():
    # Signed without any X-Amz-Target (so not over it), then one added: a captured
    # request must not be replayable as another operation.
    untargeted = sign(headers={"X-Amz-Target": None})
    assert b"x-amz-target" not in untargeted.auth
    replayed = untargeted.with_headers(x_amz_target=b"TrentService.DisableKey")
    message = "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
    refused(replayed, InvalidSignatureError, message)
    # A verifier that remembered the untargeted prefix refuses it the same way.
    v = verifier()
    verify(untargeted, v)
    refused(replayed, InvalidSignatureError, message, v)


def test_the_short_path_checks_the_clock():
    v = verifier(now=NOW_TS)
    verify(sign(), v)
    late = verifier(now=NOW_TS + 3600)
    late._plans = v._plans  # the same remembered prefixes, an hour later
    with pytest.raises(InvalidSignatureError, match="Signature expired"):
        verify(sign(), late)


def test_a_rotated_secret_is_not_answered_from_the_remembered_prefix():
    credentials = {KEY_ID: ALICE}
    v = verifier(credentials=credentials)
    verify(sign(), v)
    credentials[KEY_ID] = Credential(KEY_ID, "a-new-secret", ALICE.principal, "1")
    with pytest.raises(InvalidSignatureError):
        verify(sign(), v)
    assert verify(sign(secret="a-new-secret"), v).credential.secret_access_key == (
        "a-new-secret"
    )


def test_a_request_dated_another_day_than_its_remembered_scope():
    before_midnight = dt.datetime(2026, 1, 1, 23, 59, 0)
    after_midnight = dt.datetime(2026, 1, 2, 0, 1, 0)
    now = before_midnight.replace(tzinfo=dt.UTC).timestamp() + 30
    v = verifier(now=now)
    verify(sign(when=before_midnight), v)
    # The remembered prefix's scope says Jan 1st; the date header says Jan 2nd, within
    # the allowed skew: the full path's answer, not a bare mismatch.
    request = sign(when=before_midnight).with_headers(
        x_amz_date=after_midnight.strftime("%Y%m%dT%H%M%SZ").encode()
    )
    with pytest.raises(InvalidSignatureError, match="Date in Credential scope"):
        verify(request, v)


def test_the_short_path_trims_values_as_the_full_path_does():
    # botocore signs a value with inner runs of blanks trimmed to one; both paths
    # must trim the same way to agree with it.
    signed = sign(headers={"X-Custom": "a   b c", "X-Amz-Target": "T  x"})
    v = verifier()
    verify(signed, v)
    (answer,) = _short_path_calls(v, signed)
    assert answer is not None and answer.credential is ALICE
    tampered = signed.with_headers(x_custom=b"a b  c d")
    with pytest.raises(InvalidSignatureError):
        verify(tampered, v)
