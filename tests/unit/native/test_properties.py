"""Properties of the batch path: any plaintext and AAD round-trip, and any single-bit
change to an item's IV, ciphertext, tag or AAD fails that item and no other."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane import native
from keyplane.errors import InvalidCiphertextError
from keyplane.native import NativeHsm

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[NativeHsm, int, int]]:
    hsm = NativeHsm(os.urandom(32))
    partition = hsm.partition_create()
    yield hsm, partition, hsm.keyslot_generate(partition)
    hsm.close()


items = st.lists(
    st.tuples(st.binary(min_size=1, max_size=600), st.binary(max_size=300)),
    min_size=1,
    max_size=40,
)


@SETTINGS
@given(batch=items)
def test_any_plaintext_and_aad_round_trip(keyed, batch):
    hsm, partition, slot = keyed
    plaintexts = [p for p, _ in batch]
    aads = [a for _, a in batch]
    sealed = hsm.encrypt_batch(partition, slot, plaintexts, aads)
    assert hsm.decrypt_batch(partition, slot, sealed, aads) == plaintexts


@SETTINGS
@given(batch=items, data=st.data())
def test_one_flipped_bit_fails_only_its_item(keyed, batch, data):
    hsm, partition, slot = keyed
    plaintexts = [p for p, _ in batch]
    aads = [a for _, a in batch]
    sealed = hsm.encrypt_batch(partition, slot, plaintexts, aads)

    victim = data.draw(st.integers(0, len(batch) - 1), label="item")
    in_aad = bool(aads[victim]) and data.draw(st.booleans(), label="flip the AAD")
    target = bytearray(aads[victim] if in_aad else sealed[victim])
    bit = data.draw(st.integers(0, 8 * len(target) - 1), label="bit")
    target[bit // 8] ^= 1 << (bit % 8)
    if in_aad:
        aads[victim] = bytes(target)
    else:
        sealed[victim] = bytes(target)

    results = hsm.decrypt_batch(partition, slot, sealed, aads)
    for i, result in enumerate(results):
        if i == victim:
            assert isinstance(result, InvalidCiphertextError)
        else:
            assert result == plaintexts[i]


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, native.MAX_DATA_KEY_BYTES), min_size=1, max_size=40),
    context=st.binary(max_size=100),
)
def test_data_keys_open_to_their_plaintext(keyed, sizes, context):
    hsm, partition, slot = keyed
    keys = hsm.generate_data_key_batch(partition, slot, sizes, len(sizes), context)
    assert [len(k) for k, _ in keys] == sizes
    opened = hsm.decrypt_batch(partition, slot, [s for _, s in keys], context)
    assert opened == [k for k, _ in keys]
