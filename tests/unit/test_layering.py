"""Imports flow one way (app -> api -> kms -> {policy, storage, hsm} -> native), errors
imports nothing of keyplane, and nothing in the package uses the hazmat module."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "keyplane"

# What each layer may import from keyplane, besides itself and keyplane.errors.
ALLOWED = {
    "native": set(),
    "hsm": {"native"},
    "policy": set(),
    "storage": set(),
    "kms": {"policy", "storage", "hsm"},
    "api": {"kms"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("keyplane")}


def test_layers_import_only_downwards():
    checked = 0
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py") if (SRC / layer).exists() else []:
            for name in _imports(path):
                parts = name.split(".")
                if len(parts) < 2 or parts[1] in (layer, "errors"):
                    continue
                assert parts[1] in allowed, f"{path.relative_to(SRC)} imports {name}"
            checked += 1
    assert checked >= 7  # every module of the layers that exist so far


def test_errors_imports_nothing_of_keyplane():
    assert _imports(SRC / "errors.py") == set()


def test_nothing_uses_hazmat():
    for path in SRC.rglob("*.py"):
        if path.name == "hazmat.py":
            continue
        assert not any("hazmat" in name for name in _imports(path)), path
        assert "kp_hazmat" not in path.read_text(), path
