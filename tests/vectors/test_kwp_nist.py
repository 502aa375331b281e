"""NIST CAVP known answers for AES key wrap with padding (SP 800-38F KWP, RFC 5649)
under a 256-bit KEK: the key wrap of AWS's RSA_AES_KEY_WRAP_* import algorithms.

The service only ever unwraps, so every vector is run in the unwrap direction through
``hazmat.kwp_unwrap`` (the very function the import path calls): a KWP-AE vector's C
must unwrap to its P, a KWP-AD vector's C to its P or, for FAIL, to an authentication
failure. The import path itself is then run on the KWP-AD vectors, with each vector's K
as the ephemeral key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from keyplane.errors import InvalidCiphertextError, ValidationError
from keyplane.native import WRAPPING_ALGORITHMS, NativeHsm, hazmat

from .kwp import DATA_DIR, KwpFormatError, KwpVector, load_kwp, parse

AE: Final = "KWP_AE_256.txt"
AD: Final = "KWP_AD_256.txt"

# As published (see README.md): SHA-256, records, FAIL records.
PUBLISHED: Final[dict[str, tuple[str, int, int]]] = {
    AE: ("7a9566c73d10f866812d2ce2391b0b3c80b8bea0269b1103d6aab60dacf5f6e4", 500, 0),
    AD: ("c9e68a0391549290c99894eb5987458a2837346bdfc5942b46acd6fd613e6631", 500, 100),
}
SECTIONS: Final = [8, 64, 72, 248, 4096]


def by_section(name: str) -> dict[int, list[KwpVector]]:
    grouped: dict[int, list[KwpVector]] = {}
    for v in load_kwp(name):
        grouped.setdefault(v.plaintext_bits, []).append(v)
    return grouped


def unwrap_outcome(v: KwpVector) -> bytes | type[Exception]:
    try:
        return hazmat.kwp_unwrap(v.k, v.c)
    except InvalidCiphertextError:
        return InvalidCiphertextError


# --- the data -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [AE, AD])
def test_data_files_are_as_published(name):
    digest, total, fails = PUBLISHED[name]
    assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest
    vectors = load_kwp(name)
    assert len(vectors) == total
    assert sum(v.fail for v in vectors) == fails
    assert sorted(by_section(name)) == SECTIONS
    assert all(len(group) == 100 for group in by_section(name).values())
    assert len({str(v) for v in vectors}) == total


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("COUNT = 0\nK = 00\n", "before any section"),
        (
            "[PLAINTEXT LENGTH = 8]\nCOUNT = 0\nK = " + "00" * 32 + "\nC = 00\n",
            "one of P",
        ),
        ("[PLAINTEXT LENGTH = 8]\nCOUNT = 0\nX = 00\n", "unexpected line"),
        ("[KEYLEN = 256]\n", "unexpected section"),
        (
            "[PLAINTEXT LENGTH = 8]\nCOUNT = 0\nK = "
            + "00" * 32
            + "\nP = 0000\nC = "
            + "00" * 16
            + "\n",
            "not 8 bits",
        ),
        (
            "[PLAINTEXT LENGTH = 8]\nCOUNT = 0\nK = "
            + "00" * 32
            + "\nP = 00\nC = "
            + "00" * 24
            + "\n",
            "C's length",
        ),
    ],
)
def test_the_parser_refuses_what_is_not_a_kwp_file(text, problem):
    with pytest.raises(KwpFormatError, match=problem):
        parse(text)


# --- every vector, unwrapped --------------------------------------------------------


@pytest.mark.parametrize("bits", SECTIONS)
def test_kwp_ae_vectors_unwrap_to_their_plaintext(bits):
    vectors = by_section(AE)[bits]
    wrong = [str(v) for v in vectors if unwrap_outcome(v) != v.p]
    assert not wrong, f"{len(wrong)} vectors unwrapped wrong: {wrong[:10]}"


@pytest.mark.parametrize("bits", SECTIONS)
def test_kwp_ad_vectors_unwrap_or_fail_as_published(bits):
    vectors = by_section(AD)[bits]
    assert any(v.fail for v in vectors)
    assert not all(v.fail for v in vectors)
    wrong = [
        str(v)
        for v in vectors
        if unwrap_outcome(v) != (InvalidCiphertextError if v.fail else v.p)
    ]
    assert not wrong, f"{len(wrong)} vectors unwrapped wrong: {wrong[:10]}"


def test_a_vector_under_another_kek_fails():
    v = by_section(AE)[248][0]
    assert hazmat.kwp_unwrap(v.k, v.c) == v.p
    with pytest.raises(InvalidCiphertextError):
        hazmat.kwp_unwrap(bytes(a ^ 1 for a in v.k[:1]) + v.k[1:], v.c)


# --- the import path -----------------------------------------------------------------


@pytest.fixture(scope="module")
def importer() -> Iterator[tuple[NativeHsm, int, int, rsa.RSAPublicKey]]:
    hsm = NativeHsm(os.urandom(32))
    partition = hsm.partition_create()
    wrapping = hsm.wrapping_key_generate(partition, 2048)
    public = load_der_public_key(hsm.wrapping_key_public(partition, wrapping))
    assert isinstance(public, rsa.RSAPublicKey)
    yield hsm, partition, wrapping, public
    hsm.close()


@pytest.mark.parametrize("bits", SECTIONS)
def test_import_path_reaches_the_same_verdicts(importer, bits):
    """RSA-OAEP(K) || C, as RSA_AES_KEY_WRAP_SHA_256: no NIST vector wraps 256 bits, so
    a vector that unwraps is refused for its length (which only material that
    authenticated can reach), and a FAIL vector for authentication."""
    hsm, partition, wrapping, public = importer
    digest = hashes.SHA256()
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None
    )
    algorithm = WRAPPING_ALGORITHMS["RSA_AES_KEY_WRAP_SHA_256"]
    wrong = []
    for v in by_section(AD)[bits]:
        encrypted = public.encrypt(v.k, oaep) + v.c
        expected = InvalidCiphertextError if v.fail else ValidationError
        try:
            hsm.keyslot_unwrap_import(partition, wrapping, algorithm, encrypted)
            outcome: type[Exception] | None = None
        except (InvalidCiphertextError, ValidationError) as error:
            outcome = type(error)
        if outcome is not expected:
            wrong.append(f"{v}: {outcome}")
    assert not wrong, f"{len(wrong)} vectors went wrong: {wrong[:10]}"
    assert hsm.slot_count() == 1  # only the wrapping key: nothing was imported
