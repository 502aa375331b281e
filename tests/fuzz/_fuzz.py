"""What every fuzz target shares: how long it runs, and its kept corpus.

A target runs ``SHORT`` examples by default, so that all of them together fit in
``make test``; with ``KEYPLANE_FUZZ_EXAMPLES=N`` in the environment each runs N (the
long run of ``make fuzz``). Each target also replays every file of its corpus,
``tests/fuzz/corpus/<target>/``, as an explicit example on every run: inputs that once
broke something, or that reach a corner random generation seldom finds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

CORPUS = Path(__file__).parent / "corpus"
SHORT = 200
_LONG = os.environ.get("KEYPLANE_FUZZ_EXAMPLES", "").strip()
EXAMPLES = int(_LONG) if _LONG else 0


def fuzz(short: int = SHORT) -> settings:
    """Settings for one fuzz target: ``short`` examples, or the long run's count.

    No deadline: a slow example is not a bug here, and the first call of a target
    pays for imports and warm-up.
    """
    return settings(
        max_examples=EXAMPLES or short,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


def corpus(target: str) -> list[Any]:
    """Every kept input of ``target`` as pytest params ``(name, data)``, with the file
    name as the id (some targets read what the input is for from its name)."""
    folder = CORPUS / target
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert files, f"the corpus of {target} is empty"
    return [pytest.param(p.name, p.read_bytes(), id=p.name) for p in files]
