"""The wire protocol sent raw: malformed requests get AWS's errors, the server keeps
serving, keep-alive and pipelining answer in order."""

from __future__ import annotations

import json
import socket

import pytest

from tests.integration.conftest import signed_headers


def raw(server, data: bytes, *, read_until_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def post(
    target: str | None, body: bytes, extra: bytes = b"", *, signed: bool = True
) -> bytes:
    """A KMS request written by hand, signed as botocore signs (unless not)."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\n"
    if signed:
        headers = signed_headers(body, target)
    else:
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        if target is not None:
            headers["X-Amz-Target"] = target
    for name, value in headers.items():
        head += f"{name}: {value}\r\n".encode()
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def error_type(response: bytes) -> tuple[int, str]:
    status = int(response.split(b" ", 2)[1])
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    return status, body["__type"]


@pytest.mark.parametrize(
    ("target", "body", "expected"),
    [
        ("TrentService.Encrypt", b"{not json", "SerializationException"),
        ("TrentService.Encrypt", b"[1, 2]", "SerializationException"),
        (
            "TrentService.Encrypt",
            b'{"KeyId": 5, "Plaintext": "eA=="}',
            "SerializationException",
        ),
        (
            "TrentService.Encrypt",
            b'{"KeyId": "k", "Plaintext": "%%%"}',
            "SerializationException",
        ),
        ("TrentService.Encrypt", b'{"Plaintext": "eA=="}', "ValidationException"),
        ("TrentService.NoSuchThing", b"{}", "UnknownOperationException"),
        (None, b"{}", "UnknownOperationException"),
        ("TrentService.GenerateRandom", b'{"NumberOfBytes": 0}', "ValidationException"),
    ],
)
def test_malformed_requests(server, target, body, expected):
    status, kind = error_type(raw(server, post(target, body)))
    assert (status, kind) == (400, expected)
    # ...and the server is still there.
    assert raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )


def test_broken_http_closes_only_that_connection(server):
    reply = raw(server, b"NOT HTTP AT ALL\r\n\r\n", read_until_close=True)
    assert reply.startswith(b"HTTP/1.1 400")
    assert raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )


def test_oversized_headers_are_refused(server):
    reply = raw(
        server,
        b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
        read_until_close=True,
    )
    assert reply.startswith(b"HTTP/1.1 400")


def test_pipelined_requests_answer_in_order(server):
    requests = b"".join(
        post("TrentService.GenerateRandom", json.dumps({"NumberOfBytes": n}).encode())
        for n in (1, 1024, 7, 300)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 200") < 4 or not _all_bodies(data, 4):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    sizes = [
        len(__import__("base64").b64decode(json.loads(b)["Plaintext"]))
        for b in _bodies(data)
    ]
    assert sizes == [1, 1024, 7, 300]


def _bodies(data: bytes) -> list[bytes]:
    bodies = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append(rest[:length])
        data = rest[length:]
    return bodies


def _all_bodies(data: bytes, n: int) -> bool:
    try:
        return len(_bodies(data)) == n
    except StopIteration:
        return False
