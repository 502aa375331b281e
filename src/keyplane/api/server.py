"""The HTTP/1.1 server: an asyncio Protocol with the httptools parser, AWS JSON 1.1.

Requests are ``POST /`` with ``X-Amz-Target: TrentService.<Operation>``; every response
carries an ``x-amzn-RequestId``, and errors are ``{"__type": ..., "message": ...}`` with
AWS's HTTP status. ``GET /health`` answers probes.

Connections are kept alive and may pipeline: responses leave in request order even when
a later request finishes first. A connection whose client does not read its responses
(the transport's write buffer fills) or that has too many requests in flight stops
being read until it catches up, so one slow client cannot make the server buffer
without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import httptools
import orjson

from keyplane.api import admin, batch, codec, shapes
from keyplane.api.access_log import AccessLog
from keyplane.api.errors import aws_error
from keyplane.api.sigv4 import Verifier
from keyplane.errors import (
    KeyplaneError,
    RequestTooLargeError,
    ThrottlingError,
    UnknownOperationError,
)
from keyplane.kms import Caller, KmsService, RequestContext
from keyplane.kms.ops import grants

_log = logging.getLogger("keyplane.api")

TARGET_PREFIX: Final = b"TrentService."
CONTENT_TYPE: Final = b"application/x-amz-json-1.1"
# keyplane's own operations, under KeyplaneService.<name>.
EXTENSIONS: Final = {**batch.OPERATIONS, **admin.OPERATIONS}
_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client, and all of them together, may hold of the server.

    Past ``max_connections`` or ``max_in_flight`` requests are answered at once with
    ThrottlingException (which every AWS SDK retries) rather than queued; a request
    whose headers take longer than ``header_seconds`` to arrive (a slowloris client),
    or whose whole body takes longer than ``request_seconds``, is answered 408 and its
    connection closed; a keep-alive connection idle for ``idle_seconds`` is closed.
    Together with the size limits, these bound the memory a client can make the
    server hold.
    """

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    max_in_flight_per_connection: int = 128
    max_connections: int = 4096
    max_in_flight: int = 16384
    header_seconds: float = 10.0
    request_seconds: float = 60.0
    idle_seconds: float = 120.0


@dataclass(frozen=True, slots=True)
class Authentication:
    """How requests prove who sent them.

    Attributes:
        verifier: Checks each request's SigV4 signature; None only when
            authentication is configured off, and then every request is ``anonymous``.
        callers: Principal ARN (as a credential names it) to the caller it is.
        anonymous: Who requests act as when there is no verifier.
    """

    verifier: Verifier | None
    callers: Mapping[str, Caller]
    anonymous: Caller


class RequestIds:
    """AWS-style request ids: a random per-process UUID prefix and a counter, so each is
    unique without a random draw per request."""

    def __init__(self) -> None:
        raw = os.urandom(10).hex()
        self._prefix = f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-8{raw[17:20]}-"
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


def _response(status: int, body: bytes, request_id: str, keep_alive: bool) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        b"x-amzn-RequestId: %s\r\n"
        % (
            status,
            _REASONS.get(status, b"Error"),
            CONTENT_TYPE,
            len(body),
            request_id.encode(),
        )
    )
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def error_body(error: BaseException) -> tuple[int, bytes]:
    """The status and body AWS would send for ``error``."""
    name, status = aws_error(error)
    # An internal fault's own message may name files, tables or limits: the client
    # gets a generic one, and the cause is logged with the request id.
    internal = name == "KMSInternalException" or not isinstance(error, KeyplaneError)
    message = "An internal error occurred." if internal else str(error)
    return status, orjson.dumps({"__type": name, "message": message})


