"""KMS request and response shapes, driven by the AWS KMS service model.

This module owns the wire form of every KMS operation. At import it reads the KMS
service model that botocore ships and compiles each operation's input shape into a
validating parser and each output shape into an encoder, made of plain closures, so
that no request ever walks the model. It knows AWS's member names and AWS's exact
validation and serialization message texts.

It must not know anything of keys, HSMs, policies or storage, and it imports nothing
from keyplane but ``keyplane.errors``. It never copies a blob, a sensitive string, a
list or a map into a message, because those may hold secrets.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

# botocore ships no type information (pyproject tells mypy so); the loader only hands
# back the model as plain JSON.
from botocore.loaders import Loader

from keyplane.errors import (
    MalformedRequestError,
    UnknownOperationError,
    ValidationError,
)

__all__ = ["encode_response", "operation_names", "parse_request"]

# One constraint violation: how the value is shown ("Value 'x'", "Value null", or just
# "Value" when it must not be shown), the member path, and the constraint text.
_Problem = tuple[str, str, str]
# A parser checks and converts one decoded JSON value found at a member path. Type
# errors raise at once; constraint violations are appended so all can be reported.
_Parser = Callable[[object, str, list[_Problem]], object]
_StructParser = Callable[[object, str, list[_Problem]], dict[str, object]]
# An encoder turns one result value into what orjson should write; None means that
# the value is written as it is.
_Encoder = Callable[[object], object]

_NOT_NULL: Final = "Member must not be null"
_UNEXPECTED: Final = "Unexpected field type"
_NOT_BASE64_TEXT: Final = "only base-64-encoded strings are convertible to bytes"
_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)
_NO_MAX: Final = 2**63
# Path suffixes of list elements, made once: ".1.member", ".2.member", ...
_SUFFIX_COUNT: Final = 1024
_ELEMENT_SUFFIXES: Final = tuple(f".{i}.member" for i in range(_SUFFIX_COUNT))


# --- messages -----------------------------------------------------------------------


def _min_length(n: int) -> str:
    return f"Member must have length greater than or equal to {n}"


def _max_length(n: int) -> str:
    return f"Member must have length less than or equal to {n}"


def _min_value(n: int) -> str:
    return f"Member must have value greater than or equal to {n}"


def _max_value(n: int) -> str:
    return f"Member must have value less than or equal to {n}"


def _mismatch(value: object, path: str, scalar_text: str) -> MalformedRequestError:
    """A SerializationException for a value of the wrong JSON type at ``path``.

    The texts are those AWS's JSON services answer with ("STRING_VALUE can not be
    converted to an Integer", "Start of list found where not expected"); the member
    path is added because AWS's texts do not say which member was wrong.
    ``scalar_text`` is used when the value is a JSON scalar, with ``{kind}`` replaced
    by AWS's name for its kind. The value itself is never shown.
    """
    if type(value) is list:
        text = "Start of list found where not expected"
    elif type(value) is dict:
        text = "Start of structure or map found where not expected"
    else:
        if value is True:
            kind = "TRUE_VALUE"
        elif value is False:
            kind = "FALSE_VALUE"
        elif value is None:
            kind = "NULL_VALUE"
        elif type(value) is str:
            kind = "STRING_VALUE"
        elif type(value) is int:
            kind = "NUMBER_VALUE"
        else:
            kind = "DECIMAL_VALUE"
        text = scalar_text.format(kind=kind)
    return MalformedRequestError(f"{text} at '{path}'" if path else text)


def _validation_error(problems: Sequence[_Problem]) -> ValidationError:
    """One ValidationException listing every violation, in AWS's wording."""
    count = len(problems)
    head = f"{count} validation error{'s' if count > 1 else ''} detected: "
    return ValidationError(
        head
        + "; ".join(
            f"{shown} at '{path}' failed to satisfy constraint: {text}"
            for shown, path, text in problems
        )
    )


def _json_error(exc: orjson.JSONDecodeError) -> MalformedRequestError:
    """A short SerializationException for a body that is not JSON; never echoes it."""
    # Only the position is kept from orjson's message. Should its wording change, the
    # general text below still holds.
    if "end of data" in exc.msg or "empty" in exc.msg:
        return MalformedRequestError("Unexpected end of input")
    return MalformedRequestError(f"Malformed JSON input at character {exc.pos}")


# --- compiling the model ------------------------------------------------------------


def _camel(name: str) -> str:
    """AWS names members in validation messages with a lower-case first letter."""
    return name[:1].lower() + name[1:]


