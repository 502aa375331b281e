"""Fixtures for the native module's tests: a fresh HSM per test, closed afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from keyplane.native import NativeHsm


@pytest.fixture
def hsm() -> Iterator[NativeHsm]:
    h = NativeHsm(os.urandom(32))
    yield h
    h.close()


@pytest.fixture
def partition(hsm: NativeHsm) -> int:
    return hsm.partition_create()


@pytest.fixture
def slot(hsm: NativeHsm, partition: int) -> int:
    return hsm.keyslot_generate(partition)
