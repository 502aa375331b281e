"""A short run of the crash harness (tests/crash/harness.py): the server is killed
with SIGKILL at random moments, and nothing it acknowledged may be lost. `make
crash-test` runs a thousand cycles."""

from __future__ import annotations

import os
import random

from tests.crash import harness

CYCLES = 50


def test_nothing_acknowledged_is_lost_across_kills(tmp_path):
    # A new schedule each run, printed so a failure can be replayed.
    seed = int(os.environ.get("KEYPLANE_CRASH_SEED", random.randrange(1 << 32)))  # noqa: S311
    report = harness.run(CYCLES, seed, tmp_path / "data")
    print(f"seed {seed}: {report}")
    assert report.cycles == CYCLES
    # The run did something worth checking: keys, their ciphertexts, and kills that
    # landed in the middle of requests.
    assert report.checked["keys"] > 0
    assert report.checked["ciphertexts and data keys"] > 0
    assert report.checked["store integrity checks"] == CYCLES