def _length_texts(shape: Mapping[str, Any]) -> list[str]:
    """Every length or range constraint of ``shape`` as AWS words it, max first.

    AWS lists a map's value constraints in this order ("Map value must satisfy
    constraint: [Member must have length less than or equal to 50000, Member must
    have length greater than or equal to 1]").
    """
    if shape["type"] in ("integer", "long", "float", "double"):
        lo, hi = _min_value, _max_value
    else:
        lo, hi = _min_length, _max_length
    texts = []
    if "max" in shape:
        texts.append(hi(shape["max"]))
    if "min" in shape:
        texts.append(lo(shape["min"]))
    if "enum" in shape:
        texts.append(_enum_text(shape["enum"]))
    if "pattern" in shape:
        texts.append(_pattern_text(shape["pattern"]))
    return texts


def _enum_text(values: Sequence[str]) -> str:
    return f"Member must satisfy enum value set: [{', '.join(values)}]"


def _pattern_text(pattern: str) -> str:
    return f"Member must satisfy regular expression pattern: {pattern}"


# What Java's "." refuses: every line terminator, where Python's refuses only "\n".
_JAVA_DOT: Final = "[^\n\r\u0085\u2028\u2029]"


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a model pattern so that Python matches what Java's regex would.

    AWS validates with Java regular expressions, where \\w, \\d and \\s are
    ASCII-only unless asked otherwise (re.ASCII gives Python the same classes) and "."
    stops at any line terminator. Every pattern in the KMS model is otherwise valid
    Python syntax with the same meaning; the caller's full match mirrors Java's
    ``Matcher.matches()``.
    """
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "." and not in_class:
            out.append(_JAVA_DOT)
            continue
        out.append(char)
    return re.compile("".join(out), re.ASCII)


def _string_parser(shape: Mapping[str, Any]) -> _Parser:
    lo: int = shape.get("min", 0)
    hi: int = shape.get("max", _NO_MAX)
    enum: list[str] | None = shape.get("enum")
    allowed = frozenset(enum) if enum else None
    pattern: str | None = shape.get("pattern")
    regex = _compile_pattern(pattern) if pattern is not None else None
    # AWS leaves the value out of the message for sensitive members.
    shown = not shape.get("sensitive", False)
    wrong = "{kind} can not be converted to a String"
    # Lengths count code points, as the Smithy length trait defines them; Java would
    # count UTF-16 units, so a string of astral characters could differ by a little.

    def report(value: str, path: str, problems: list[_Problem]) -> None:
        display = f"Value '{value}'" if shown else "Value"
        if len(value) < lo:
            problems.append((display, path, _min_length(lo)))
        if len(value) > hi:
            problems.append((display, path, _max_length(hi)))
        if allowed is not None and enum is not None and value not in allowed:
            problems.append((display, path, _enum_text(enum)))
        if regex is not None and pattern is not None and regex.fullmatch(value) is None:
            problems.append((display, path, _pattern_text(pattern)))

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        if type(value) is not str:
            raise _mismatch(value, path, wrong)
        n = len(value)
        if (
            n < lo
            or n > hi
            or (allowed is not None and value not in allowed)
            or (regex is not None and regex.fullmatch(value) is None)
        ):
            report(value, path, problems)
        return value

    return parse


def _integer_parser(shape: Mapping[str, Any]) -> _Parser:
    wide = shape["type"] == "long"
    floor, ceiling = _INT64 if wide else _INT32
    lo: int = shape.get("min", floor)
    hi: int = shape.get("max", ceiling)
    shown = not shape.get("sensitive", False)
    wrong = "{kind} can not be converted to " + ("a Long" if wide else "an Integer")

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        # bool is an int subclass in Python but a different JSON type.
        if type(value) is not int:
            raise _mismatch(value, path, wrong)
        if value < lo or value > hi:
            if value < floor or value > ceiling:
                # Out of the wire type's range: AWS cannot even read it.
                raise _mismatch(value, path, wrong)
            display = f"Value '{value}'" if shown else "Value"
            text = _min_value(lo) if value < lo else _max_value(hi)
            problems.append((display, path, text))
        return value

    return parse


def _number_parser(shape: Mapping[str, Any]) -> _Parser:
    lo: float = shape.get("min", float("-inf"))
    hi: float = shape.get("max", float("inf"))
    shown = not shape.get("sensitive", False)
    wrong = "{kind} can not be converted to a Double"

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        if type(value) is not float and type(value) is not int:
            raise _mismatch(value, path, wrong)
        if value < lo or value > hi:
            display = f"Value '{value}'" if shown else "Value"
            text = _min_value(shape["min"]) if value < lo else _max_value(shape["max"])
            problems.append((display, path, text))
        return value

    return parse


def _parse_boolean(value: object, path: str, problems: list[_Problem]) -> object:
    # "an Boolean" is AWS's own wording, kept for clients that match on it.
    if type(value) is not bool:
        raise _mismatch(value, path, "{kind} can not be converted to an Boolean")
    return value


def _parse_timestamp(value: object, path: str, problems: list[_Problem]) -> object:
    # The JSON protocol sends timestamps as epoch seconds, an integer or a decimal.
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _mismatch(value, path, "{kind} can not be converted to a Date")


def _blob_parser(shape: Mapping[str, Any]) -> _Parser:
    lo: int = shape.get("min", 0)
    hi: int = shape.get("max", _NO_MAX)

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        if type(value) is not str:
            raise _mismatch(value, path, _NOT_BASE64_TEXT)
        try:
            # Strict mode refuses characters outside the alphabet, bad padding and
            # data after the padding, as base64.b64decode(validate=True) does.
            data = binascii.a2b_base64(value, strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII character
            raise MalformedRequestError(
                f"Invalid base64-encoded value at '{path}'"
            ) from None
        n = len(data)
        if n < lo or n > hi:
            # AWS never shows a blob: "Value at 'plaintext' failed to satisfy ...".
            problems.append(
                ("Value", path, _min_length(lo) if n < lo else _max_length(hi))
            )
        return data

    return parse


def _list_parser(shape: Mapping[str, Any], member: _Parser) -> _Parser:
    lo: int = shape.get("min", 0)
    hi: int = shape.get("max", _NO_MAX)

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        if type(value) is not list:
            raise _mismatch(value, path, _UNEXPECTED)
        n = len(value)
        if n < lo or n > hi:
            problems.append(
                ("Value", path, _min_length(lo) if n < lo else _max_length(hi))
            )
        # AWS names list elements "<list>.<1-based index>.member". A plain loop with
        # ready-made suffixes costs far less here than a comprehension and f-strings.
        out: list[object] = []
        append = out.append
        for i, item in enumerate(value, 1):
            suffix = _ELEMENT_SUFFIXES[i] if i < _SUFFIX_COUNT else f".{i}.member"
            append(member(item, path + suffix, problems))
        return out

    return parse


def _is_plain_string(shape: Mapping[str, Any]) -> bool:
    return shape["type"] == "string" and not (
        shape.get("min", 0) or "max" in shape or "enum" in shape or "pattern" in shape
    )


def _map_parser(
    shape: Mapping[str, Any],
    key_shape: Mapping[str, Any],
    key: _Parser,
    value_shape: Mapping[str, Any],
    item: _Parser,
) -> _Parser:
    lo: int = shape.get("min", 0)
    hi: int = shape.get("max", _NO_MAX)
    # Encryption contexts, the one map in KMS, are string to string with no further
    # constraints; they only need their values' type checked.
    plain = _is_plain_string(key_shape) and _is_plain_string(value_shape)
    scalar_values = value_shape["type"] not in ("structure", "list", "map")
    key_texts = (
        f"Map keys must satisfy constraint: [{', '.join(_length_texts(key_shape))}]"
    )
    value_texts = (
        f"Map value must satisfy constraint: [{', '.join(_length_texts(value_shape))}]"
    )
    wrong_value = "{kind} can not be converted to a String"

    def parse(value: object, path: str, problems: list[_Problem]) -> object:
        if type(value) is not dict:
            raise _mismatch(value, path, _UNEXPECTED)
        n = len(value)
        if n < lo or n > hi:
            problems.append(
                ("Value", path, _min_length(lo) if n < lo else _max_length(hi))
            )
        if plain:
            for v in value.values():
                if type(v) is not str:
                    raise _mismatch(v, path, wrong_value)
            return value
        # Keys and values are reported against the map's own path, never by key: the
        # keys are request data, and AWS reports a map's members as one constraint.
        key_problems: list[_Problem] = []
        value_problems: list[_Problem] = []
        out = {
            key(k, path, key_problems): item(
                v, path, value_problems if scalar_values else problems
            )
            for k, v in value.items()
        }
        if key_problems:
            problems.append(("Value", path, key_texts))
        if value_problems:
            problems.append(("Value", path, value_texts))
        return out

    return parse


def _structure_parser(
    members: Sequence[tuple[str, str, _Parser, bool]],
) -> _StructParser:
    fields = {name: (camel, member) for name, camel, member, _ in members}
    required = tuple((name, camel) for name, camel, _, needed in members if needed)

    def parse(value: object, path: str, problems: list[_Problem]) -> dict[str, object]:
        if type(value) is not dict:
            raise _mismatch(value, path, _UNEXPECTED)
        out: dict[str, object] = {}
        # Walking the request's members, which are usually fewer than the model's,
        # drops unknown ones as AWS does. A JSON null is the same as an absent member.
        # The top level, where most members are, needs no path prefix.
        if path:
            base = path + "."
            for name, item in value.items():
                field = fields.get(name)
                if field is not None and item is not None:
                    camel, member = field
                    out[name] = member(item, base + camel, problems)
        else:
            base = ""
            for name, item in value.items():
                field = fields.get(name)
                if field is not None and item is not None:
                    camel, member = field
                    out[name] = member(item, camel, problems)
        for name, camel in required:
            if name not in out:
                problems.append(("Value null", base + camel, _NOT_NULL))
        return out

    return parse


def _encode_blob(value: object) -> object:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a blob must be bytes, not {type(value).__name__}")
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _encode_timestamp(value: object) -> object:
    # The JSON protocol writes timestamps as epoch seconds.
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # A naive datetime would be read in the host's time zone.
            raise TypeError("a timestamp must be an aware datetime")
        return value.timestamp()
    raise TypeError(f"a timestamp must be epoch seconds, not {type(value).__name__}")


def _list_encoder(member: _Encoder | None) -> _Encoder:
    def encode(value: object) -> object:
        if not isinstance(value, list | tuple):
            raise TypeError(
                f"a list must be a list or tuple, not {type(value).__name__}"
            )
        return value if member is None else [member(item) for item in value]

    return encode


def _map_encoder(member: _Encoder | None) -> _Encoder:
    def encode(value: object) -> object:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(f"a map must be a mapping, not {type(value).__name__}")
        if member is None:
            return value if type(value) is dict else dict(value)
        return {k: member(v) for k, v in value.items()}

    return encode


def _structure_encoder(
    shape_name: str, members: Mapping[str, _Encoder | None]
) -> _Encoder:
    plain = frozenset(name for name, encoder in members.items() if encoder is None)
    encoders = {name: e for name, e in members.items() if e is not None}

    def encode(value: object) -> object:
        # The isinstance check against the Mapping ABC is slow; results are dicts.
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(
                f"{shape_name} must be a mapping, not {type(value).__name__}"
            )
        out: dict[str, object] = {}
        for name, item in value.items():
            if item is None:
                continue
            if name in plain:
                out[name] = item
                continue
            try:
                encoder = encoders[name]
            except KeyError:
                raise KeyError(f"{shape_name} has no member {name!r}") from None
            out[name] = encoder(item)
        return out

    return encode


class _Compiler:
    """Turns the model's shapes into parsers and encoders, each shape once."""

    def __init__(self, shapes: Mapping[str, Mapping[str, Any]]) -> None:
        self._shapes = shapes
        self._parsers: dict[str, _Parser] = {}
        self._encoders: dict[str, _Encoder | None] = {}
        self._open: set[str] = set()

    def _enter(self, name: str) -> Mapping[str, Any]:
        # No KMS shape contains itself; a model that did would need late binding.
        if name in self._open:
            raise ValueError(f"recursive shape {name} is not supported")
        self._open.add(name)
        return self._shapes[name]

    def structure_parser(self, name: str) -> _StructParser:
        shape = self._enter(name)
        required = set(shape.get("required", ()))
        members = [
            (member, _camel(member), self.parser(ref["shape"]), member in required)
            for member, ref in shape.get("members", {}).items()
        ]
        self._open.discard(name)
        return _structure_parser(members)

    def parser(self, name: str) -> _Parser:
        if name in self._parsers:
            return self._parsers[name]
        shape = self._shapes[name]
        kind = shape["type"]
        parser: _Parser
        if kind == "structure":
            parser = self.structure_parser(name)
        elif kind == "list":
            self._enter(name)
            parser = _list_parser(shape, self.parser(shape["member"]["shape"]))
            self._open.discard(name)
        elif kind == "map":
            self._enter(name)
            key_name, value_name = shape["key"]["shape"], shape["value"]["shape"]
            parser = _map_parser(
                shape,
                self._shapes[key_name],
                self.parser(key_name),
                self._shapes[value_name],
                self.parser(value_name),
            )
            self._open.discard(name)
        elif kind == "string":
            parser = _string_parser(shape)
        elif kind in ("integer", "long"):
            parser = _integer_parser(shape)
        elif kind in ("float", "double"):
            parser = _number_parser(shape)
        elif kind == "boolean":
            parser = _parse_boolean
        elif kind == "blob":
            parser = _blob_parser(shape)
        elif kind == "timestamp":
            parser = _parse_timestamp
        else:
            # Failing at import is better than letting an unchecked type through.
            raise ValueError(f"shape {name} has unsupported type {kind}")
        self._parsers[name] = parser
        return parser

    def encoder(self, name: str) -> _Encoder | None:
        if name in self._encoders:
            return self._encoders[name]
        shape = self._shapes[name]
        kind = shape["type"]
        encoder: _Encoder | None
        if kind == "structure":
            self._enter(name)
            encoder = _structure_encoder(
                name,
                {
                    member: self.encoder(ref["shape"])
                    for member, ref in shape.get("members", {}).items()
                },
            )
            self._open.discard(name)
        elif kind == "list":
            self._enter(name)
            encoder = _list_encoder(self.encoder(shape["member"]["shape"]))
            self._open.discard(name)
        elif kind == "map":
            self._enter(name)
            encoder = _map_encoder(self.encoder(shape["value"]["shape"]))
            self._open.discard(name)
        elif kind == "blob":
            encoder = _encode_blob
        elif kind == "timestamp":
            encoder = _encode_timestamp
        elif kind in ("string", "integer", "long", "float", "double", "boolean"):
            encoder = None  # orjson writes these as they are
        else:
            raise ValueError(f"shape {name} has unsupported type {kind}")
        self._encoders[name] = encoder
        return encoder


