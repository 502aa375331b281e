"""IAM's two wildcards, ``*`` (any run of characters) and ``?`` (one character), turned
into compiled regular expressions once, when a policy is parsed.

Pure string work; it must not cache per request or read anything outside its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def has_wildcard(pattern: str) -> bool:
    """Whether ``pattern`` needs a regular expression rather than a set lookup."""
    return "*" in pattern or "?" in pattern


def translate(pattern: str, *, star: str = ".*", one: str = ".") -> str:
    """The regular-expression source for one wildcard pattern.

    Runs of ``*`` collapse into one, so a pattern such as ``a****b`` cannot make the
    matcher backtrack over the same span many times.
    """
    out: list[str] = []
    previous_star = False
    for ch in pattern:
        if ch == "*":
            if not previous_star:
                out.append(star)
            previous_star = True
            continue
        previous_star = False
        out.append(one if ch == "?" else re.escape(ch))
    return "".join(out)


def compile_wildcards(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One expression matching any of ``patterns`` (use ``fullmatch``), or ``None``."""
    sources = [translate(p) for p in patterns]
    if not sources:
        return None
    return re.compile("(?:" + "|".join(sources) + ")", re.DOTALL)
