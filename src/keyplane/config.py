"""Configuration: one TOML file, then environment variables, then command-line flags.

Every setting has a default good for local development, so ``keyplane serve`` with no
file works. ``keyplane serve --help`` lists the settings; docs/configuration.md
explains them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from keyplane.errors import ValidationError

DEFAULT_PORT: Final = 4599
DEFAULT_ACCOUNT: Final = "111122223333"
DEFAULT_REGION: Final = "us-east-1"

# Environment variable -> (section, setting).
ENVIRONMENT: Final = {
    "KEYPLANE_HOST": ("server", "host"),
    "KEYPLANE_PORT": ("server", "port"),
    "KEYPLANE_DATA_DIR": ("store", "data_dir"),
    "KEYPLANE_ACCOUNT": ("service", "account"),
    "KEYPLANE_REGION": ("service", "region"),
    "KEYPLANE_LOG_LEVEL": ("logging", "level"),
    "KEYPLANE_ACCESS_LOG": ("logging", "access_log"),
}


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: Path(".keyplane"))
    account: str = DEFAULT_ACCOUNT
    region: str = DEFAULT_REGION
    log_level: str = "INFO"
    access_log: bool = True

    @property
    def database(self) -> Path:
        return self.data_dir / "keyplane.db"

    @property
    def root_key_file(self) -> Path:
        return self.data_dir / "root.key"


def load(
    path: Path | None, environ: Mapping[str, str] = os.environ, **overrides: Any
) -> Config:
    """The configuration from ``path`` (if any), the environment, and ``overrides``.

    Raises:
        ValidationError: an unreadable file, an unknown setting or a bad value.
    """
    sections: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            sections = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValidationError(f"cannot read configuration {path}: {exc}") from exc
    for variable, (section, name) in ENVIRONMENT.items():
        if variable in environ:
            sections.setdefault(section, {})[name] = environ[variable]
    flat = {
        "host": _get(sections, "server", "host", str),
        "port": _get(sections, "server", "port", int),
        "data_dir": _get(sections, "store", "data_dir", Path),
        "account": _get(sections, "service", "account", str),
        "region": _get(sections, "service", "region", str),
        "log_level": _get(sections, "logging", "level", str),
        "access_log": _get(sections, "logging", "access_log", _boolean),
    }
    config = replace(Config(), **{k: v for k, v in flat.items() if v is not None})
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    _check(config)
    return config


def _get(
    sections: dict[str, dict[str, Any]], section: str, name: str, kind: Any
) -> Any:
    value = sections.get(section, {}).get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"setting {section}.{name}: {exc}") from exc


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _check(config: Config) -> None:
    if not re.fullmatch(r"\d{12}", config.account):
        raise ValidationError(
            f"service.account must be 12 digits, not {config.account!r}"
        )
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", config.region):
        raise ValidationError(f"service.region is not a region name: {config.region!r}")
    if not 0 <= config.port <= 65535:
        raise ValidationError(f"server.port out of range: {config.port}")
