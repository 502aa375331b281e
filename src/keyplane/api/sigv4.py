"""AWS Signature Version 4 verification of incoming requests, signed in the header.

This module owns everything needed to decide whether a request was signed by a known
access key: reading the ``Authorization`` header, the request's date and its allowed
clock skew, the credential scope, the canonical request, the string to sign, and a small
bounded cache of derived signing keys. It answers with who signed (``Verified``) or
raises one of keyplane's ``AuthenticationError`` subclasses with the message AWS gives.

It must not do I/O, log, read a clock of its own choosing (the clock is passed in), or
decide what the signer may do: authorization belongs to ``kms``. It never puts a secret
access key, a derived key or a whole signature in a message or a repr.

What it does not support, on purpose:

* Query-string signing (presigned URLs, ``X-Amz-Algorithm=...`` in the query). KMS
  clients sign in the header; a request signed only in the query is treated as carrying
  no authentication at all (``MissingAuthenticationError``).
* Session tokens. The credentials here are long-term keys with no token, so a request
  that carries ``X-Amz-Security-Token`` is refused as AWS refuses a token it does not
  know (``UnrecognizedClientError``), whether or not the token was signed.
* Repeated headers. The server keeps only the last value of a repeated header, so they
  are not joined with "," as the SigV4 canonical form would; a client that repeats a
  signed header fails with a signature mismatch.
* Chunked (streaming) payload signing: ``x-amz-content-sha256``, when sent, must be the
  hex SHA-256 of the body.

The order of the checks, and so which error a request with several faults gets, follows
the order AWS's JSON services were observed to use: parameters, date, ``host`` signed,
algorithm, credential shape, credential scope, access key, then the signature. One check
is keyplane's own: a request that names its operation in ``X-Amz-Target`` must sign that
header (every AWS SDK does), so that a captured request cannot be replayed as another
operation.
"""

from __future__ import annotations

import hmac
import operator
import re
import time
from binascii import hexlify
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from hashlib import sha256
from typing import Any, Final
from urllib.parse import quote_from_bytes, unquote_to_bytes

from keyplane.errors import (
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationError,
    UnrecognizedClientError,
)

__all__ = ["ALGORITHM", "Credential", "Verified", "Verifier"]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
_ALGORITHM_BYTES: Final = ALGORITHM.encode()
_TERMINATOR: Final = "aws4_request"

# AWS's message texts. Clients and tests match on them, so they are kept verbatim,
# including the trailing space AWS leaves after each credential-scope complaint.
# S105: these name a "token" but are messages, not credentials.
MSG_MISSING_TOKEN: Final = "Missing Authentication Token"  # noqa: S105
MSG_INVALID_TOKEN: Final = "The security token included in the request is invalid."  # noqa: S105
MSG_SIGNATURE_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
MSG_HOST_NOT_SIGNED: Final = (
    "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
)
MSG_TARGET_NOT_SIGNED: Final = (
    "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
)
MSG_BOTH_SIGNATURES: Final = (
    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as "
    "HTTP header."
)
MSG_CONTENT_SHA256_MISMATCH: Final = (
    "The provided 'x-amz-content-sha256' header does not match what was computed."
)
_MSG_REQUIRES: Final = "Authorization header requires '{}' parameter."
_MSG_REQUIRES_DATE: Final = (
    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
    "header."
)

_X_AMZ_DATE: Final = b"x-amz-date"
_DATE: Final = b"date"
_HOST: Final = b"host"
_TARGET: Final = b"x-amz-target"
_AUTHORITY: Final = b":authority"
_SECURITY_TOKEN: Final = b"x-amz-security-token"
_CONTENT_SHA256: Final = b"x-amz-content-sha256"
_QUERY_ALGORITHM: Final = b"X-Amz-Algorithm"

# Runs of 16 or more hex digits are cut short wherever a message quotes the client's
# Authorization header, so a signature (64 hex digits) is never logged whole. AWS-style
# access key ids (AKIA...), dates and regions have no such runs.
_HEX_RUN: Final = re.compile(r"[0-9A-Fa-f]{16,}")
# The form botocore and the other AWS SDKs write. Bytes patterns take \s as ASCII
# whitespace only, the same set bytes.split() splits on, so a match here parses to what
# _parse_authorization would return.
_COMMON_FORM: Final = re.compile(
    rb"AWS4-HMAC-SHA256 Credential=([^,\s]+), ?SignedHeaders=([^,\s]+), "
    rb"?Signature=([^,\s]+)"
)

