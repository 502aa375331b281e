"""A parser for NIST CAVP AES-GCM response files (``.rsp``).

A file is a run of sections. Each section opens with bracketed parameters
(``[Keylen = 256]``, ``[IVlen = 96]``, ``[PTlen = 128]``, ``[AADlen = 0]``,
``[Taglen = 128]``) followed by records::

    Count = 3
    Key = <hex>
    IV = <hex>
    PT = <hex>        (a decrypt record may carry a line ``FAIL`` instead)
    AAD = <hex>
    CT = <hex>
    Tag = <hex>

Every length a section declares (in bits) is checked against its records.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DATA_DIR: Final[Path] = Path(__file__).parent / "data"

# Record fields and the section parameter (in bits) each one's length must match.
_FIELDS: Final[dict[str, str]] = {
    "Key": "Keylen",
    "IV": "IVlen",
    "PT": "PTlen",
    "AAD": "AADlen",
    "CT": "PTlen",
    "Tag": "Taglen",
}
_PARAMETERS: Final[tuple[str, ...]] = ("Keylen", "IVlen", "PTlen", "AADlen", "Taglen")
# Fewer would mean the parser lost records: each CAVP GCM file has thousands.
_MIN_VECTORS: Final[int] = 1000


@dataclass(frozen=True)
class GcmVector:
    """One CAVP AES-GCM record. A FAIL record (decrypt only) has an empty ``pt``."""

    key: bytes
    iv: bytes
    pt: bytes
    aad: bytes
    ct: bytes
    tag: bytes
    fail: bool
    section: str  # e.g. "IVlen=96,PTlen=128,AADlen=0,Taglen=128"
    count: int

    def __str__(self) -> str:
        return f"{self.section}#{self.count}"


class CavpFormatError(ValueError):
    """The file does not read as a CAVP GCM response file."""


def parse_rsp(text: str, source: str = "<rsp>") -> list[GcmVector]:
    """Every record of a CAVP GCM response file, in file order.

    Raises:
        CavpFormatError: an unknown line, a missing field or a length that disagrees
            with its section's parameters.
    """
    vectors: list[GcmVector] = []
    params: dict[str, int] = {}
    in_header = False
    record: dict[str, str] | None = None
    record_line = 0

    def finish() -> None:
        if record is not None:
            vectors.append(_vector(record, params, f"{source}:{record_line}"))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        if line.startswith("[") and line.endswith("]"):
            finish()
            record = None
            if not in_header:
                params = {}
                in_header = True
            name, sep, value = line[1:-1].partition("=")
            if not sep:
                raise CavpFormatError(f"{where}: bad section line {line!r}")
            params[name.strip()] = _int(value, where)
            continue
        in_header = False
        if line == "FAIL":
            if record is None:
                raise CavpFormatError(f"{where}: FAIL outside a record")
            record["FAIL"] = ""
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise CavpFormatError(f"{where}: unexpected line {line!r}")
        if name == "Count":
            finish()
            record, record_line = {"Count": value}, number
        elif name in _FIELDS and record is not None:
            if name in record:
                raise CavpFormatError(f"{where}: {name} given twice")
            record[name] = value
        else:
            raise CavpFormatError(f"{where}: unexpected line {line!r}")
    finish()
    return vectors


def _int(value: str, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise CavpFormatError(f"{where}: not an integer: {value!r}") from None


def _vector(record: dict[str, str], params: dict[str, int], where: str) -> GcmVector:
    missing = [p for p in _PARAMETERS if p not in params]
    if missing:
        raise CavpFormatError(f"{where}: section lacks {', '.join(missing)}")
    fail = "FAIL" in record
    if fail and "PT" in record:
        raise CavpFormatError(f"{where}: a record with both PT and FAIL")
    needed = [f for f in _FIELDS if f != "PT" or not fail]
    missing = [f for f in needed if f not in record]
    if missing:
        raise CavpFormatError(f"{where}: record lacks {', '.join(missing)}")
    data: dict[str, bytes] = {}
    for name in needed:
        try:
            data[name] = bytes.fromhex(record[name])
        except ValueError:
            raise CavpFormatError(f"{where}: {name} is not hex") from None
        bits = params[_FIELDS[name]]
        if len(data[name]) * 8 != bits:
            raise CavpFormatError(
                f"{where}: {name} has {len(data[name]) * 8} bits, "
                f"the section says {_FIELDS[name]} = {bits}"
            )
    section = ",".join(f"{p}={params[p]}" for p in _PARAMETERS if p != "Keylen")
    return GcmVector(
        key=data["Key"],
        iv=data["IV"],
        pt=data.get("PT", b""),
        aad=data["AAD"],
        ct=data["CT"],
        tag=data["Tag"],
        fail=fail,
        section=section,
        count=_int(record["Count"], where),
    )


@functools.cache
def _load(name: str) -> tuple[GcmVector, ...]:
    text = (DATA_DIR / name).read_bytes().decode("ascii")
    vectors = parse_rsp(text, name)
    declared = sum(1 for line in text.splitlines() if line.startswith("Count ="))
    if len(vectors) != declared or len(vectors) < _MIN_VECTORS:
        raise CavpFormatError(
            f"{name}: parsed {len(vectors)} vectors, the file has {declared} records"
        )
    return tuple(vectors)


def load_cavp(name: str) -> list[GcmVector]:
    """Every vector of ``data/<name>`` (parsed once per process)."""
    return list(_load(name))


def sections(vectors: list[GcmVector]) -> dict[str, list[GcmVector]]:
    """The vectors grouped by section, in file order."""
    grouped: dict[str, list[GcmVector]] = {}
    for v in vectors:
        grouped.setdefault(v.section, []).append(v)
    return grouped
