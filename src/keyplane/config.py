"""Configuration: one TOML file, then environment variables, then command-line flags.

Every setting has a default good for local development, so ``keyplane serve`` with no
file works. ``keyplane serve --help`` lists the settings; docs/configuration.md
explains them.
"""

from __future__ import annotations

import json
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
    "KEYPLANE_AUTH": ("auth", "mode"),
    "KEYPLANE_ADJUSTABLE_CLOCK": ("clock", "adjustable"),
    "KEYPLANE_QUOTAS": ("quotas", "enabled"),
}

# How requests prove who sent them. "off" exists only so tests and benchmarks can
# measure what authentication costs: every request then acts as the service account's
# root, which can do anything.
AUTH_MODES: Final = ("sigv4", "off")

# IAM's rules: user and role names are 1-64 of these characters; access key ids are
# upper-case letters and digits, 16-128 of them.
_PRINCIPAL_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


@dataclass(frozen=True, slots=True)
class AccessKey:
    id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PrincipalConfig:
    """An IAM user or role: its access keys and its identity policies (name, JSON)."""

    account: str
    kind: str  # "user" or "role"
    name: str
    access_keys: tuple[AccessKey, ...] = ()
    policies: tuple[tuple[str, str], ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """An account, the access keys of its root user, and its users and roles."""

    id: str
    root_access_keys: tuple[AccessKey, ...] = ()
    principals: tuple[PrincipalConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """``[quotas]``: request quotas per account (keyplane.kms._quota meters them).

    Attributes:
        enabled: False switches every quota off.
        rates: (quota name, requests per second) for every account; a quota not named
            here gets AWS's default for the service's region; 0 means unlimited.
        accounts: (account id, its own rates) for the accounts that differ.
    """

    enabled: bool = True
    rates: tuple[tuple[str, float], ...] = ()
    accounts: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``[[clusters]]``: an emulated CloudHSM cluster for custom key stores.

    Attributes:
        id: The cluster id, ``cluster-`` and 11 to 16 base32 characters.
        trust_anchor: The text of its trust anchor certificate (customerCA.crt).
        account: The account that owns it; None for the service's account.
        hsm_count: Active HSMs (0 to 28); key stores need 2 to create keys.
        kmsuser_password: The password of its ``kmsuser`` crypto user; None for a
            cluster without one (connecting then fails with USER_NOT_FOUND).
        extra_latency_ms: Added to every round trip to the cluster.
        capacity_per_second: At most this many cryptographic operations a second
            (0: as fast as the host allows).
        backup_of: A cluster this one was restored from a backup of: it shares that
            cluster's backup history, users and keys.
    """

    id: str
    trust_anchor: str
    account: str | None = None
    hsm_count: int = 2
    kmsuser_password: str | None = field(default=None, repr=False)
    extra_latency_ms: float = 0.0
    capacity_per_second: float = 0.0
    backup_of: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: Path(".keyplane"))
    account: str = DEFAULT_ACCOUNT
    region: str = DEFAULT_REGION
    log_level: str = "INFO"
    access_log: bool = True
    auth: str = "sigv4"
    # A testing aid: KeyplaneService.AdvanceClock may move the service's clock.
    adjustable_clock: bool = False
    # RotateKeyOnDemand's API reference: 25 on-demand rotations per key.
    on_demand_rotation_limit: int = 25
    # What clients may hold of the server (keyplane.api.server.Limits explains each).
    max_connections: int = 4096
    max_in_flight: int = 16384
    header_timeout: float = 10.0
    request_timeout: float = 60.0
    idle_timeout: float = 120.0
    # Empty means development mode: one account (``account``) with an admin user whose
    # access key is created on first start (see keyplane.identities).
    accounts: tuple[AccountConfig, ...] = ()
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    # Custom key stores: the clusters that may back them, each store's request quota
    # (AWS: 1,800 a second for a CloudHSM key store; 0 for none), and how long
    # ConnectCustomKeyStore takes to connect.
    clusters: tuple[ClusterConfig, ...] = ()
    custom_key_store_quota: float = 1800.0
    custom_key_store_connect_seconds: float = 0.5

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
        "auth": _get(sections, "auth", "mode", str),
        "adjustable_clock": _get(sections, "clock", "adjustable", _boolean),
        "on_demand_rotation_limit": _get(
            sections, "service", "on_demand_rotation_limit", int
        ),
        "max_connections": _get(sections, "server", "max_connections", int),
        "max_in_flight": _get(sections, "server", "max_in_flight", int),
        "header_timeout": _get(sections, "server", "header_timeout", float),
        "request_timeout": _get(sections, "server", "request_timeout", float),
        "idle_timeout": _get(sections, "server", "idle_timeout", float),
        "accounts": _accounts(sections.get("accounts")),
        "quotas": _quotas(sections.get("quotas")),
        "clusters": _clusters(
            sections.get("clusters"), path.parent if path is not None else Path(".")
        ),
        "custom_key_store_quota": _get(
            sections, "custom_key_stores", "request_quota", float
        ),
        "custom_key_store_connect_seconds": _get(
            sections, "custom_key_stores", "connect_seconds", float
        ),
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


def _accounts(raw: Any) -> tuple[AccountConfig, ...] | None:
    """``[[accounts]]`` tables: id, root_access_keys, and ``[[accounts.principals]]``
    with type ("user" or "role"), name, access_keys and policies."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValidationError("accounts must be an array of tables ([[accounts]])")
    accounts = []
    for entry in raw:
        _only(entry, "accounts", {"id", "root_access_keys", "principals"})
        account = str(entry.get("id", ""))
        if not re.fullmatch(r"\d{12}", account):
            raise ValidationError(f"accounts.id must be 12 digits, not {account!r}")
        principals = []
        for item in _tables(entry.get("principals", []), "accounts.principals"):
            _only(
                item, "accounts.principals", {"type", "name", "access_keys", "policies"}
            )
            kind = item.get("type", "user")
            name = item.get("name")
            if kind not in ("user", "role"):
                raise ValidationError(
                    f"accounts.principals.type must be user or role, not {kind!r}"
                )
            if not isinstance(name, str) or not _PRINCIPAL_NAME.fullmatch(name):
                raise ValidationError(f"accounts.principals.name is invalid: {name!r}")
            principals.append(
                PrincipalConfig(
                    account,
                    kind,
                    name,
                    _access_keys(item.get("access_keys", [])),
                    _policies(item.get("policies", [])),
                )
            )
        accounts.append(
            AccountConfig(
                account,
                _access_keys(entry.get("root_access_keys", [])),
                tuple(principals),
            )
        )
    return tuple(accounts)


def _quotas(raw: Any) -> QuotaConfig | None:
    """``[quotas]``: ``enabled``, a rate per quota name, and ``[quotas.accounts.<id>]``
    tables of rates for single accounts. Quota names are checked when the service
    builds its quotas; here, that every rate is a number of requests per second."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError("quotas must be a table ([quotas])")
    table = dict(raw)
    enabled = table.pop("enabled", None)
    try:
        on = True if enabled is None else _boolean(enabled)
    except ValueError as exc:
        raise ValidationError(f"setting quotas.enabled: {exc}") from exc
    accounts = table.pop("accounts", {})
    if not isinstance(accounts, dict):
        raise ValidationError(
            "quotas.accounts must be tables: [quotas.accounts.<account id>]"
        )
    per_account = []
    for account, rates in accounts.items():
        if not re.fullmatch(r"\d{12}", account):
            raise ValidationError(
                f"quotas.accounts: {account!r} is not a 12-digit account id"
            )
        if not isinstance(rates, dict):
            raise ValidationError(f"quotas.accounts.{account} must be a table")
        per_account.append((account, _rates(rates, f"quotas.accounts.{account}")))
    return QuotaConfig(on, _rates(table, "quotas"), tuple(per_account))


def _rates(table: dict[str, Any], where: str) -> tuple[tuple[str, float], ...]:
    rates = []
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(
                f"{where}.{name} must be a number of requests per second, not {value!r}"
            )
        if not 0 <= value < float("inf"):
            raise ValidationError(
                f"{where}.{name} must be 0 (unlimited) or a positive number of "
                f"requests per second, not {value}"
            )
        rates.append((name, float(value)))
    return tuple(rates)


def _tables(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ValidationError(f"{where} must be an array of tables")
    return raw


def _only(table: Any, where: str, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise ValidationError(f"{where} must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ValidationError(f"{where}: unknown setting {sorted(unknown)[0]!r}")


def _access_keys(raw: Any) -> tuple[AccessKey, ...]:
    keys = []
    for item in _tables(raw, "access_keys"):
        _only(item, "access_keys", {"id", "secret"})
        key_id, secret = item.get("id"), item.get("secret")
        if not isinstance(key_id, str) or not _ACCESS_KEY_ID.fullmatch(key_id):
            raise ValidationError(
                f"access key id must be 16-128 upper-case letters or digits: {key_id!r}"
            )
        if not isinstance(secret, str) or not secret:
            raise ValidationError(f"access key {key_id} needs a secret")
        keys.append(AccessKey(key_id, secret))
    return tuple(keys)


def _policies(raw: Any) -> tuple[tuple[str, str], ...]:
    """Identity policies as (name, JSON text); a document may be written as a TOML
    table or as a JSON string. Their content is checked when the server starts."""
    policies = []
    for item in _tables(raw, "policies"):
        _only(item, "policies", {"name", "document"})
        name, document = item.get("name"), item.get("document")
        if not isinstance(name, str) or not name:
            raise ValidationError("every identity policy needs a name")
        if isinstance(document, dict):
            document = json.dumps(document)
        if not isinstance(document, str):
            raise ValidationError(f"policy {name!r} needs a document")
        policies.append((name, document))
    return tuple(policies)


_CLUSTER_ID = re.compile(r"cluster-[2-7a-zA-Z]{11,16}")


def _clusters(raw: Any, base: Path) -> tuple[ClusterConfig, ...] | None:
    """``[[clusters]]`` tables: id, the trust anchor as text
    (``trust_anchor_certificate``) or a file (``trust_anchor_file``, relative to the
    configuration file), account, hsm_count, kmsuser_password, extra_latency_ms,
    capacity_per_second, backup_of."""
    if raw is None:
        return None
    clusters = []
    for entry in _tables(raw, "clusters"):
        _only(
            entry,
            "clusters",
            {
                "id",
                "account",
                "hsm_count",
                "trust_anchor_certificate",
                "trust_anchor_file",
                "kmsuser_password",
                "extra_latency_ms",
                "capacity_per_second",
                "backup_of",
            },
        )
        cluster_id = entry.get("id")
        if not isinstance(cluster_id, str) or not _CLUSTER_ID.fullmatch(cluster_id):
            raise ValidationError(
                "clusters.id looks like cluster-1a23b4cdefg (11 to 16 of a-z, A-Z, "
                f"2-7 after the dash), not {cluster_id!r}"
            )
        where = f"cluster {cluster_id}"
        anchor = entry.get("trust_anchor_certificate")
        anchor_file = entry.get("trust_anchor_file")
        if (anchor is None) == (anchor_file is None):
            raise ValidationError(
                f"{where}: give trust_anchor_certificate or trust_anchor_file"
            )
        if anchor_file is not None:
            try:
                anchor = (base / str(anchor_file)).read_text()
            except OSError as exc:
                raise ValidationError(
                    f"{where}: cannot read trust_anchor_file: {exc}"
                ) from exc
        if not isinstance(anchor, str) or not anchor.strip():
            raise ValidationError(f"{where}: the trust anchor certificate is empty")
        account = entry.get("account")
        if account is not None and not re.fullmatch(r"\d{12}", str(account)):
            raise ValidationError(f"{where}: account must be 12 digits")
        password = entry.get("kmsuser_password")
        if password is not None and (
            not isinstance(password, str) or not 7 <= len(password) <= 32
        ):
            raise ValidationError(
                f"{where}: kmsuser_password must be 7 to 32 characters"
            )
        backup_of = entry.get("backup_of")
        if backup_of is not None and not isinstance(backup_of, str):
            raise ValidationError(f"{where}: backup_of must be a cluster id")
        try:
            clusters.append(
                ClusterConfig(
                    id=cluster_id,
                    trust_anchor=anchor,
                    account=None if account is None else str(account),
                    hsm_count=_whole(entry.get("hsm_count", 2)),
                    kmsuser_password=password,
                    extra_latency_ms=float(entry.get("extra_latency_ms", 0.0)),
                    capacity_per_second=float(entry.get("capacity_per_second", 0.0)),
                    backup_of=backup_of,
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{where}: {exc}") from exc
        if not 0 <= clusters[-1].hsm_count <= 28:
            raise ValidationError(f"{where}: hsm_count must be 0 to 28")
        if clusters[-1].extra_latency_ms < 0 or clusters[-1].capacity_per_second < 0:
            raise ValidationError(
                f"{where}: extra_latency_ms and capacity_per_second must not be "
                "negative"
            )
    ids = [c.id for c in clusters]
    for cluster_id in ids:
        if ids.count(cluster_id) > 1:
            raise ValidationError(f"cluster {cluster_id} is declared twice")
    return tuple(clusters)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"hsm_count must be a whole number, not {value!r}")
    return int(value)


def _check(config: Config) -> None:
    if not re.fullmatch(r"\d{12}", config.account):
        raise ValidationError(
            f"service.account must be 12 digits, not {config.account!r}"
        )
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", config.region):
        raise ValidationError(f"service.region is not a region name: {config.region!r}")
    if not 0 <= config.port <= 65535:
        raise ValidationError(f"server.port out of range: {config.port}")
    for name in ("max_connections", "max_in_flight"):
        if getattr(config, name) < 1:
            raise ValidationError(f"server.{name} must be at least 1")
    for name in ("header_timeout", "request_timeout", "idle_timeout"):
        value = getattr(config, name)
        if not 0 < value < float("inf"):
            raise ValidationError(f"server.{name} must be a positive number of seconds")
    if config.on_demand_rotation_limit < 0:
        raise ValidationError(
            "service.on_demand_rotation_limit must be 0 or more, not "
            f"{config.on_demand_rotation_limit}"
        )
    if config.custom_key_store_quota < 0:
        raise ValidationError("custom_key_stores.request_quota must not be negative")
    if not 0 <= config.custom_key_store_connect_seconds <= 3600:
        raise ValidationError(
            "custom_key_stores.connect_seconds must be 0 to 3600 seconds"
        )
    if config.auth not in AUTH_MODES:
        raise ValidationError(f"auth.mode must be sigv4 or off, not {config.auth!r}")
    seen_accounts: set[str] = set()
    seen_keys: set[str] = set()
    for account in config.accounts:
        if account.id in seen_accounts:
            raise ValidationError(f"account {account.id} is declared twice")
        seen_accounts.add(account.id)
        names: set[str] = set()
        for principal in account.principals:
            if principal.arn in names:
                raise ValidationError(f"{principal.arn} is declared twice")
            names.add(principal.arn)
        every_key = [*account.root_access_keys]
        for principal in account.principals:
            every_key.extend(principal.access_keys)
        for key in every_key:
            if key.id in seen_keys:
                raise ValidationError(f"access key {key.id} is declared twice")
            seen_keys.add(key.id)
