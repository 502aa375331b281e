"""Thirty seconds of the soak (tests/soak/soak.py): mixed load at 80% of measured
capacity with the server's RSS sampled every second. `make soak` runs ten minutes."""

from __future__ import annotations

from tests.soak import soak


def test_a_short_soak(tmp_path):
    report = soak.soak(30.0, tmp_path / "data")
    print(report)
    # Thirty seconds on a shared machine is too short to judge p99 steadiness (make
    # soak does, over ten minutes); errors and memory growth are judged here too.
    assert report.errors == {}
    assert report.rss_growth < soak.MAX_RSS_GROWTH
    # The load ran near its pace, and every window had latencies to judge.
    assert report.achieved_rps > 0.5 * report.target_rps
    assert len(report.window_p99_ms) == soak.WINDOWS