class _Compiled(NamedTuple):
    parsers: dict[str, _StructParser]
    encoders: dict[str, _Encoder]


def _compile(model: Mapping[str, Any]) -> _Compiled:
    """Compile every operation of a botocore service model (``service-2`` JSON)."""
    compiler = _Compiler(model["shapes"])
    no_members = _structure_parser(())
    no_output = _structure_encoder("(no output)", {})
    parsers: dict[str, _StructParser] = {}
    encoders: dict[str, _Encoder] = {}
    for name, operation in model["operations"].items():
        parsers[name] = (
            compiler.structure_parser(operation["input"]["shape"])
            if "input" in operation
            else no_members
        )
        encoder = (
            compiler.encoder(operation["output"]["shape"])
            if "output" in operation
            else None
        )
        encoders[name] = no_output if encoder is None else encoder
    return _Compiled(parsers, encoders)


_KMS: Final = _compile(Loader().load_service_model("kms", "service-2"))
_PARSERS: Final = _KMS.parsers
_ENCODERS: Final = _KMS.encoders
_OPERATION_NAMES: Final = frozenset(_PARSERS)
_EMPTY_BODIES: Final = (b"", b"{}")


# --- the API ------------------------------------------------------------------------


def operation_names() -> frozenset[str]:
    """Every operation in the KMS model, by AWS name ("Encrypt", "CreateKey", ...)."""
    return _OPERATION_NAMES


