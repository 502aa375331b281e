"""Regressions for problems a review found: each test failed before its fix."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from keyplane.client import BatchClient, BatchItemError
from tests.integration.conftest import CREDENTIALS
from tests.integration.test_protocol import _bodies, post


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_half_closed_client_still_gets_its_answers(server, key_id):
    body = json.dumps({"KeyId": key_id, "Plaintext": "aGVsbG8="}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(post("TrentService.Encrypt", body) * 2)
        sock.shutdown(socket.SHUT_WR)
        data = _read_all(sock)
    assert data.count(b"HTTP/1.1 200") == 2
    assert all("CiphertextBlob" in json.loads(b) for b in _bodies(data))


def test_nothing_runs_behind_a_closing_request(server, kms):
    before = len(kms.list_keys(Limit=1000)["Keys"])
    closing = post("TrentService.CreateKey", b"{}", b"Connection: close\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(closing + post("TrentService.CreateKey", b"{}"))
        data = _read_all(sock)
    assert data.count(b"HTTP/1.1 200") == 1
    assert b"Connection: close" in data
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before + 1


def test_expect_100_continue(server):
    body = json.dumps({"NumberOfBytes": 16}).encode()
    # The body is signed, but sent only after the interim answer.
    request = post("TrentService.GenerateRandom", body, b"Expect: 100-continue\r\n")
    head = request[: -len(body)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_paging_survives_deleting_the_marker(kms, key_id):
    names = [f"alias/page-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    first = kms.list_aliases(KeyId=key_id, Limit=1)
    kms.delete_alias(AliasName=first["NextMarker"])
    rest = kms.list_aliases(KeyId=key_id, Limit=10, Marker=first["NextMarker"])
    seen = [a["AliasName"] for a in first["Aliases"] + rest["Aliases"]]
    # The marker names the last alias of the first page, already listed; paging goes
    # on after it even though it is gone.
    assert seen == sorted(names)


def test_batch_decrypt_names_the_wrong_key_like_decrypt(server, kms, key_id):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=other)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    with BatchClient(server.endpoint, credentials=CREDENTIALS) as client:
        [result] = client._call(
            "Decrypt",
            [
                {
                    "CiphertextBlob": __import__("base64").b64encode(blob).decode(),
                    "KeyId": other,
                }
            ],
        )
    assert isinstance(result, BatchItemError)
    assert result.code == "IncorrectKeyException"


@pytest.mark.parametrize("key", ["k\nop=Forged status=200", "a b", "x" * 300])
def test_access_log_fields_cannot_be_forged(key):
    import io

    from keyplane.api.access_log import AccessLog

    stream = io.StringIO()
    log = AccessLog(stream)
    log.add("Encrypt", key, 400, 0.0, "r-1")
    log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert " key=" in lines[0] and "op=Forged" not in lines[0].split(" key=")[0]
    assert len(lines[0]) < 600


def test_internal_errors_say_nothing_specific():
    from keyplane.api.server import error_body
    from keyplane.errors import HsmFaultError, StoreError

    for error in (
        StoreError("could not write /srv/keyplane.db: disk full"),
        HsmFaultError("detail"),
        RuntimeError("boom"),
    ):
        status, body = error_body(error)
        assert status == 500
        assert json.loads(body) == {
            "__type": "KMSInternalException",
            "message": "An internal error occurred.",
        }
