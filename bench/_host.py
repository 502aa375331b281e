"""What a benchmark records about where it ran: the commit and the host.

Shared by ``native.py`` and ``http.py`` so both reports describe a run the same way.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], ok_status: tuple[int, ...] = (0,)) -> str | None:
    """``cmd``'s stdout, stripped, or None when it fails to run or exits with a status
    not in ``ok_status`` (some tools, such as ``wrk -v``, exit 1 after a version)."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode in ok_status else None


def git_info() -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"])
    # --no-optional-locks: status must not refresh (write) the index of a shared tree.
    status = (
        _run(
            [
                "git",
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
            ]
        )
        if commit
        else None
    )
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_info() -> dict[str, Any]:
    model: str | None = None
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    wanted = ("aes", "pclmulqdq", "vaes", "vpclmulqdq", "avx2", "avx512f")
    return {
        "model": model or platform.processor() or None,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "aes": "aes" in flags if flags else None,
        "crypto_flags": [f for f in wanted if f in flags],
        "machine": platform.machine(),
        "system": platform.platform(),
    }
