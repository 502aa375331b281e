"""An in-process keyplane for the fuzz targets that go through the whole stack.

Requests are written as HTTP bytes into the server's own protocol object with a
transport that records what is written, so nothing opens a socket and any exception
that escapes fails the target. Authentication is off (a fuzzed request never carries
a valid signature; the SigV4 target fuzzes the verifier by itself), and each request
acts as the caller the target names: the account's root, or a user whose identity
policy allows every KMS action.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from keyplane.api.server import Api, Authentication, HttpConnection, Limits
from keyplane.hsm import Hsm
from keyplane.kms import AdjustableClock, Caller, KmsService
from keyplane.policy import parse_policy
from keyplane.storage import SQLiteStore

REGION = "us-east-1"
ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
_ALICE_POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}'
)
# The statuses a well-behaved server may answer a request with; 500 never.
CLIENT_ERRORS = frozenset({400, 404, 405, 413})


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        """The AWS error type, or "" for a success."""
        return str(self.body.get("__type", "")) if self.status != 200 else ""


class _Transport:
    """Records what the protocol writes and wakes the caller once a whole response
    (head and Content-Length bytes of body) has arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.written = b""
        self.closed = False
        self.done: asyncio.Future[None] = loop.create_future()

    def write(self, data: bytes) -> None:
        assert not self.closed, "wrote after close"
        self.written += data
        head, sep, body = self.written.partition(b"\r\n\r\n")
        if sep and not self.done.done():
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                self.done.set_result(None)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default


class Kms:
    """A keyplane service and an API per caller, on an event loop of its own."""

    def __init__(self, data_dir: os.PathLike[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SQLiteStore(os.path.join(data_dir, "db"))
        self.service = KmsService(
            Hsm(bytearray(os.urandom(32))),
            self.store,
            AdjustableClock(),
            REGION,
            self.loop,
        )
        callers = {
            ROOT: Caller(ROOT, ACCOUNT),
            ALICE: Caller(
                ALICE, ACCOUNT, (parse_policy(_ALICE_POLICY, kind="identity"),)
            ),
        }
        self.service.callers = callers
        self.apis = {
            arn: Api(self.service, Authentication(None, callers, caller))
            for arn, caller in callers.items()
        }

    def call(self, target: str, body: bytes, *, caller: str = ROOT) -> Answer:
        """Send one request as ``caller`` and return the server's answer."""
        request = (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1"
            b"\r\nX-Amz-Target: %b\r\nContent-Length: %d\r\n\r\n%b"
            % (target.encode(), len(body), body)
        )
        return self.raw(request, caller=caller)

    def raw(self, request: bytes, *, caller: str = ROOT) -> Answer:
        """Send one request written by hand and return the server's answer."""
        transport = _Transport(self.loop)

        async def exchange() -> None:
            # On the loop, as the server runs: operations that await become tasks of
            # the running loop.
            connection = HttpConnection(self.apis[caller], Limits(), set())
            connection.connection_made(transport)  # type: ignore[arg-type]
            connection.data_received(request)
            await asyncio.wait_for(transport.done, 30)

        self.loop.run_until_complete(exchange())
        head, _, body = transport.written.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return Answer(status, orjson.loads(body))

    def ok(self, target: str, members: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Call an operation that must succeed, and return its result."""
        answer = self.call(target, orjson.dumps(members), **kw)
        assert answer.status == 200, answer
        return answer.body

    def close(self) -> None:
        self.service.close()
        self.store.close()
        self.service.hsm.close()
        self.loop.close()


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    service = Kms(tmp_path_factory.mktemp("fuzz"))
    yield service
    service.close()
