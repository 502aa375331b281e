"""A parser for the NIST CAVP key wrap files of AES key wrap with padding (KWP).

A file (``KWP_AE_256.txt``, ``KWP_AD_256.txt``) is a run of sections, each opened by
``[PLAINTEXT LENGTH = <bits>]`` and followed by records::

    COUNT = 3
    K = <hex>         the key-encryption key
    P = <hex>         the plaintext (in a KWP-AD file, ``FAIL`` may stand instead)
    C = <hex>         the wrapped plaintext

The field order differs between AE and AD files; each record is checked against its
section: P has the section's length, and C is P padded to a multiple of 64 bits plus the
64-bit integrity block (NIST SP 800-38F section 6.3), FAIL records included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DATA_DIR: Final[Path] = Path(__file__).parent / "data"
_FIELDS: Final = ("K", "P", "C")


@dataclass(frozen=True)
class KwpVector:
    """One KWP record. A FAIL record (KWP-AD only) has an empty ``p``."""

    k: bytes
    p: bytes
    c: bytes
    fail: bool
    plaintext_bits: int
    count: int

    def __str__(self) -> str:
        return f"P{self.plaintext_bits}#{self.count}"


class KwpFormatError(ValueError):
    """The file does not read as a CAVP KWP file."""


def wrapped_length(plaintext_bytes: int) -> int:
    """The length of KWP's output for a plaintext of that many bytes."""
    return -(-plaintext_bytes // 8) * 8 + 8


def parse(text: str, source: str = "<kwp>") -> list[KwpVector]:
    """Every record of a KWP file, in file order.

    Raises:
        KwpFormatError: an unknown line, a missing or repeated field, or a length that
            disagrees with its section.
    """
    vectors: list[KwpVector] = []
    bits: int | None = None
    record: dict[str, str] | None = None
    record_line = 0

    def finish() -> None:
        if record is not None:
            vectors.append(_vector(record, bits, f"{source}:{record_line}"))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{source}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            finish()
            record = None
            name, sep, value = line[1:-1].partition("=")
            if name.strip() != "PLAINTEXT LENGTH" or not sep:
                raise KwpFormatError(f"{where}: unexpected section {line!r}")
            bits = _int(value, where)
            continue
        if line == "FAIL":
            if record is None or "FAIL" in record:
                raise KwpFormatError(f"{where}: FAIL outside a record")
            record["FAIL"] = ""
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            raise KwpFormatError(f"{where}: unexpected line {line!r}")
        if name == "COUNT":
            finish()
            record, record_line = {"COUNT": value}, number
        elif name in _FIELDS and record is not None and name not in record:
            record[name] = value
        else:
            raise KwpFormatError(f"{where}: unexpected line {line!r}")
    finish()
    return vectors


def _int(value: str, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise KwpFormatError(f"{where}: not an integer: {value!r}") from None


def _vector(record: dict[str, str], bits: int | None, where: str) -> KwpVector:
    if bits is None:
        raise KwpFormatError(f"{where}: a record before any section")
    fail = "FAIL" in record
    if fail == ("P" in record):
        raise KwpFormatError(f"{where}: a record needs exactly one of P and FAIL")
    needed = ["K", "C"] if fail else ["K", "P", "C"]
    if any(name not in record for name in needed):
        raise KwpFormatError(f"{where}: record lacks one of {needed}")
    try:
        data = {name: bytes.fromhex(record[name]) for name in needed}
    except ValueError:
        raise KwpFormatError(f"{where}: a field is not hex") from None
    if len(data["K"]) != 32:
        raise KwpFormatError(f"{where}: K is not an AES-256 key")
    if not fail and len(data["P"]) * 8 != bits:
        raise KwpFormatError(f"{where}: P is not {bits} bits")
    if len(data["C"]) != wrapped_length(-(-bits // 8)):
        raise KwpFormatError(f"{where}: C's length does not fit a {bits}-bit P")
    return KwpVector(
        k=data["K"],
        p=data.get("P", b""),
        c=data["C"],
        fail=fail,
        plaintext_bits=bits,
        count=_int(record["COUNT"], where),
    )


@functools.cache
def _load(name: str) -> tuple[KwpVector, ...]:
    text = (DATA_DIR / name).read_bytes().decode("ascii")
    vectors = parse(text, name)
    declared = sum(1 for line in text.splitlines() if line.startswith("COUNT ="))
    if len(vectors) != declared:
        raise KwpFormatError(
            f"{name}: parsed {len(vectors)} vectors, the file has {declared} records"
        )
    return tuple(vectors)


def load_kwp(name: str) -> list[KwpVector]:
    """Every vector of ``data/<name>`` (parsed once per process)."""
    return list(_load(name))
