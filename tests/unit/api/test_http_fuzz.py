"""The HTTP edge under arbitrary input: a connection never raises, never answers out of
order, and either answers every complete request or closes.

Bytes go straight into ``HttpConnection.data_received`` with a transport that records
what is written, so no sockets are needed and any exception escaping the protocol
fails the test (on a real loop it would be logged and the connection dropped).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.api.server import Api, Authentication, HttpConnection, Limits
from keyplane.hsm import Hsm
from keyplane.kms import Caller, KmsService
from keyplane.storage import SQLiteStore


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "wrote after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def resume_reading(self) -> None:
        pass


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    loop = asyncio.new_event_loop()
    store = SQLiteStore(tmp_path_factory.mktemp("fuzz") / "db")
    service = KmsService(
        Hsm(bytearray(os.urandom(32))), store, time.time, "us-east-1", loop
    )
    # Authentication off: fuzzed bytes never carry a valid signature, and this test is
    # after the framing and dispatch behind it (test_sigv4.py fuzzes the verifier).
    root = Caller("arn:aws:iam::111122223333:root", "111122223333")
    yield Api(service, Authentication(None, {}, root)), loop
    service.close()
    store.close()
    service.hsm.close()
    loop.close()


def feed(api, chunks):
    api_, loop = api
    connection = HttpConnection(
        api_, Limits(max_header_bytes=2048, max_body_bytes=4096), set()
    )
    transport = Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        connection.data_received(chunk)
    # Let any operation that went async finish.
    loop.run_until_complete(asyncio.sleep(0.01))
    return transport


REQUEST = (
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: TrentService.GenerateRandom\r\n"
    b'Content-Length: 20\r\n\r\n{"NumberOfBytes": 8}'
)

fragments = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                REQUEST,
                b"\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                b"Content-Length: 99999999\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"0\r\n\r\n",
                b"Expect: 100-continue\r\n",
                b"Connection: close\r\n",
            ]
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(fragments)
def test_arbitrary_bytes_never_break_the_connection(api, chunks):
    transport = feed(api, chunks)
    for response in transport.written.split(b"HTTP/1.1 ")[1:]:
        status = int(response[:3])
        assert status in (100, 200, 400, 404, 405, 413, 500)
        assert status != 500, response[:300]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.integers(1, 5), st.integers(1, 40))
def test_pipelined_requests_split_anywhere_are_all_answered(api, count, cut):
    data = REQUEST * count
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    transport = feed(api, chunks)
    assert transport.written.count(b"HTTP/1.1 200 OK") == count
    assert not transport.closed