_SIGNING_KEY_CACHE_SIZE: Final = 1024
# Distinct Authorization prefixes remembered: one per access key, day and set of signed
# headers in use.
_PLAN_CACHE_SIZE: Final = 1024
_SIGNATURE_SEPARATOR: Final = b", Signature="
# Whitespace the canonical form may change inside a header value. A header block with
# none of it (and one newline a header) is canonical as it stands: no value to trim.
# That is one pass in C; the regular expression it replaced cost microseconds.
_BLANKS: Final = b" \t\r\x0b\x0c"
_SIGNATURE_HEX_CHARS: Final = 64
_SHA256_BLOCK_BYTES: Final = 64
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))

_CacheKey = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Credential:
    """What the server knows about one access key.

    Attributes:
        access_key_id: The id clients put first in the credential scope.
        secret_access_key: The shared secret; left out of the repr.
        principal: Who signs with this key, e.g. an IAM user ARN (opaque here).
        account: The AWS account id the principal belongs to.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    principal: str
    account: str


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature checked out, and whose key signed it.

    Attributes:
        credential: The known credential that signed the request.
        region: The region of the credential scope.
        service: The service of the credential scope (the verifier's service).
    """

    credential: Credential
    region: str
    service: str


class Verifier:
    """Checks SigV4 ``Authorization`` headers against a set of known credentials.

    ``credentials`` is read on every request, not copied, so a caller may add, remove
    or rotate keys in it. A rotated secret is never answered from the signing-key cache,
    whose keys include the secret.

    One verifier serves one event loop thread: its cache bookkeeping is cheap rather
    than locked, so it is not meant to be shared between threads.
    """

    __slots__ = (
        "_cache",
        "_clock",
        "_credentials",
        "_last_date",
        "_plans",
        "_region",
        "_service",
        "_skew",
        "_skew_text",
    )

    def __init__(
        self,
        credentials: Mapping[str, Credential],
        *,
        service: str = "kms",
        region: str | None = None,
        max_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a verifier.

        Args:
            credentials: Known credentials by access key id.
            service: The only service a credential scope may name.
            region: The only region a credential scope may name, or None for any.
            max_skew_seconds: How far the request's date may be from ``clock()``, in
                either direction; AWS allows 5 minutes.
            clock: Seconds since the epoch, now.

        Raises:
            ValueError: ``max_skew_seconds`` is negative or not finite.
        """
        if not 0 <= max_skew_seconds < float("inf"):
            raise ValueError("max_skew_seconds must be a finite number >= 0")
        self._credentials = credentials
        self._service = service
        self._region = region
        self._skew = float(max_skew_seconds)
        self._skew_text = _duration_text(self._skew)
        self._clock = clock
        self._cache: dict[_CacheKey, _Signer] = {}
        # Requests signed in the same second share their X-Amz-Date; remembering the
        # last one parsed saves the parse on most requests under load.
        self._last_date: tuple[bytes | None, str, float] = (None, "", 0.0)
        # What an Authorization header fixes before its signature (the credential
        # scope and the signed header names) was checked the first time it verified;
        # later requests with the same prefix only check what changes per request.
        self._plans: dict[bytes, _Plan] = {}

    def verify(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Mapping[bytes, bytes],
        body: bytes,
    ) -> Verified:
        """Check a request's SigV4 signature and say whose key signed it.

        Args:
            method: The HTTP method as received, e.g. ``b"POST"``.
            path: The request target's path as received (still percent-encoded).
            query: The raw query string, without the ``?``; empty if none.
            headers: Lower-cased header names to raw values (the last of repeats).
            body: The whole request body.

        Returns:
            The credential that signed the request, with the scope's region and service.

        Raises:
            MissingAuthenticationError: No ``Authorization`` header (a query-string
                signature alone counts as none).
            IncompleteSignatureError: The header misses a parameter or repeats one, a
                parameter is not ``key=value``, the date is not ISO 8601 basic format,
                the algorithm is not AWS4-HMAC-SHA256, or the credential does not have
                five parts.
            InvalidSignatureError: The date is outside the allowed skew, ``host`` is not
                signed, the credential scope names another date, region, service or
                terminator, ``x-amz-content-sha256`` does not match the body, a signed
                header is absent, or the signature does not match.
            UnrecognizedClientError: The access key is unknown, or the request carries
                a session token.
        """
        auth = headers.get(b"authorization")
        if not auth:
            raise MissingAuthenticationError(MSG_MISSING_TOKEN)
        if query and _QUERY_ALGORITHM in query and _has_param(query, _QUERY_ALGORITHM):
            # AWS General Reference, "Signature Version 4 signing process": a request is
            # signed in the header or in the query, never both.
            raise InvalidSignatureError(MSG_BOTH_SIGNATURES)

        prefix, separator, signature = auth.rpartition(_SIGNATURE_SEPARATOR)
        plan = self._plans.get(prefix) if separator else None
        if (
            plan is not None
            and path == b"/"
            and not query
            and len(signature) == _SIGNATURE_HEX_CHARS
            and self._credentials.get(plan.key_id) is plan.known
        ):
            verified = self._verify_planned(plan, method, headers, body, signature)
            if verified is not None:
                return verified

        # Nearly every client writes the header exactly as botocore does; one regex
        # reads that form faster than the general parser, which gives the same result.
        common = _COMMON_FORM.fullmatch(auth)
        if common is not None:
            algorithm = _ALGORITHM_BYTES
            credential, signed, signature = common[1], common[2], common[3]
        else:
            algorithm, credential, signed, signature = _parse_authorization(auth)

        raw_date = headers.get(_X_AMZ_DATE)
        if raw_date is None:
            raw_date = headers.get(_DATE)
        if not credential or not signature or signed is None or raw_date is None:
            raise IncompleteSignatureError(
                _missing_message(credential, signed, signature, raw_date, auth)
            )

        stamp, when = self._request_time(raw_date, from_amz=_X_AMZ_DATE in headers)
        self._check_skew(stamp, when)

        # Header names are compared in lower case: AWS does not mind their case here.
        names = signed.lower().split(b";")
        if _HOST not in names and _AUTHORITY not in names:
            raise InvalidSignatureError(MSG_HOST_NOT_SIGNED)
        if _TARGET in headers and _TARGET not in names:
            # The operation must be signed, or a captured request could be replayed
            # as another operation (the body alone does not say which).
            raise InvalidSignatureError(MSG_TARGET_NOT_SIGNED)
        if algorithm != _ALGORITHM_BYTES:
            raise IncompleteSignatureError(
                f"Unsupported AWS 'algorithm': '{_shown(algorithm)}' "
                f"(only {ALGORITHM} for now). "
            )

        # Trailing slashes after the terminator are ignored, as AWS ignores them.
        credential = credential.rstrip(b"/")
        scope_parts = credential.decode("latin-1").split("/")
        if len(scope_parts) != 5:
            raise IncompleteSignatureError(
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                f"keyid/date/region/service/term, got '{_shown(credential)}'"
            )
        key_id, date, region, service, terminator = scope_parts
        self._check_scope(stamp, date, region, service, terminator)

        known = self._credentials.get(key_id)
        if known is None:
            raise UnrecognizedClientError(MSG_INVALID_TOKEN)

        payload_hash = sha256(body).hexdigest().encode()
        declared = headers.get(_CONTENT_SHA256)
        if declared is not None and declared.strip() != payload_hash:
            raise InvalidSignatureError(MSG_CONTENT_SHA256_MISMATCH)

        # AWS General Reference, "Create a canonical request": headers sorted by
        # lower-case name, each value trimmed with inner runs of spaces collapsed.
        # A signed header the request lacks cannot match what the client signed.
        names.sort()
        try:
            header_block = b"".join(
                [
                    name + b":" + b" ".join(headers[name].split()) + b"\n"
                    for name in names
                ]
            )
        except KeyError:
            raise InvalidSignatureError(MSG_SIGNATURE_MISMATCH) from None
        canonical_request = b"\n".join(
            (
                method,
                b"/" if path == b"/" else _canonical_uri(path),
                _canonical_query(query) if query else b"",
                header_block,
                b";".join(names),
                payload_hash,
            )
        )
        # "Create a string to sign": the algorithm, the request's timestamp, the scope
        # (the credential without its key id) and the canonical request's hash.
        string_to_sign = b"\n".join(
            (
                _ALGORITHM_BYTES,
                stamp.encode(),
                credential[len(key_id) + 1 :],
                sha256(canonical_request).hexdigest().encode(),
            )
        )
        signer = self._signer(known, date, region, service)
        if not hmac.compare_digest(signer.hexdigest(string_to_sign), signature):
            raise InvalidSignatureError(MSG_SIGNATURE_MISMATCH)

        if _SECURITY_TOKEN in headers:
            # None of keyplane's credentials has a session token, so any token is one
            # this service does not know; AWS answers an unknown token like this.
            raise UnrecognizedClientError(MSG_INVALID_TOKEN)
        verified = signer.verified
        if verified is None or verified.credential is not known:
            verified = signer.verified = Verified(known, region, service)
        if separator and path == b"/" and not query and common is not None:
            self._remember(
                prefix, key_id, known, date, names, credential, signer, verified
            )
        return verified

    def _verify_planned(
        self,
        plan: _Plan,
        method: bytes,
        headers: Mapping[bytes, bytes],
        body: bytes,
        signature: bytes,
    ) -> Verified | None:
        """``verify`` for a header whose prefix verified before: the same checks in the
        same order, minus those the prefix settles. None when the request's date is
        not of the plan's day, for the full path to judge."""
        raw_date = headers.get(_X_AMZ_DATE)
        if raw_date is None or (not plan.signs_target and _TARGET in headers):
            return None
        dated = plan.dated
        if dated is None or dated.raw_date != raw_date:
            stamp, when = self._request_time(raw_date, from_amz=True)
            if stamp[:8] != plan.date:
                return None
            # Requests signed in the same second share the start of their string to
            # sign: the HMAC's inner hash is fed it once, then copied per request.
            inner = plan.signer.inner_copy()
            inner.update(plan.algorithm_line + raw_date + plan.scope_line)
            dated = plan.dated = _Dated(raw_date, stamp, when, inner)
        now = self._clock()
        if not dated.when - self._skew <= now <= dated.when + self._skew:
            self._check_skew(dated.stamp, dated.when)
        payload_hash = hexlify(sha256(body).digest())
        declared = headers.get(_CONTENT_SHA256)
        if declared is not None and declared.strip() != payload_hash:
            raise InvalidSignatureError(MSG_CONTENT_SHA256_MISMATCH)
        try:
            values = plan.values_of(headers)
        except KeyError:
            raise InvalidSignatureError(MSG_SIGNATURE_MISMATCH) from None
        if len(plan.names) == 1:
            values = (values,)  # itemgetter of one name returns the value itself
        header_block = plan.block_template % values
        if len(header_block.translate(None, _BLANKS)) != len(
            header_block
        ) or header_block.count(b"\n") != len(values):
            # A value with whitespace in it (say, a User-Agent): trim each value.
            header_block = plan.block_template % tuple(
                b" ".join(value.split()) for value in values
            )
        canonical_request = (
            method + b"\n/\n\n" + header_block + plan.signed_line + payload_hash
        )
        inner = dated.inner.copy()
        inner.update(hexlify(sha256(canonical_request).digest()))
        if not hmac.compare_digest(plan.signer.finish(inner), signature):
            raise InvalidSignatureError(MSG_SIGNATURE_MISMATCH)
        if _SECURITY_TOKEN in headers:
            raise UnrecognizedClientError(MSG_INVALID_TOKEN)
        return plan.verified

    def _remember(
        self,
        prefix: bytes,
        key_id: str,
        known: Credential,
        date: str,
        names: list[bytes],
        credential: bytes,
        signer: _Signer,
        verified: Verified,
    ) -> None:
        plans = self._plans
        if prefix in plans:
            return
        while len(plans) >= _PLAN_CACHE_SIZE:
            plans.pop(next(iter(plans)), None)
        plans[prefix] = _Plan(
            key_id=key_id,
            known=known,
            date=date,
            names=tuple(names),
            signs_target=_TARGET in names,
            values_of=operator.itemgetter(*names),
            block_template=b"".join(name + b":%b\n" for name in names),
            signed_line=b"\n" + b";".join(names) + b"\n",
            algorithm_line=_ALGORITHM_BYTES + b"\n",
            scope_line=b"\n" + credential[len(key_id) + 1 :] + b"\n",
            signer=signer,
            verified=verified,
        )

    def _request_time(self, raw: bytes, *, from_amz: bool) -> tuple[str, float]:
        """The request's timestamp in ISO 8601 basic format, and as epoch seconds."""
        last_raw, last_stamp, last_when = self._last_date
        if raw == last_raw:
            return last_stamp, last_when
        when = _parse_basic(raw)
        if when is not None:
            stamp = raw.decode("ascii")
            self._last_date = (raw, stamp, when)
        elif not from_amz and (parsed := _parse_http_date(raw)) is not None:
            # Without X-Amz-Date, SigV4 takes the Date header, which HTTP clients
            # write as an HTTP date (RFC 9110 section 5.6.7); the string to sign still
            # carries the moment in basic format. botocore signs exactly so when a
            # request already has a Date header.
            when = parsed
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(parsed))
        else:
            raise IncompleteSignatureError(
                f"Date must be in ISO-8601 'basic format'. Got '{_shown(raw)}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            )
        return stamp, when

    def _check_skew(self, stamp: str, when: float) -> None:
        """Refuse a request dated more than the allowed skew from now."""
        now = self._clock()
        if when < now - self._skew:
            raise InvalidSignatureError(
                f"Signature expired: {stamp} is now earlier than "
                f"{_basic(now - self._skew)} ({_basic(now)} - {self._skew_text}.)"
            )
        if when > now + self._skew:
            raise InvalidSignatureError(
                f"Signature not yet current: {stamp} is still later than "
                f"{_basic(now + self._skew)} ({_basic(now)} + {self._skew_text}.)"
            )

    def _check_scope(
        self, stamp: str, date: str, region: str, service: str, terminator: str
    ) -> None:
        """Refuse a credential scope for another date, region, service or terminator.

        AWS reports every mismatch at once, each sentence followed by a space.
        """
        problems = []
        if not region or (self._region is not None and region != self._region):
            problems.append(
                f"Credential should be scoped to a valid region, not '{region}'. "
            )
        if service != self._service:
            problems.append(
                f"Credential should be scoped to correct service: '{self._service}'. "
            )
        if terminator != _TERMINATOR:
            problems.append(
                "Credential should be scoped with a valid terminator: "
                f"'{_TERMINATOR}', not '{terminator}'. "
            )
        if date != stamp[:8]:
            problems.append(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                f"version of date from HTTP: '{date}' != '{stamp[:8]}', "
                f"from '{stamp}'. "
            )
        if problems:
            raise InvalidSignatureError("".join(problems))

    def _signer(
        self, known: Credential, date: str, region: str, service: str
    ) -> _Signer:
        """The signer for one credential, day, region and service, derived once.

        AWS General Reference, "Calculate the signature": kDate = HMAC("AWS4" + secret,
        date), then kRegion, kService and kSigning chain from it. The cache key holds
        the secret, so a key id whose secret changed never gets the old derived key.
        """
        cache = self._cache
        cache_key = (
            known.access_key_id,
            known.secret_access_key,
            date,
            region,
            service,
        )
        # A plain dict keeps insertion order: popping a hit and putting it back makes it
        # the newest, so the first key is always the least recently used.
        signer = cache.pop(cache_key, None)
        if signer is None:
            key = hmac.digest(
                b"AWS4" + known.secret_access_key.encode(), date.encode(), "sha256"
            )
            for part in (region, service, _TERMINATOR):
                key = hmac.digest(key, part.encode(), "sha256")
            signer = _Signer(key)
            while len(cache) >= _SIGNING_KEY_CACHE_SIZE:
                cache.pop(next(iter(cache)), None)
        cache[cache_key] = signer
        return signer


@dataclass(frozen=True, slots=True)
class _Dated:
    """One request second of a plan: its date, and the HMAC inner hash already fed
    the string to sign up to the canonical request's hash."""

    raw_date: bytes
    stamp: str
    when: float
    inner: Any  # a hashlib sha256 object; copied, never updated, once made


@dataclass(slots=True)
class _Plan:
    """What an Authorization header settles before its signature, once it verified:
    whose key, which day, which headers are signed, and the derived signing key.

    The secret stays inside ``known`` and ``signer``, neither of which shows it.
    """

    key_id: str
    known: Credential
    date: str
    names: tuple[bytes, ...]  # sorted, lower-case
    signs_target: bool  # whether X-Amz-Target is among them
    values_of: Callable[[Mapping[bytes, bytes]], Any]  # the signed headers' values
    block_template: bytes  # the canonical header block with %b for each value
    signed_line: bytes  # "\n" + the signed header names joined with ";" + "\n"
    algorithm_line: bytes
    scope_line: bytes  # "\n" + the credential scope + "\n"
    signer: _Signer
    verified: Verified
    dated: _Dated | None = None


class _Signer:
    """HMAC-SHA256 under one derived signing key, kept as its two pad states.

    RFC 2104 section 2: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)). Hashing the
    two padded keys once and copying those states per request costs well under half of
    a one-shot ``hmac.digest``, which sets up a fresh OpenSSL context on every call.
    The last ``Verified`` answered for this key rides along, so a request does not
    build a new one.
    """

    __slots__ = ("_inner", "_outer", "verified")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(_SHA256_BLOCK_BYTES, b"\0")  # a 32-byte key needs no hash
        self._inner = sha256(block.translate(_IPAD))
        self._outer = sha256(block.translate(_OPAD))
        self.verified: Verified | None = None

    def __repr__(self) -> str:
        return "_Signer(<derived key hidden>)"

    def hexdigest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the signing key, as lower-case hex."""
        inner = self._inner.copy()
        inner.update(message)
        return self.finish(inner)

    def inner_copy(self) -> Any:
        """A copy of the inner hash, to feed a message in parts."""
        return self._inner.copy()

    def finish(self, inner: Any) -> bytes:
        """The HMAC, as lower-case hex, of what ``inner`` (from ``inner_copy``) was
        fed."""
        outer = self._outer.copy()
        outer.update(inner.digest())
        return hexlify(outer.digest())


def _parse_authorization(auth: bytes) -> tuple[bytes, bytes, bytes | None, bytes]:
    """Split an Authorization header into algorithm, Credential, SignedHeaders and
    Signature; a parameter that is absent is empty, or None for SignedHeaders.

    Raises:
        IncompleteSignatureError: A parameter is not ``key=value``, or one of the three
            is given twice.
    """
    # The parameters are separated by commas, spaces or both: AWS splits on either, so
    # a space inside a value shows up as a separate token without "=".
    tokens = auth.replace(b",", b" ").split()
    algorithm = tokens[0] if tokens else b""
    credential = signature = b""
    signed: bytes | None = None
    seen: set[bytes] = set()
    for token in tokens[1:]:
        name, eq, value = token.partition(b"=")
        if not eq:
            raise IncompleteSignatureError(
                f"'{_shown(token)}' not a valid key=value pair (missing equal-sign) "
                f"in Authorization header: '{_shown(auth)}'."
            )
        if name in seen:
            # AWS takes the last of repeated parameters; keyplane refuses them, so that
            # no two readers of one header can disagree on what was signed.
            raise IncompleteSignatureError(
                f"Authorization header has more than one '{_shown(name)}' parameter. "
                f"Authorization={_shown(auth)}"
            )
        if name == b"Credential":
            credential = value
        elif name == b"SignedHeaders":
            signed = value
        elif name == b"Signature":
            signature = value
        else:
            continue  # AWS ignores parameters it does not know
        seen.add(name)
    return algorithm, credential, signed, signature


def _missing_message(
    credential: bytes,
    signed: bytes | None,
    signature: bytes,
    raw_date: bytes | None,
    auth: bytes,
) -> str:
    """AWS's message for an Authorization header that lacks parameters or a date.

    An empty Credential or Signature counts as missing; an empty SignedHeaders is
    present, and fails the check that ``host`` is signed instead.
    """
    missing = []
    if not credential:
        missing.append(_MSG_REQUIRES.format("Credential"))
    if not signature:
        missing.append(_MSG_REQUIRES.format("Signature"))
    if signed is None:
        missing.append(_MSG_REQUIRES.format("SignedHeaders"))
    if raw_date is None:
        missing.append(_MSG_REQUIRES_DATE)
    return " ".join(missing) + f" Authorization={_shown(auth)}"


def _has_param(query: bytes, name: bytes) -> bool:
    """Whether the raw query string has a parameter called ``name``."""
    return any(item.partition(b"=")[0] == name for item in query.split(b"&"))


def _parse_basic(raw: bytes) -> float | None:
    """Epoch seconds of an ISO 8601 basic-format UTC time (``YYYYMMDDTHHMMSSZ``)."""
    if len(raw) != 16 or raw[8:9] != b"T" or raw[15:16] != b"Z":
        return None
    if not (raw[:8].isdigit() and raw[9:15].isdigit()):  # bytes: ASCII digits only
        return None
    try:
        moment = datetime(
            int(raw[0:4]),
            int(raw[4:6]),
            int(raw[6:8]),
            int(raw[9:11]),
            int(raw[11:13]),
            int(raw[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return moment.timestamp()


def _parse_http_date(raw: bytes) -> float | None:
    """Epoch seconds of an HTTP date (RFC 9110 section 5.6.7), or None."""
    try:
        moment = parsedate_to_datetime(raw.decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC with no claim of a local zone
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def _basic(epoch: float) -> str:
    """``epoch`` in ISO 8601 basic format, as AWS prints times in its messages."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _duration_text(seconds: float) -> str:
    """The skew as AWS words it ("5 min"); whole minutes, else seconds."""
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} sec"


