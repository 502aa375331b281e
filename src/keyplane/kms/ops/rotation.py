"""Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
RotateKeyOnDemand, ListKeyRotations, and the automatic rotation sweep.

A rotation adds a material version: the newest encrypts, every version decrypts, and
the key's id, ARN, aliases, policy and grants stay as they are. The new version's
material and the key's rotation record are committed in one transaction, so a crash
leaves either both or neither. AWS KMS Developer Guide, "Rotating AWS KMS keys", and
the API reference of each operation give the rules followed here.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

from keyplane.errors import (
    ConflictError,
    KeyplaneError,
    KeyStateError,
    LimitExceededError,
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.kms._model import (
    ORIGIN_AWS_KMS,
    ORIGIN_EXTERNAL,
    SYMMETRIC_DEFAULT,
    KmsKey,
    material_context,
)
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import KeyState, Op, require
from keyplane.kms.ops._paging import page
from keyplane.storage import MaterialRecord

_log = logging.getLogger(__name__)

DAY_SECONDS: Final = 86400.0
MIN_PERIOD_DAYS: Final = 90
MAX_PERIOD_DAYS: Final = 2560
DEFAULT_PERIOD_DAYS: Final = 365
# RotateKeyOnDemand's API reference: an automatic rotation running, or due within 20
# minutes, refuses an on-demand one.
CONFLICT_WINDOW_SECONDS: Final = 20 * 60.0
AUTOMATIC: Final = "AUTOMATIC"
ON_DEMAND: Final = "ON_DEMAND"
ALL_KEY_MATERIAL: Final = "ALL_KEY_MATERIAL"
DEFAULT_LIST_LIMIT: Final = 100


@dataclass(frozen=True, slots=True)
class RotationEntry:
    """One row of ListKeyRotations: a material version and how it came to be."""

    key: KmsKey
    version: int
    date: float | None
    rotation_type: str | None

    @property
    def current(self) -> bool:
        return self.version == self.key.current_version

    @property
    def state(self) -> str:
        """KeyMaterialState: imported material waiting for RotateKeyOnDemand is
        PENDING_ROTATION."""
        if self.version > self.key.current_version:
            return "PENDING_ROTATION"
        return "CURRENT" if self.current else "NON_CURRENT"


def _rotatable(key: KmsKey, *, on_demand: bool = False) -> None:
    """Refuse keys AWS does not rotate (EnableKeyRotation's API reference); with
    ``on_demand``, keys with imported material rotate too (RotateKeyOnDemand's and
    ListKeyRotations' current API reference: to new material imported beforehand).

    Raises:
        UnsupportedOperationError: with AWS's message.
    """
    allowed = (ORIGIN_AWS_KMS, ORIGIN_EXTERNAL) if on_demand else (ORIGIN_AWS_KMS,)
    if key.origin not in allowed:
        raise UnsupportedOperationError(
            f"{key.arn} origin is {key.origin} which is not valid for this operation."
        )
    if key.key_spec != SYMMETRIC_DEFAULT:
        raise UnsupportedOperationError(
            f"{key.arn} key spec is {key.key_spec} which is not valid for this "
            "operation."
        )


async def enable_key_rotation(
    svc: KmsService, ctx: RequestContext, key_id: str, period_days: int | None
) -> KmsKey:
    """AWS EnableKeyRotation: rotate every ``period_days`` (default 365), the first
    time that long after now; a new period on an enabled key counts from its last
    automatic rotation (or from when rotation was turned on).

    Raises:
        ValidationError: a period outside 90..2560 days.
        UnsupportedOperationError: a key AWS does not rotate.
    """
    days = DEFAULT_PERIOD_DAYS if period_days is None else period_days
    if not MIN_PERIOD_DAYS <= days <= MAX_PERIOD_DAYS:
        raise ValidationError(
            f"1 validation error detected: Value '{days}' at 'rotationPeriodInDays' "
            "failed to satisfy constraint: Member must have value "
            + (
                f"greater than or equal to {MIN_PERIOD_DAYS}"
                if days < MIN_PERIOD_DAYS
                else f"less than or equal to {MAX_PERIOD_DAYS}"
            )
        )
    async with svc.control:
        key = svc.authorized(
            ctx,
            "kms:EnableKeyRotation",
            key_id,
            aliases=False,
            values={"kms:rotationperiodindays": days},
        )
        require(key.state, Op.ROTATION, key.arn)
        _rotatable(key)
        now = svc.clock()
        if key.rotation_enabled and key.rotation_enabled_at is not None:
            since = max(key.rotation_enabled_at, _last_automatic(key) or 0.0)
            enabled_at, next_date = key.rotation_enabled_at, since + days * DAY_SECONDS
        else:
            enabled_at, next_date = now, now + days * DAY_SECONDS
        record = key.record(
            rotation_enabled=True,
            rotation_period_days=days,
            rotation_enabled_at=enabled_at,
            next_rotation_date=next_date,
        )
        await svc.write(svc.store.update_key, record)
        key.apply(record)
        return key


def _last_automatic(key: KmsKey) -> float | None:
    dates = [r["date"] for r in key.rotations if r["type"] == AUTOMATIC]
    return dates[-1] if dates else None


async def disable_key_rotation(
    svc: KmsService, ctx: RequestContext, key_id: str
) -> None:
    """AWS DisableKeyRotation."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:DisableKeyRotation", key_id, aliases=False)
        require(key.state, Op.ROTATION, key.arn)
        _rotatable(key)
        record = key.record(
            rotation_enabled=False,
            rotation_period_days=None,
            rotation_enabled_at=None,
            next_rotation_date=None,
        )
        await svc.write(svc.store.update_key, record)
        key.apply(record)


def get_key_rotation_status(
    svc: KmsService, ctx: RequestContext, key_id: str
) -> KmsKey:
    """AWS GetKeyRotationStatus: the key, whose rotation fields say it all."""
    key = svc.authorized(ctx, "kms:GetKeyRotationStatus", key_id, aliases=False)
    require(key.state, Op.DESCRIBE, key.arn)
    _rotatable(key)
    return key


async def rotate_key_on_demand(
    svc: KmsService, ctx: RequestContext, key_id: str
) -> KmsKey:
    """AWS RotateKeyOnDemand: a new material version now, leaving the automatic
    schedule where it was.

    Raises:
        LimitExceededError: the key has had its allowed on-demand rotations.
        ConflictError: an automatic rotation is due within 20 minutes.
    """
    async with svc.control:
        key = svc.authorized(ctx, "kms:RotateKeyOnDemand", key_id, aliases=False)
        require(key.state, Op.ROTATION, key.arn)
        _rotatable(key, on_demand=True)
        if key.origin == ORIGIN_EXTERNAL and not key.pending_rotation:
            raise KeyStateError(
                f"{key.arn} has no key material in PENDING_ROTATION state. Import new "
                "key material (ImportType NEW_KEY_MATERIAL) before rotating the key."
            )
        done = sum(1 for r in key.rotations if r["type"] == ON_DEMAND)
        if done >= svc.on_demand_rotation_limit:
            raise LimitExceededError(
                f"{key.arn} has already been rotated on demand "
                f"{svc.on_demand_rotation_limit} times, the most a key may be."
            )
        now = svc.clock()
        if (
            key.next_rotation_date is not None
            and key.next_rotation_date - now <= CONFLICT_WINDOW_SECONDS
        ):
            raise ConflictError(
                f"An automatic rotation of {key.arn} is in progress or scheduled to "
                "begin within the next 20 minutes."
            )
        if key.origin == ORIGIN_EXTERNAL:
            await _rotate_to_imported(svc, key, now)
        else:
            await rotate(svc, key, ON_DEMAND, now)
        return key


async def _rotate_to_imported(svc: KmsService, key: KmsKey, now: float) -> None:
    """Make the imported material that waits for rotation current: it was stored
    when it was imported, so only the key's record changes."""
    version = len(key.versions)
    record = key.record(
        pending_rotation=False,
        rotations=[
            *key.rotations,
            {"version": version, "date": now, "type": ON_DEMAND},
        ],
    )
    await svc.write(svc.store.update_key, record)
    key.apply(record)


def list_key_rotations(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    include: str | None,
    limit: int | None,
    marker: str | None,
) -> tuple[list[RotationEntry], str | None]:
    """AWS ListKeyRotations: the rotations, oldest first; with ALL_KEY_MATERIAL every
    material version, including those no rotation made (the first, and imported
    material waiting for rotation)."""
    key = svc.authorized(ctx, "kms:ListKeyRotations", key_id, aliases=False)
    require(key.state, Op.DESCRIBE, key.arn)
    _rotatable(key, on_demand=True)
    rotated = {r["version"]: r for r in key.rotations}
    versions = (
        range(1, len(key.versions) + 1)
        if include == ALL_KEY_MATERIAL
        else sorted(rotated)
    )
    entries = [
        RotationEntry(
            key,
            v,
            rotated[v]["date"] if v in rotated else None,
            rotated[v]["type"] if v in rotated else None,
        )
        for v in versions
    ]
    # Markers are zero-padded versions, so that they sort as the versions do.
    return page(
        entries,
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda e: f"{e.version:08d}",
        lambda m: len(m) == 8 and m.isdigit(),
    )


async def rotate(svc: KmsService, key: KmsKey, rotation_type: str, now: float) -> None:
    """Add a material version made in the key's partition; the caller holds
    ``svc.control``. An automatic rotation also moves the next rotation date on by
    whole periods past now, so a server that was down for several periods rotates
    once, not once per missed period."""
    version = key.current_version + 1
    slot = key.partition.generate_key()
    try:
        material = MaterialRecord(
            key.key_id,
            version,
            key.partition.export_key(slot, material_context(key.key_id, version)),
            now,
        )
        changes: dict[str, Any] = {
            "rotations": [
                *key.rotations,
                {"version": version, "date": now, "type": rotation_type},
            ]
        }
        if rotation_type == AUTOMATIC and key.next_rotation_date is not None:
            period = (key.rotation_period_days or DEFAULT_PERIOD_DAYS) * DAY_SECONDS
            next_date = key.next_rotation_date + period
            while next_date <= now:
                next_date += period
            changes["next_rotation_date"] = next_date
        record = key.record(**changes)
        await svc.write(svc.store.add_material, material, record)
    except BaseException:
        # A slot the store never took is destroyed; if that fails too, the first
        # error is the one to report.
        with contextlib.suppress(KeyplaneError):
            key.partition.destroy_key(slot)
        raise
    key.versions.append(slot)
    key.apply(record)


async def sweep_rotations(svc: KmsService) -> int:
    """Rotate every enabled key whose next rotation date has come.

    Returns:
        How many keys were rotated.
    """
    rotated = 0
    for key in [k for k in svc.keys.values() if _rotation_due(svc, k)]:
        async with svc.control:
            # Look again under the lock: the key may have been disabled, deleted or
            # re-timed while this sweep waited.
            if svc.keys.get(key.key_id) is not key or not _rotation_due(svc, key):
                continue
            await rotate(svc, key, AUTOMATIC, svc.clock())
            rotated += 1
            _log.info(
                "rotated key %s automatically to material version %d",
                key.key_id,
                key.current_version,
            )
    return rotated


def _rotation_due(svc: KmsService, key: KmsKey) -> bool:
    # AWS rotates only enabled keys; a disabled one is rotated once re-enabled.
    return (
        key.rotation_enabled
        and key.state is KeyState.ENABLED
        and key.next_rotation_date is not None
        and key.next_rotation_date <= svc.clock()
    )
