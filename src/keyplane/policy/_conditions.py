"""Condition blocks of policy statements, compiled once into predicates.

Owns the IAM condition operators (String*, Numeric*, Date*, Bool, BinaryEquals,
IpAddress/NotIpAddress, Arn*, Null), their ``...IfExists`` forms, the ``ForAnyValue:``
and ``ForAllValues:`` set qualifiers, and how a condition key is looked up for one
request. It reads no clock: ``aws:CurrentTime`` arrives in the request context like any
other key.

Semantics follow the IAM User Guide, "IAM JSON policy elements: Condition operators" and
"Single-valued vs. multivalued context keys":

* keys in one operator block, and operator blocks, are ANDed; the values of one key
  are ORed;
* a negated operator (``StringNotEquals``, ``NotIpAddress``, ...) matches when the
  request's value matches none of the policy's values;
* an absent key makes a condition false, except that the negated operators are then
  true (the guide's "Important" note: "If the policy condition requires that the key is
  *not* matched, such as StringNotLike or ArnNotLike, and the right key is not present,
  the condition is true"), ``...IfExists`` is true, ``Null`` tests presence, and
  ``ForAllValues`` is true; ``ForAnyValue`` on an absent or empty key is false;
* condition key names are case-insensitive (they are compared lower-cased); values are
  case-sensitive except under the ``...IgnoreCase`` operators.

Policy values that cannot be read as the operator's type (a ``NumericEquals`` value of
``"ten"``, a malformed CIDR) are kept out of the compiled set: they can never match, as
in AWS, rather than making the whole document malformed.
"""

from __future__ import annotations

import base64
import ipaddress
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from keyplane.errors import MalformedPolicyDocumentError
from keyplane.policy._wildcard import compile_wildcards, translate

SYNTAX_ERROR: Final = "Syntax errors in policy."

Context = Mapping[str, object]
EncryptionContext = Mapping[str, str] | None
Predicate = Callable[[Context, EncryptionContext], bool]
# One request value tested against all of a condition's policy values (ORed).
_Test = Callable[[object], bool]
_Getter = Callable[[Context, EncryptionContext], object]

_FOR_ANY: Final = "ForAnyValue:"
_FOR_ALL: Final = "ForAllValues:"
_IF_EXISTS: Final = "IfExists"

# AWS KMS Developer Guide, "kms:EncryptionContext:context-key" > "Case sensitivity of
# the encryption context condition": the whole condition key, prefix *and* the context
# key, is not case sensitive. So the context key is compared lower-cased on both sides.
_EC_PREFIX: Final = "kms:encryptioncontext:"
_EC_KEYS: Final = "kms:encryptioncontextkeys"


def compile_conditions(block: object) -> tuple[Predicate, ...]:
    """Compile a statement's ``Condition`` element into ANDed predicates.

    Args:
        block: The parsed JSON value of the ``Condition`` element.

    Returns:
        One predicate per (operator, key) pair; all must hold for the statement.

    Raises:
        MalformedPolicyDocumentError: The block is not a mapping of mappings, names an
            unknown operator, or holds a value that is not a string, number, boolean or
            a list of those.
    """
    if not isinstance(block, dict):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    predicates: list[Predicate] = []
    for name, keys in block.items():
        qualifier, base, if_exists = _split_operator(name)
        if not isinstance(keys, dict):
            raise MalformedPolicyDocumentError(SYNTAX_ERROR)
        for key, raw in keys.items():
            values = _policy_values(raw)
            if base == "Null":
                predicates.append(_null(key.lower(), values))
            else:
                predicates.append(
                    _predicate(qualifier, base, if_exists, key.lower(), values)
                )
    return tuple(predicates)