def _shown(raw: bytes) -> str:
    """Client bytes fit to quote in a message, with long hex runs cut short."""
    return _HEX_RUN.sub(lambda m: m.group()[:8] + "...", raw.decode("latin-1"))


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4, and empty segments dropped as AWS does for non-S3."""
    output: list[bytes] = []
    for segment in path.split(b"/"):
        if segment == b"..":
            if output:
                output.pop()
        elif segment and segment != b".":
            output.append(segment)
    first = b"/" if path.startswith(b"/") else b""
    last = b"/" if path.endswith(b"/") and output else b""
    return first + b"/".join(output) + last


def _canonical_uri(path: bytes) -> bytes:
    """The canonical URI of a non-S3 request path as received.

    AWS General Reference, "Create a canonical request": the path is normalized per
    RFC 3986 and each segment URI-encoded twice. The client already encoded it once to
    send it, so the received path is encoded once more ("%" becomes "%25").
    """
    if path == b"/" or not path:
        return b"/"
    normalized = _remove_dot_segments(path) or b"/"
    return quote_from_bytes(normalized, safe="/~").encode("ascii")


def _canonical_query(query: bytes) -> bytes:
    """The canonical query string: every name and value URI-encoded, sorted.

    "Create a canonical request": names and values are decoded, then encoded with only
    the unreserved characters (A-Z a-z 0-9 - _ . ~) left bare, and sorted by name, then
    value. A "+" decodes to a space, as clients send spaces in form encoding.
    """
    if not query:
        return b""
    pairs = []
    for item in query.split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        pairs.append((_uri_encode(name), _uri_encode(value)))
    pairs.sort()
    return b"&".join(name + b"=" + value for name, value in pairs)


def _uri_encode(raw: bytes) -> bytes:
    """Decode a query component and encode it the SigV4 way (``%XX``, upper case)."""
    decoded = unquote_to_bytes(raw.replace(b"+", b" "))
    return quote_from_bytes(decoded, safe="").encode("ascii")
