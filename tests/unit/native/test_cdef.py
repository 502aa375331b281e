"""ffi/kp.cdef must declare exactly what include/kp.h declares, with the same
signatures, so CFFI's view of the C API cannot drift from the C API itself."""

from __future__ import annotations

import re
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[3] / "native"


def _declarations(text: str) -> dict[str, str]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M)
    text = re.sub(r'extern "C" \{|^\}$', "", text, flags=re.M)
    found = {}
    for match in re.finditer(r"([A-Za-z_][\w \*]*?\b(kp_\w+)\s*\([^;{]*\))\s*;", text):
        found[match.group(2)] = " ".join(match.group(1).split())
    return found


def _constants(text: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, text))


def test_functions_match():
    header = _declarations((NATIVE / "include" / "kp.h").read_text())
    cdef = _declarations((NATIVE / "ffi" / "kp.cdef").read_text())
    assert len(header) >= 25
    assert {"kp_keyslot_unwrap_import", "kp_hazmat_kwp_unwrap"} <= header.keys()
    assert header == cdef


def test_constants_and_status_codes_match():
    header = (NATIVE / "include" / "kp.h").read_text()
    cdef = (NATIVE / "ffi" / "kp.cdef").read_text()
    # Digits too: KP_WRAP_RSAES_OAEP_SHA_1 must not slip past the comparison.
    defined = _constants(header, r"#define (KP_[A-Z0-9_]+) ")
    assert defined == _constants(cdef, r"static const int (KP_[A-Z0-9_]+);")
    assert {"KP_WRAP_RSAES_OAEP_SHA_1", "KP_MAX_IMPORT_BYTES"} <= defined
    assert _constants(header, r"(KP_E?_?[A-Z_]+) = (\d+)") == _constants(
        cdef, r"(KP_E?_?[A-Z_]+) = (\d+)"
    )
