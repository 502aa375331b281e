"""NIST CAVP AES-256-GCM known-answer tests of the native HSM.

Chosen IVs and tag lengths go through ``hazmat.seal_with_ivs``/``open_with_ivs``;
vectors the service's own format can carry (96-bit IV, 128-bit tag) also go through
``NativeHsm.decrypt_batch``. Each is run one vector per call and all in one batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Final

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.errors import InvalidCiphertextError, KeyplaneError, ValidationError
from keyplane.native import IV_BYTES, TAG_BYTES, NativeHsm, Result, hazmat

from .cavp import DATA_DIR, GcmVector, load_cavp, sections

ENCRYPT: Final = "gcmEncryptExtIV256.rsp"
DECRYPT: Final = "gcmDecrypt256.rsp"

# As published (see README.md): the files' SHA-256, record and FAIL counts.
PUBLISHED: Final[dict[str, tuple[str, int, int]]] = {
    ENCRYPT: (
        "4448b4998c3f58cd9f5542ddf7c573189a721ff3d3ac24cd5177bb4910a787f8",
        7875,
        0,
    ),
    DECRYPT: (
        "ed318735a517d5a85c82d2846c23dcf56e57a352fb0f0a163d9e7617a7bd12ad",
        7875,
        3919,
    ),
}
INTEROP_SAMPLE: Final = 50

ENCRYPT_SECTIONS: Final = sections(load_cavp(ENCRYPT))
DECRYPT_SECTIONS: Final = sections(load_cavp(DECRYPT))


def service_format(v: GcmVector) -> bool:
    """Whether ``IV || CT || Tag`` is something ``decrypt_batch`` should try to open.

    FAIL vectors are kept even with an empty CT: the call must refuse them too.
    """
    return len(v.iv) == IV_BYTES and len(v.tag) == TAG_BYTES and (v.fail or bool(v.pt))


class Slots:
    """Key slots for vectors' raw keys in one partition, one import per distinct key."""

    def __init__(self, hsm: NativeHsm, partition: int) -> None:
        self.hsm = hsm
        self.partition = partition
        self._handles: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        handle = self._handles.get(key)
        if handle is None:
            # import_raw_key zeroes what it is given; ``key`` itself stays intact.
            handle = hazmat.import_raw_key(self.hsm, self.partition, bytearray(key))
            self._handles[key] = handle
        return handle

    def all(self, vectors: Sequence[GcmVector]) -> list[int]:
        return [self(v.key) for v in vectors]


@pytest.fixture(scope="module")
def hsm() -> Iterator[NativeHsm]:
    h = NativeHsm(os.urandom(32))
    yield h
    h.close()


@pytest.fixture
def slots(hsm: NativeHsm) -> Iterator[Slots]:
    """A partition of its own per test, destroyed (with every slot) afterwards."""
    partition = hsm.partition_create()
    yield Slots(hsm, partition)
    hsm.partition_destroy(partition)


def check_sealed(vectors: Sequence[GcmVector], results: Sequence[Result]) -> None:
    assert len(results) == len(vectors)
    wrong = [str(v) for v, r in zip(vectors, results, strict=True) if r != v.ct + v.tag]
    assert not wrong, f"{len(wrong)} vectors sealed wrong: {wrong[:10]}"


def check_opened(vectors: Sequence[GcmVector], results: Sequence[Result]) -> None:
    """Non-FAIL vectors give their PT; FAIL vectors an authentication failure."""
    assert len(results) == len(vectors)
    wrong = []
    for v, r in zip(vectors, results, strict=True):
        ok = (type(r) is InvalidCiphertextError) if v.fail else (r == v.pt)
        if not ok:
            wrong.append(f"{v}: {'FAIL' if v.fail else 'pass'} vector gave {r!r:.80}")
    assert not wrong, f"{len(wrong)} vectors opened wrong: {wrong[:10]}"


# --- the data -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [ENCRYPT, DECRYPT])
def test_data_files_are_as_published(name):
    digest, total, fails = PUBLISHED[name]
    assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest
    vectors = load_cavp(name)
    assert len(vectors) == total
    assert sum(v.fail for v in vectors) == fails
    assert len({str(v) for v in vectors}) == total  # ids are unique
    assert {len(v.key) for v in vectors} == {32}
    assert {len(v.iv) for v in vectors} == {1, 12, 128}
    assert {len(v.tag) for v in vectors} == {4, 8, 12, 13, 14, 15, 16}


# --- encrypt vectors: hazmat.seal_with_ivs --------------------------------------------


@pytest.mark.parametrize("section", ENCRYPT_SECTIONS)
def test_seal_one_per_call(slots, section):
    vectors = ENCRYPT_SECTIONS[section]
    results = [
        r
        for v in vectors
        for r in hazmat.seal_with_ivs(
            slots.hsm, slots(v.key), [(v.iv, v.pt, v.aad)], len(v.tag)
        )
    ]
    check_sealed(vectors, results)


