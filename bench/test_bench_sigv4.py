"""pytest-benchmark timing of one SigV4 verification, the cost authentication adds to
every request, for tracking it over time.

The request is an Encrypt as botocore signs it. Two cases: the first request of an
Authorization prefix (credential scope and signed headers), which takes the full path,
and every later one, which the verifier answers from what it remembered of the prefix.
Each test checks that the request verified, so a broken verifier fails rather than
posting a number; times are read from the output, never asserted.

Run::

    .venv/bin/python -m pytest bench/test_bench_sigv4.py --benchmark-enable
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from pytest_benchmark.fixture import BenchmarkFixture

from keyplane.api.sigv4 import Credential, Verifier

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105  AWS's doc example
PRINCIPAL = "arn:aws:iam::111122223333:user/admin"
BODY = json.dumps(
    {
        "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
        "Plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    }
).encode()


def _headers() -> dict[bytes, bytes]:
    """The headers botocore would send, signed here by the SigV4 recipe (AWS General
    Reference, "Signature Version 4"): botocore itself cannot be imported under pytest
    from this directory, where bench/http.py shadows the standard library's http."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        b"content-type": b"application/x-amz-json-1.1",
        b"host": b"127.0.0.1:4599",
        b"x-amz-date": stamp.encode(),
        b"x-amz-target": b"TrentService.Encrypt",
    }
    names = sorted(headers)
    canonical = b"\n".join(
        [
            b"POST",
            b"/",
            b"",
            b"".join(n + b":" + headers[n] + b"\n" for n in names),
            b";".join(names),
            hashlib.sha256(BODY).hexdigest().encode(),
        ]
    )
    scope = f"{stamp[:8]}/us-east-1/kms/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical).hexdigest()]
    )
    key = f"AWS4{SECRET}".encode()
    for part in (stamp[:8], "us-east-1", "kms", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    headers[b"authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, "
        f"SignedHeaders={';'.join(n.decode() for n in names)}, Signature={signature}"
    ).encode()
    return headers


def _verifier() -> Verifier:
    credential = Credential(KEY_ID, SECRET, PRINCIPAL, "111122223333")
    return Verifier({KEY_ID: credential}, region="us-east-1", clock=time.time)


def test_verify_remembered_prefix(benchmark: BenchmarkFixture) -> None:
    verifier, headers = _verifier(), _headers()
    verifier.verify(b"POST", b"/", b"", headers, BODY)
    verified = benchmark(verifier.verify, b"POST", b"/", b"", headers, BODY)
    assert verified.credential.principal == PRINCIPAL


def test_verify_first_of_a_prefix(benchmark: BenchmarkFixture) -> None:
    headers = _headers()

    def first() -> object:
        # A new verifier each time: nothing remembered, the derived key cached.
        verifier = _verifier()
        verifier._cache = shared_cache  # the signing key, derived once per day
        return verifier.verify(b"POST", b"/", b"", headers, BODY)

    warm = _verifier()
    warm.verify(b"POST", b"/", b"", headers, BODY)
    shared_cache = warm._cache
    verified = benchmark(first)
    assert verified.credential.principal == PRINCIPAL  # type: ignore[attr-defined]
