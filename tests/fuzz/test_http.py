"""Fuzz target: the HTTP edge with authentication on, as the server runs it.

Byte streams are made of signed requests (valid ones, and ones whose signature no
longer fits), request pieces, header lines and noise, and fed to one connection in
chunks cut anywhere. Whatever arrives, no exception leaves the protocol, every answer
is a well-formed response with an allowed status (never 500), answers are never
written after the connection is closed, and signed requests sent whole, one after
another, are all answered 200, in order.

tests/unit/api/test_http_fuzz.py does the same with authentication off; here every
request also goes through the SigV4 verifier, and the operations include ones that
answer asynchronously.

Corpus: ``corpus/http/*.bin``, raw byte streams; in them ``$SIGNED`` stands for a
signed GenerateRandom request and ``$ENCRYPT`` for a signed Encrypt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from unittest import mock

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api.server import Api, Authentication, HttpConnection, Limits
from keyplane.api.sigv4 import Credential, Verifier
from tests.fuzz._fuzz import corpus, fuzz
from tests.fuzz.conftest import ACCOUNT, ROOT, Kms
from tests.unit.api.test_http_fuzz import Transport

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = dt.datetime(2026, 1, 1, 12, 0, 0)
STATUSES = frozenset({100, 200, 400, 404, 405, 408, 413})


def signed(target: str, members: dict[str, object]) -> bytes:
    """A whole HTTP request, signed as botocore signs it at ``NOW``."""
    body = orjson.dumps(members)
    request = AWSRequest(
        method="POST",
        url="http://x/",
        data=body,
        headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        SigV4Auth(Credentials(KEY_ID, SECRET), "kms", "us-east-1").add_auth(request)
    head = b"POST / HTTP/1.1\r\nHost: x\r\n"
    for name, value in request.headers.items():
        head += f"{name}: {value}\r\n".encode()
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Edge:
    """The in-process service behind the real protocol, with SigV4 on."""

    def __init__(self, kms: Kms) -> None:
        self.kms = kms
        credential = Credential(KEY_ID, SECRET, ROOT, ACCOUNT)
        verifier = Verifier(
            {KEY_ID: credential},
            region="us-east-1",
            clock=lambda: NOW.replace(tzinfo=dt.UTC).timestamp(),
        )
        callers = kms.service.callers
        self.api = Api(kms.service, Authentication(verifier, callers, callers[ROOT]))
        key = kms.ok("TrentService.CreateKey", {})["KeyMetadata"]["KeyId"]
        self.random = signed("TrentService.GenerateRandom", {"NumberOfBytes": 8})
        self.encrypt = signed(
            "TrentService.Encrypt", {"KeyId": key, "Plaintext": "aGk="}
        )

    def feed(self, chunks: list[bytes]) -> Transport:
        transport = Transport()

        async def run() -> None:
            connection = HttpConnection(
                self.api, Limits(max_header_bytes=4096, max_body_bytes=8192), set()
            )
            connection.connection_made(transport)  # type: ignore[arg-type]
            for chunk in chunks:
                connection.data_received(chunk)
                await asyncio.sleep(0)
            # Let what went asynchronous finish.
            for _ in range(200):
                if connection.idle() or transport.closed:
                    break
                await asyncio.sleep(0.001)

        self.kms.loop.run_until_complete(run())
        return transport


@pytest.fixture(scope="module")
def edge(kms: Kms) -> Edge:
    return Edge(kms)


def responses(written: bytes) -> Iterator[tuple[int, bytes]]:
    """Each response's status and body; fails on anything not a whole response."""
    while written:
        head, sep, rest = written.partition(b"\r\n\r\n")
        assert sep, written[:200]
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        status = int(lines[0][9:12])
        if status == 100:
            written = rest
            continue
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        assert len(rest) >= length, "a response was cut short"
        yield status, rest[:length]
        written = rest[length:]


def check(transport: Transport) -> list[int]:
    statuses = []
    for status, body in responses(transport.written):
        assert status in STATUSES, (status, body)
        if status != 200:
            assert orjson.loads(body)["__type"], body
        statuses.append(status)
    return statuses


def _pieces(edge: Edge) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=48),
        st.sampled_from(
            [
                edge.random,
                edge.encrypt,
                edge.random.replace(b'"NumberOfBytes":8', b'"NumberOfBytes":9'),
                edge.random[: len(edge.random) // 2],
                edge.encrypt.replace(b"Host: x", b"Host: y"),
                edge.random.replace(b"X-Amz-Target", b"X-Amz-Targets"),
                b"\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                b"Content-Length: 99999999\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"5\r\n{}{}{\r\n0\r\n\r\n",
                b"Expect: 100-continue\r\n",
                b"Connection: close\r\n",
                b"Authorization: AWS4-HMAC-SHA256 Credential=x\r\n",
                b"X-Amz-Date: 20260101T120000Z\r\n",
            ]
        ),
    )


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@fuzz(200)
@given(data=st.data())
def test_any_bytes_are_answered_or_refused_never_faulted(edge, data):
    pieces = data.draw(st.lists(_pieces(edge), max_size=10), label="pieces")
    cuts = data.draw(st.lists(st.integers(0, 2**16), max_size=6), label="cuts")
    check(edge.feed(_cut(b"".join(pieces), cuts)))


@fuzz(100)
@given(
    kinds=st.lists(st.booleans(), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 2**16), max_size=8),
)
def test_signed_requests_split_anywhere_are_all_answered_in_order(edge, kinds, cuts):
    stream = b"".join(edge.encrypt if k else edge.random for k in kinds)
    transport = edge.feed(_cut(stream, cuts))
    answered = list(responses(transport.written))
    assert [s for s, _ in answered] == [200] * len(kinds)
    for encrypt, (_, body) in zip(kinds, answered, strict=True):
        assert ("CiphertextBlob" in orjson.loads(body)) == encrypt
    assert not transport.closed


@pytest.mark.parametrize(("name", "raw"), corpus("http"))
def test_corpus(edge, name, raw):
    stream = raw.replace(b"$SIGNED", edge.random).replace(b"$ENCRYPT", edge.encrypt)
    check(edge.feed([stream]))
    check(edge.feed([stream[i : i + 7] for i in range(0, len(stream), 7)]))
