"""Fixtures for the storage tests: a fresh SQLite store in a private directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keyplane.storage import SQLiteStore

from .factories import partition


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keyplane.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    s.put_partition(partition())
    yield s
    s.close()