def _split_operator(name: str) -> tuple[str | None, str, bool]:
    qualifier = None
    for prefix in (_FOR_ANY, _FOR_ALL):
        if name.startswith(prefix):
            qualifier, name = prefix, name[len(prefix) :]
            break
    if_exists = name.endswith(_IF_EXISTS)
    if if_exists:
        name = name[: -len(_IF_EXISTS)]
    known = name in _OPERATORS or name == "Null"
    # Null tests presence itself, so IAM has no NullIfExists and no set form of it.
    if not known or (name == "Null" and (if_exists or qualifier is not None)):
        raise MalformedPolicyDocumentError(SYNTAX_ERROR)
    return qualifier, name, if_exists


def _policy_values(raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    values: list[str] = []
    for item in items:
        text = _text(item)
        if text is None:
            raise MalformedPolicyDocumentError(SYNTAX_ERROR)
        values.append(text)
    return tuple(values)


def _text(value: object) -> str | None:
    """A scalar as IAM compares it: booleans as ``true``/``false``, numbers as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _request_values(raw: object) -> tuple[object, ...] | None:
    """The request's values for a key, or ``None`` when the key is absent or empty."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list | tuple | set | frozenset):
        return tuple(raw) if raw else None
    return (raw,)


def _getter(key: str) -> _Getter:
    if key == _EC_KEYS:

        def context_keys(_: Context, ec: EncryptionContext) -> object:
            return list(ec) if ec else None

        return context_keys
    if key.startswith(_EC_PREFIX):
        wanted = key[len(_EC_PREFIX) :]

        def context_value(_: Context, ec: EncryptionContext) -> object:
            if not ec:
                return None
            # Two request keys that differ only by case both answer: AWS advises
            # against such contexts, and treating them as a multi-valued key means a
            # Deny on either value still applies.
            found = [v for k, v in ec.items() if k.lower() == wanted]
            if not found:
                return None
            return found[0] if len(found) == 1 else found

        return context_value

    def plain(ctx: Context, _: EncryptionContext) -> object:
        return ctx.get(key)

    return plain


def _predicate(
    qualifier: str | None, base: str, if_exists: bool, key: str, values: tuple[str, ...]
) -> Predicate:
    build, negated = _OPERATORS[base]
    test = build(values)
    get = _getter(key)

    if qualifier == _FOR_ALL:

        def for_all(ctx: Context, ec: EncryptionContext) -> bool:
            got = _request_values(get(ctx, ec))
            if got is None:
                return True
            if negated:
                return not any(test(v) for v in got)
            return all(test(v) for v in got)

        return for_all

    if qualifier == _FOR_ANY:

        def for_any(ctx: Context, ec: EncryptionContext) -> bool:
            got = _request_values(get(ctx, ec))
            if got is None:
                return if_exists
            if negated:
                return not all(test(v) for v in got)
            return any(test(v) for v in got)

        return for_any

    when_absent = if_exists or negated

    def single(ctx: Context, ec: EncryptionContext) -> bool:
        raw = get(ctx, ec)
        if raw is None:
            return when_absent
        if type(raw) is str:
            return test(raw) is not negated
        got = _request_values(raw)
        if got is None:
            return when_absent
        # Without a set qualifier a multi-valued key matches when any of its values
        # does, and a negated operator when none does.
        return any(test(v) for v in got) is not negated

    return single


def _null(key: str, values: tuple[str, ...]) -> Predicate:
    # "true" asks for the key to be absent, "false" for it to be present.
    wanted = frozenset(v.lower() == "true" for v in values if v.lower() in _BOOLS)
    get = _getter(key)

    def null(ctx: Context, ec: EncryptionContext) -> bool:
        return (_request_values(get(ctx, ec)) is None) in wanted

    return null


# --- operator families ----------------------------------------------------------------

_BOOLS: Final = frozenset({"true", "false"})


def _string_equals(values: tuple[str, ...]) -> _Test:
    wanted = frozenset(values)

    def test(value: object) -> bool:
        text = value if type(value) is str else _text(value)
        return text is not None and text in wanted

    return test


def _string_equals_ignore_case(values: tuple[str, ...]) -> _Test:
    wanted = frozenset(v.lower() for v in values)

    def test(value: object) -> bool:
        text = _text(value)
        return text is not None and text.lower() in wanted

    return test


def _string_like(values: tuple[str, ...]) -> _Test:
    pattern = compile_wildcards(values)

    def test(value: object) -> bool:
        text = _text(value)
        return (
            text is not None
            and pattern is not None
            and pattern.fullmatch(text) is not None
        )

    return test


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return None
    return None


def _epoch(value: object) -> float | None:
    """Seconds since the epoch for an ISO 8601 text or a number of epoch seconds."""
    number = _number(value)
    if number is not None or not isinstance(value, str):
        return number
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def _compare(
    read: Callable[[object], float | None], relation: Callable[[float, float], bool]
) -> Callable[[tuple[str, ...]], _Test]:
    def build(values: tuple[str, ...]) -> _Test:
        bounds = tuple(b for b in map(read, values) if b is not None)

        def test(value: object) -> bool:
            x = read(value)
            return x is not None and any(relation(x, b) for b in bounds)

        return test

    return build


def _bool(values: tuple[str, ...]) -> _Test:
    wanted = frozenset(v.lower() for v in values if v.lower() in _BOOLS)

    def test(value: object) -> bool:
        text = _text(value)
        return text is not None and text.lower() in wanted

    return test


def _binary(values: tuple[str, ...]) -> _Test:
    wanted = frozenset(values)

    def test(value: object) -> bool:
        if isinstance(value, bytes | bytearray):
            return base64.b64encode(value).decode("ascii") in wanted
        return isinstance(value, str) and value in wanted

    return test


def _ip(values: tuple[str, ...]) -> _Test:
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for v in values:
        try:
            networks.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            continue

    def test(value: object) -> bool:
        if not isinstance(value, str):
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(address in n for n in networks)

    return test


def _arn(values: tuple[str, ...]) -> _Test:
    # IAM checks each of an ARN's six colon-separated parts on its own, wildcards
    # included, so a * in the service or region part never runs into the next part.
    # The resource part is the rest of the ARN and may hold colons itself.
    sources: list[str] = []
    for v in values:
        parts = v.split(":", 5)
        if len(parts) != 6:
            continue
        head = [translate(p, star="[^:]*", one="[^:]") for p in parts[:5]]
        sources.append(":".join([*head, translate(parts[5])]))
    pattern = (
        re.compile("(?:" + "|".join(sources) + ")", re.DOTALL) if sources else None
    )

    def test(value: object) -> bool:
        return (
            isinstance(value, str)
            and pattern is not None
            and pattern.fullmatch(value) is not None
        )

    return test


_Builder = Callable[[tuple[str, ...]], _Test]

# Base operator -> (builder of the positive test, whether the operator negates it).
_OPERATORS: Final[Mapping[str, tuple[_Builder, bool]]] = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ignore_case, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ignore_case, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "NumericEquals": (_compare(_number, operator.eq), False),
    "NumericNotEquals": (_compare(_number, operator.eq), True),
    "NumericLessThan": (_compare(_number, operator.lt), False),
    "NumericLessThanEquals": (_compare(_number, operator.le), False),
    "NumericGreaterThan": (_compare(_number, operator.gt), False),
    "NumericGreaterThanEquals": (_compare(_number, operator.ge), False),
    "DateEquals": (_compare(_epoch, operator.eq), False),
    "DateNotEquals": (_compare(_epoch, operator.eq), True),
    "DateLessThan": (_compare(_epoch, operator.lt), False),
    "DateLessThanEquals": (_compare(_epoch, operator.le), False),
    "DateGreaterThan": (_compare(_epoch, operator.gt), False),
    "DateGreaterThanEquals": (_compare(_epoch, operator.ge), False),
    "Bool": (_bool, False),
    "BinaryEquals": (_binary, False),
    "IpAddress": (_ip, False),
    "NotIpAddress": (_ip, True),
    "ArnEquals": (_arn, False),
    "ArnLike": (_arn, False),
    "ArnNotEquals": (_arn, True),
    "ArnNotLike": (_arn, True),
}
