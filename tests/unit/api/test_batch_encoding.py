"""The batch extension's bulk encoding gives exactly what per-item encoding gives."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api.batch import _b64_rows


@given(st.integers(1, 40), st.integers(1, 70), st.randoms())
def test_base64_rows_match_the_standard_encoder(rows, width, rnd):
    data = bytes(rnd.getrandbits(8) for _ in range(rows * width))
    matrix = np.frombuffer(data, dtype=np.uint8).reshape(rows, width)
    encoded = _b64_rows(matrix)
    for i in range(rows):
        row = data[i * width : (i + 1) * width]
        assert encoded[i].tobytes() == base64.b64encode(row)


def test_encoded_rows_are_valid_json():
    matrix = np.arange(3 * 32, dtype=np.uint8).reshape(3, 32)
    text = b'["' + b'","'.join(r.tobytes() for r in _b64_rows(matrix)) + b'"]'
    decoded = [base64.b64decode(v) for v in orjson.loads(text)]
    assert decoded == [bytes(r) for r in matrix]
