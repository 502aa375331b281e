"""Overload and slow clients: a slowloris client is dropped, idle connections are
closed, and past its connection and in-flight limits the server answers
ThrottlingException at once, and keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ADMIN_CONFIG, ServerProcess
from tests.integration.test_protocol import _bodies, error_type, post, raw

LIMITS = """
[server]
max_connections = 4
max_in_flight = 2
header_timeout = 1.0
request_timeout = 3.0
idle_timeout = 1.5
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("limits"), config=ADMIN_CONFIG + LIMITS
    )
    proc.start()
    yield proc
    proc.stop()


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``seconds``, and what it sent."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return False, data
    except ConnectionResetError:
        pass
    return True, data


def _healthy(server: ServerProcess) -> bool:
    return raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )


def test_a_slowloris_client_is_dropped(server: ServerProcess) -> None:
    request = post("TrentService.GenerateRandom", b'{"NumberOfBytes": 8}')
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # One byte at a time, slower than the 1 s the headers may take in all; the
        # server may hang up while bytes are still being sent.
        try:
            for byte in request[:40]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed, data = _closed_within(sock, 3.0)
    assert closed, "the server kept a slowloris connection open"
    # The 408 answer is there unless the client's own late bytes made the kernel
    # reset the connection before it was read.
    if data:
        assert data.startswith(b"HTTP/1.1 408")
        assert json.loads(data.partition(b"\r\n\r\n")[2])["__type"] == (
            "RequestTimeoutException"
        )
    assert _healthy(server)


def test_a_slow_body_is_dropped(server: ServerProcess) -> None:
    body = b'{"NumberOfBytes": 8}'
    request = post("TrentService.GenerateRandom", body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request[:-5])  # headers whole, the body short of its end
        closed, data = _closed_within(sock, 6.0)
    assert closed and data.startswith(b"HTTP/1.1 408")


def test_an_idle_connection_is_closed(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(post("TrentService.GenerateRandom", b'{"NumberOfBytes": 8}'))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # Kept alive after an answer, then closed when idle past 1.5 s.
        closed, data = _closed_within(sock, 5.0)
    assert closed and data == b""


def test_past_the_connection_limit_requests_are_throttled(
    server: ServerProcess,
) -> None:
    held = []
    try:
        # Fill the server's four connections (one may still be closing from an
        # earlier test; an extra one does no harm).
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            held.append(sock)
        time.sleep(0.2)
        status, kind = error_type(
            raw(server, post("TrentService.GenerateRandom", b'{"NumberOfBytes": 8}'))
        )
        assert (status, kind) == (400, "ThrottlingException")
    finally:
        for sock in held:
            sock.close()
    # Once clients let go, new connections are served again.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reply = raw(
            server, post("TrentService.GenerateRandom", b'{"NumberOfBytes": 8}')
        )
        if reply.startswith(b"HTTP/1.1 200"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server did not serve again after connections closed")


def test_past_the_in_flight_limit_requests_are_throttled_not_queued(
    server: ServerProcess,
) -> None:
    # Pipelined CreateKey requests wait on the store's writer: with at most two in
    # flight, the rest are answered ThrottlingException at once, in order.
    n = 30
    requests = b"".join(post("TrentService.CreateKey", b"{}") for _ in range(n))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 ") < n:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    kinds = [json.loads(body).get("__type") for body in _bodies(data)]
    assert len(kinds) == n
    throttled = kinds.count("ThrottlingException")
    assert throttled > 0 and kinds.count(None) == n - throttled
    assert _healthy(server)