class Api:
    """Turns one request (operation target and body) into a response status and body."""

    def __init__(
        self,
        service: KmsService,
        auth: Authentication,
        access_log: AccessLog | None = None,
    ) -> None:
        self.service = service
        self.auth = auth
        self.access_log = access_log
        self.ids = RequestIds()
        self.in_flight = 0

    def authenticate(
        self,
        url: bytes,
        headers: Mapping[bytes, bytes],
        body: bytes,
        peer: str,
        request_id: str,
    ) -> RequestContext:
        """Who sent the request, from its signature.

        Raises:
            AuthenticationError: unsigned, mis-signed, expired, or an unknown key.
        """
        auth = self.auth
        if auth.verifier is None:
            caller = auth.anonymous
        else:
            path, _, query = url.partition(b"?")
            verified = auth.verifier.verify(b"POST", path, query, headers, body)
            caller = auth.callers[verified.credential.principal]
        return RequestContext(caller, self.service.region, request_id, peer)

    def call(
        self,
        url: bytes,
        headers: Mapping[bytes, bytes],
        body: bytes,
        request: _Request,
        peer: str = "",
    ) -> Any:
        """Authenticate the request and start its operation: a result dict, or an
        awaitable of one (or of the encoded body, for the batch extension). Names the
        operation and the key the request gave on ``request``, for its log line.

        Raises:
            KeyplaneError: whatever the request did wrong, before any work started.
        """
        # Nothing about a request is looked at before its signature checks out, not
        # even which operation it names.
        context = self.authenticate(url, headers, body, peer, request.request_id)
        request.principal = context.principal
        target = headers.get(b"x-amz-target")
        if target and target.startswith(batch.TARGET_PREFIX):
            name = target[len(batch.TARGET_PREFIX) :].decode("ascii", "replace")
            request.operation = f"Keyplane.{name}"
            batch_handler = EXTENSIONS.get(name)
            if batch_handler is None:
                raise UnknownOperationError("")
            return batch_handler(self.service, context, body)
        if not target or not target.startswith(TARGET_PREFIX):
            raise UnknownOperationError("")
        operation = target[len(TARGET_PREFIX) :].decode("ascii", "replace")
        handler = codec.OPERATIONS.get(operation)
        if handler is None:
            if operation in shapes.operation_names():
                raise UnknownOperationError(
                    f"{operation} is not supported by keyplane yet."
                )
            raise UnknownOperationError("")
        request.operation = operation
        params = shapes.parse_request(operation, body)
        key_id = params.get("KeyId")
        request.key_id = key_id if isinstance(key_id, str) else None
        tokens = params.get("GrantTokens")
        if tokens:
            grants.check_grant_tokens(self.service, tokens)
        return handler(self.service, context, params)

    def metrics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint: requests in flight and batch sizes."""
        batcher = self.service.batcher
        return {
            "in_flight": self.in_flight,
            "batches": batcher.batches,
            "batched_items": batcher.items,
            "largest_batch": batcher.largest,
            "keys": len(self.service.keys),
            # The endpoint is unauthenticated: custom key stores only in aggregate
            # (ids, clusters and states are each account's own; a store's detail is
            # in the signed DescribeCloudHsmClusters).
            "custom_key_stores": self._key_store_totals(),
        }

    def _key_store_totals(self) -> dict[str, int]:
        workers = [
            store.worker
            for store in self.service.key_stores.stores.values()
            if store.worker is not None
        ]
        return {
            "connected": len(workers),
            "batches": sum(w.batcher.batches for w in workers),
            "batched_items": sum(w.batcher.items for w in workers),
        }


class _Request:
    """One request on its way through: where its answer goes, and what its access log
    line says (operation, key, status, latency; never a plaintext or key material)."""

    __slots__ = ("key_id", "operation", "principal", "request_id", "slot", "started")

    def __init__(self, slot: _Slot, request_id: str, started: float) -> None:
        self.slot = slot
        self.request_id = request_id
        self.started = started
        self.operation = "-"
        self.key_id: str | None = None
        self.principal: str | None = None

    def log(self, status: int, access_log: AccessLog | None) -> None:
        if access_log is not None:
            access_log.add(
                self.operation,
                self.key_id,
                status,
                self.started,
                self.request_id,
                self.principal,
            )


class _Slot:
    """One request's place in its connection's response order. The response is
    framed only when it is written, so the last one before a close can say so."""

    __slots__ = ("body", "keep_alive", "request_id", "status")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.status = 0  # 0 until the response is ready
        self.body = b""
        self.request_id = ""


class HttpConnection(asyncio.Protocol):
    """One client connection: parse, dispatch, answer in order."""

    def __init__(
        self, api: Api, limits: Limits, connections: set[HttpConnection]
    ) -> None:
        self._api = api
        self._limits = limits
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._slots: deque[_Slot] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._eof = False
        self._last_queued = False  # a request that closes the connection is queued
        self._peer = ""
        # When the request being read began (None between requests), and when the
        # connection last had nothing to do: the server's reaper reads both.
        self._started: float | None = None
        self._headers_done = False
        self._idle_since = time.monotonic()
        self._over_capacity = False
        self._reset()

    # --- connection lifecycle ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        # Past the connection limit a client is still answered (ThrottlingException on
        # its first request, then close) rather than reset, so its SDK backs off.
        self._over_capacity = len(self._connections) >= self._limits.max_connections
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def idle(self) -> bool:
        return not self._slots

    def close_when_idle(self) -> None:
        """Graceful shutdown: answer what is in flight, then close."""
        self._closing = True
        if self._transport is not None and not self._slots:
            self._transport.close()

    def eof_received(self) -> bool:
        """The client is done sending: keep the connection open for the answers still
        owed (the operations are already running), and close once they are sent."""
        self._eof = True
        return bool(self._slots)

    # --- parsing ----------------------------------------------------------------------

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        if self._last_queued:
            return  # a request that closes the connection was the last one read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "upgrades are not supported")
        except httptools.HttpParserError:
            self._fail_connection(400, "malformed HTTP request")

    def on_message_begin(self) -> None:
        self._reset()
        self._started = time.monotonic()
        self._headers_done = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._limits.max_header_bytes:
            # Nothing sensible can follow a runaway header block: answer and hang up.
            raise httptools.HttpParserError("headers too large")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.max_body_bytes:
            self._too_large = True
            self._body.clear()
        elif not self._too_large:
            self._body.append(body)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        # An interim 100 Continue may only go out when no earlier answer is owed:
        # it must not overtake them. A client that gets none sends its body anyway.
        expect = self._headers.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and not self._slots
            and self._transport is not None
            and not self._last_queued
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_message_complete(self) -> None:
        if self._last_queued:
            # Requests pipelined behind one that closes the connection are never
            # run: their answers could not be delivered.
            return
        self._started = None
        keep_alive = (
            self._parser.should_keep_alive()
            and not self._closing
            and not self._over_capacity
        )
        if not keep_alive:
            self._last_queued = True
        slot = _Slot(keep_alive)
        self._slots.append(slot)
        self._dispatch(slot, self._parser.get_method(), self._url)
        self._update_reading()

    # --- dispatch ---------------------------------------------------------------------

    def _dispatch(self, slot: _Slot, method: bytes, url: bytes) -> None:
        request = _Request(slot, self._api.ids.next(), time.perf_counter())
        path = url.split(b"?", 1)[0]
        if method == b"GET" and path in (b"/health", b"/ping"):
            self._finish(slot, 200, b'{"status":"ok"}', request.request_id)
            return
        if method == b"GET" and path == b"/metrics":
            self._finish(
                slot, 200, orjson.dumps(self._api.metrics()), request.request_id
            )
            return
        if path != b"/" or method != b"POST":
            self._finish(
                slot,
                404 if path != b"/" else 405,
                orjson.dumps({"__type": "UnknownOperationException", "message": ""}),
                request.request_id,
            )
            return
        if self._over_capacity:
            self._answer_error(
                request,
                ThrottlingError(
                    "Rate exceeded: the server has as many connections as it takes"
                ),
            )
            return
        if self._api.in_flight >= self._limits.max_in_flight:
            self._answer_error(request, ThrottlingError("Rate exceeded"))
            return
        if self._too_large:
            limit = self._limits.max_body_bytes
            self._answer_error(
                request, RequestTooLargeError(f"Request body exceeds {limit} bytes")
            )
            return
        body = b"".join(self._body)
        try:
            result = self._api.call(url, self._headers, body, request, self._peer)
        except Exception as exc:  # every failure becomes an AWS error, never a crash
            self._answer_error(request, exc)
            return
        if isinstance(result, dict):
            self._answer(request, result)
            return
        self._api.in_flight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda done: self._completed(done, request))

    def _completed(self, done: asyncio.Future[Any], request: _Request) -> None:
        self._api.in_flight -= 1
        if done.cancelled():
            self._answer_error(request, asyncio.CancelledError())
            return
        exc = done.exception()
        if exc is not None:
            self._answer_error(request, exc)
        else:
            self._answer(request, done.result())

    def _answer(self, request: _Request, result: dict[str, Any] | bytes) -> None:
        try:
            # The batch extension encodes its own, much larger, responses.
            if isinstance(result, bytes):
                body = result
            else:
                body = shapes.encode_response(request.operation, result)
                request.key_id = _key_id_of(result) or request.key_id
        except Exception as exc:
            self._answer_error(request, exc)
            return
        self._finish(request.slot, 200, body, request.request_id)
        request.log(200, self._api.access_log)

    def _answer_error(self, request: _Request, exc: BaseException) -> None:
        status, body = error_body(exc)
        if status >= 500:
            _log.error(
                "request %s (%s) failed: %r",
                request.request_id,
                request.operation,
                exc,
                exc_info=not isinstance(exc, KeyplaneError),
            )
        self._finish(request.slot, status, body, request.request_id)
        request.log(status, self._api.access_log)

    # --- responses --------------------------------------------------------------------

    def _finish(self, slot: _Slot, status: int, body: bytes, request_id: str) -> None:
        slot.status, slot.body, slot.request_id = status, body, request_id
        # Send every response that is ready, in order, up to the first still pending.
        while self._slots and self._slots[0].status:
            head = self._slots.popleft()
            transport = self._transport
            if transport is None:
                continue
            last = not self._slots and (self._closing or self._eof)
            keep_alive = head.keep_alive and not last
            transport.write(
                _response(head.status, head.body, head.request_id, keep_alive)
            )
            if not keep_alive:
                transport.close()
                self._transport = None
        if not self._slots:
            self._idle_since = time.monotonic()
        self._update_reading()

    def reap(self, now: float) -> None:
        """Drop a request that is taking too long to arrive, or close a connection
        that has been idle too long (the server calls this about once a second)."""
        limits = self._limits
        started = self._started
        if started is not None:
            allowed = (
                limits.request_seconds if self._headers_done else limits.header_seconds
            )
            if now - started > allowed:
                self._fail_connection(
                    408,
                    "the request did not arrive in time",
                    kind="RequestTimeoutException",
                )
            return
        idle_allowed = (
            limits.header_seconds if self._over_capacity else limits.idle_seconds
        )
        if (
            not self._slots
            and self._transport is not None
            and now - self._idle_since > idle_allowed
        ):
            self._transport.close()
            self._transport = None

    def _fail_connection(
        self, status: int, message: str, kind: str = "SerializationException"
    ) -> None:
        if self._transport is None or self._last_queued:
            return
        self._last_queued = True
        self._started = None
        body = orjson.dumps({"__type": kind, "message": message})
        slot = _Slot(keep_alive=False)
        self._slots.append(slot)
        self._finish(slot, status, body, self._api.ids.next())

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = self._writing_paused or (
            len(self._slots) >= self._limits.max_in_flight_per_connection
        )
        if pause and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif not pause and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False


def _key_id_of(result: dict[str, Any]) -> str | None:
    key_id = result.get("KeyId")
    if isinstance(key_id, str):
        return key_id
    metadata = result.get("KeyMetadata")
    return metadata.get("Arn") if isinstance(metadata, dict) else None


class Server:
    """Listens, serves, and shuts down gracefully."""

    def __init__(self, api: Api, limits: Limits | None = None) -> None:
        self.api = api
        self.limits = limits or Limits()
        self._connections: set[HttpConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._reaper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the port (useful when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self.api, self.limits, self._connections),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        self._reap()
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _reap(self) -> None:
        """Once a second (or as often as the shortest time limit needs), let each
        connection drop what is too slow: one timer for the server, not one per
        request."""
        now = time.monotonic()
        for connection in list(self._connections):
            connection.reap(now)
        limits = self.limits
        every = min(1.0, limits.header_seconds / 4, limits.idle_seconds / 4)
        self._reaper = asyncio.get_running_loop().call_later(every, self._reap)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close_when_idle()
        deadline = time.monotonic() + timeout
        while (self._connections or self.api.in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()
        if self.api.access_log is not None:
            self.api.access_log.flush()
