"""A forked child must never hand out random bytes its parent also hands out: the
per-thread random pool is wiped on fork (see docs/native.md)."""

from __future__ import annotations

import os
import sys

import pytest

from keyplane import native

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="fork semantics of Linux"
)


def test_child_and_parent_draw_different_bytes(hsm, partition, slot):
    # Prime this thread's pool so that plenty of bytes are waiting in it at fork time.
    native.random_bytes(16)
    hsm.encrypt_batch(partition, slot, [b"x"])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its draws and IVs, then leave without cleanup
        try:
            ivs = b"".join(
                s[:12] for s in hsm.encrypt_batch(partition, slot, [b"x"] * 8)
            )
            os.write(write_end, native.random_bytes(64) + ivs)
        finally:
            os._exit(0)
    os.close(write_end)
    child = b""
    while chunk := os.read(read_end, 4096):
        child += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = native.random_bytes(64) + b"".join(
        s[:12] for s in hsm.encrypt_batch(partition, slot, [b"x"] * 8)
    )
    assert len(child) == len(parent) == 64 + 96
    # Compare in 12-byte windows: any shared IV would be a catastrophic GCM failure.
    child_ivs = {child[i : i + 12] for i in range(0, len(child), 12)}
    parent_ivs = {parent[i : i + 12] for i in range(0, len(parent), 12)}
    assert not child_ivs & parent_ivs
