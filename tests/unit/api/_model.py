"""Hypothesis strategies for valid KMS requests, built from the same KMS model.

Values come out as a boto3 caller would pass them (blobs as bytes, timestamps as epoch
seconds); ``expected`` gives what ``parse_request`` should return for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from botocore.loaders import Loader
from botocore.model import ServiceModel
from hypothesis import strategies as st

from keyplane.api.shapes import _compile_pattern

MODEL: Mapping[str, Any] = Loader().load_service_model("kms", "service-2")
SHAPES: Mapping[str, Mapping[str, Any]] = MODEL["shapes"]
SERVICE = ServiceModel(MODEL, "kms")

# Extra items drawn beyond a minimum length; enough to cross boundaries, small enough
# to keep the examples fast.
_SPREAD = 8
# "^[class]+$" patterns: drawn as "[class]{min,max}" so that long minimums (an XKS
# secret is 43 to 64 characters) need no filtering.
_ONE_CLASS = re.compile(r"\^?(\[[^\]]*\])\+\$?")


def input_shape(operation: str) -> str:
    return str(MODEL["operations"][operation]["input"]["shape"])


def _string(shape: Mapping[str, Any]) -> st.SearchStrategy[str]:
    lo = shape.get("min", 0)
    hi = min(shape.get("max", lo + _SPREAD), lo + _SPREAD)
    if "enum" in shape:
        return st.sampled_from(shape["enum"])
    if "pattern" in shape:
        single = _ONE_CLASS.fullmatch(shape["pattern"])
        pattern = (
            f"{single.group(1)}{{{max(lo, 1)},{max(hi, 1)}}}"
            if single
            else shape["pattern"]
        )
        limit = shape.get("max", 1 << 30)
        # The parser's own compiled pattern, so both read Java's syntax the same way.
        return st.from_regex(_compile_pattern(pattern), fullmatch=True).filter(
            lambda s: lo <= len(s) <= limit
        )
    return st.text(min_size=lo, max_size=hi)


def _bounded(shape: Mapping[str, Any], floor: int, ceiling: int) -> tuple[int, int]:
    return shape.get("min", floor), shape.get("max", ceiling)


@cache
def value_of(name: str) -> st.SearchStrategy[Any]:
    """Every value the model accepts for shape ``name`` (within a small size)."""
    shape = SHAPES[name]
    kind = shape["type"]
    if kind == "structure":
        required = set(shape.get("required", ()))
        members = shape.get("members", {})
        return st.fixed_dictionaries(
            {m: value_of(r["shape"]) for m, r in members.items() if m in required},
            optional={
                m: value_of(r["shape"]) for m, r in members.items() if m not in required
            },
        )
    if kind == "list":
        lo = shape.get("min", 0)
        return st.lists(
            value_of(shape["member"]["shape"]),
            min_size=lo,
            max_size=min(shape.get("max", lo + 3), lo + 3),
        )
    if kind == "map":
        lo = shape.get("min", 0)
        return st.dictionaries(
            value_of(shape["key"]["shape"]),
            value_of(shape["value"]["shape"]),
            min_size=lo,
            max_size=min(shape.get("max", lo + 3), lo + 3),
        )
    if kind == "string":
        return _string(shape)
    if kind == "integer":
        lo, hi = _bounded(shape, -(2**31), 2**31 - 1)
        return st.integers(lo, hi)
    if kind == "long":
        lo, hi = _bounded(shape, -(2**63), 2**63 - 1)
        return st.integers(lo, hi)
    if kind == "boolean":
        return st.booleans()
    if kind == "blob":
        lo = shape.get("min", 0)
        return st.binary(min_size=lo, max_size=min(shape.get("max", lo + 32), lo + 32))
    if kind == "timestamp":
        return st.integers(0, 2**34)
    raise AssertionError(f"no strategy for {kind}")


def expected(name: str, value: Any) -> Any:
    """What parse_request returns for ``value`` of shape ``name``."""
    shape = SHAPES[name]
    kind = shape["type"]
    if kind == "structure":
        members = shape.get("members", {})
        return {k: expected(members[k]["shape"], v) for k, v in value.items()}
    if kind == "list":
        return [expected(shape["member"]["shape"], v) for v in value]
    if kind == "map":
        return {k: expected(shape["value"]["shape"], v) for k, v in value.items()}
    if kind == "timestamp":
        return float(value)
    return value