def test_seal_all_in_one_batch(slots):
    vectors = load_cavp(ENCRYPT)
    results = hazmat.seal_with_ivs(
        slots.hsm,
        slots.all(vectors),
        [(v.iv, v.pt, v.aad) for v in vectors],
        [len(v.tag) for v in vectors],
    )
    check_sealed(vectors, results)


# --- decrypt vectors: hazmat.open_with_ivs --------------------------------------------


@pytest.mark.parametrize("section", DECRYPT_SECTIONS)
def test_open_one_per_call(slots, section):
    vectors = DECRYPT_SECTIONS[section]
    results = [
        r
        for v in vectors
        for r in hazmat.open_with_ivs(
            slots.hsm, slots(v.key), [(v.iv, v.ct + v.tag, v.aad)], len(v.tag)
        )
    ]
    check_opened(vectors, results)


def test_open_all_in_one_batch(slots):
    vectors = load_cavp(DECRYPT)
    results = hazmat.open_with_ivs(
        slots.hsm,
        slots.all(vectors),
        [(v.iv, v.ct + v.tag, v.aad) for v in vectors],
        [len(v.tag) for v in vectors],
    )
    check_opened(vectors, results)


# --- decrypt vectors in the service's format: NativeHsm.decrypt_batch -----------------

SERVICE_VECTORS: Final = [v for v in load_cavp(DECRYPT) if service_format(v)]


def check_service_opened(
    vectors: Sequence[GcmVector], results: Sequence[Result]
) -> None:
    """As ``check_opened``, but an empty ciphertext is refused for its length first."""
    empty = [(v, r) for v, r in zip(vectors, results, strict=True) if not v.ct]
    assert all(v.fail and type(r) is ValidationError for v, r in empty), [
        f"{v}: {r!r:.80}" for v, r in empty
    ]
    rest = [(v, r) for v, r in zip(vectors, results, strict=True) if v.ct]
    check_opened([v for v, _ in rest], [r for _, r in rest])


def test_service_vectors_cover_both_outcomes():
    assert len(SERVICE_VECTORS) == 338
    assert sum(v.fail for v in SERVICE_VECTORS) == 191
    assert sum(v.fail and not v.ct for v in SERVICE_VECTORS) == 38


def test_decrypt_batch_one_per_call(slots):
    results = [
        r
        for v in SERVICE_VECTORS
        for r in slots.hsm.decrypt_batch(
            slots.partition, slots(v.key), [v.iv + v.ct + v.tag], [v.aad]
        )
    ]
    check_service_opened(SERVICE_VECTORS, results)


def test_decrypt_batch_all_in_one_batch(slots):
    vectors = SERVICE_VECTORS
    results = slots.hsm.decrypt_batch(
        slots.partition,
        slots.all(vectors),
        [v.iv + v.ct + v.tag for v in vectors],
        [v.aad for v in vectors],
    )
    check_service_opened(vectors, results)


# --- interop: the service's own encryption, opened by another implementation ----------


def interop_sample() -> list[GcmVector]:
    """An evenly spread sample of encrypt vectors with a non-empty PT."""
    usable = [v for v in load_cavp(ENCRYPT) if v.pt]
    step = len(usable) // INTEROP_SAMPLE
    return usable[::step][:INTEROP_SAMPLE]


def check_interop(vectors: Sequence[GcmVector], sealed: Sequence[Result]) -> None:
    assert len(sealed) == len(vectors)
    for v, out in zip(vectors, sealed, strict=True):
        assert not isinstance(out, KeyplaneError), f"{v}: {out!r}"
        assert len(out) == IV_BYTES + len(v.pt) + TAG_BYTES
        iv, ct_and_tag = out[:IV_BYTES], out[IV_BYTES:]
        assert AESGCM(v.key).decrypt(iv, ct_and_tag, v.aad) == v.pt, str(v)


def test_encrypt_batch_opens_elsewhere_one_per_call(slots):
    vectors = interop_sample()
    assert len(vectors) == INTEROP_SAMPLE
    sealed = [
        r
        for v in vectors
        for r in slots.hsm.encrypt_batch(slots.partition, slots(v.key), [v.pt], [v.aad])
    ]
    check_interop(vectors, sealed)


def test_encrypt_batch_opens_elsewhere_in_one_batch(slots):
    vectors = interop_sample()
    sealed = slots.hsm.encrypt_batch(
        slots.partition,
        slots.all(vectors),
        [v.pt for v in vectors],
        [v.aad for v in vectors],
    )
    check_interop(vectors, sealed)
    # Fresh random IVs: no two items share one.
    assert len({bytes(out[:IV_BYTES]) for out in sealed}) == len(vectors)