def parse_request(operation: str, body: bytes) -> dict[str, Any]:
    """Decode and validate a JSON 1.1 request body against the operation's input shape.

    Args:
        operation: The AWS operation name, as in the ``X-Amz-Target`` header.
        body: The request body; empty means an empty request.

    Returns:
        The request's known members under their AWS names, with blobs decoded to
        bytes and timestamps as float epoch seconds. Unknown members are dropped.

    Raises:
        UnknownOperationError: KMS has no such operation.
        MalformedRequestError: The body is not a JSON object, a member has the wrong
            JSON type, or a blob is not valid base64.
        ValidationError: Members break the model's constraints; the message lists
            every violation as AWS does.
    """
    parser = _PARSERS.get(operation)
    if parser is None:
        # AWS answers UnknownOperationException without a message, and the name came
        # from a header that anyone can fill.
        raise UnknownOperationError("")
    if body in _EMPTY_BODIES:
        data: object = {}
    else:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _json_error(exc) from None
    problems: list[_Problem] = []
    request = parser(data, "", problems)
    if problems:
        raise _validation_error(problems)
    return request


def encode_response(operation: str, result: Mapping[str, Any]) -> bytes:
    """Encode an operation's result as a JSON 1.1 response body.

    Args:
        operation: The AWS operation name.
        result: The output shape's members under their AWS names. None values are
            left out; blobs are bytes; timestamps are epoch seconds or aware datetimes.

    Returns:
        The JSON body, with blobs in base64 and timestamps as epoch seconds.

    Raises:
        KeyError: The operation is unknown, or ``result`` has a member that the
            output shape does not (a keyplane bug, not a client error).
        TypeError: A value has a type its shape cannot take (also a keyplane bug).
    """
    return orjson.dumps(_ENCODERS[operation](result))
