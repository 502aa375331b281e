"""Key operations: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey,
ScheduleKeyDeletion, CancelKeyDeletion, UpdateKeyDescription."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Final

from keyplane.errors import (
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.kms._arn import is_key_id, key_arn
from keyplane.kms._model import (
    ENCRYPT_DECRYPT,
    ORIGIN_AWS_CLOUDHSM,
    ORIGIN_AWS_KMS,
    ORIGIN_EXTERNAL,
    SYMMETRIC_DEFAULT,
    KmsKey,
    material_context,
)
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import KeyState, Op, require
from keyplane.kms.ops import custom_key_stores
from keyplane.kms.ops._paging import page
from keyplane.kms.ops.policies import checked_policy
from keyplane.kms.ops.tags import check_tags, request_tag_values
from keyplane.storage import MaterialRecord

DAY_SECONDS: Final = 86400.0
# AWS KMS Developer Guide, "Deleting AWS KMS keys": the waiting period is 7 to 30 days.
MIN_PENDING_DAYS: Final = 7
MAX_PENDING_DAYS: Final = 30
DEFAULT_PENDING_DAYS: Final = 30
DEFAULT_LIST_LIMIT: Final = 100


def default_policy(account: str) -> str:
    """AWS's default key policy: the account root may do everything, which is what
    lets the account's IAM policies govern the key (AWS KMS Developer Guide, "Default
    key policy")."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


async def create_key(
    svc: KmsService,
    ctx: RequestContext,
    *,
    description: str = "",
    key_usage: str | None = None,
    key_spec: str | None = None,
    origin: str | None = None,
    policy: str | None = None,
    tags: Mapping[str, str] | None = None,
    custom_key_store_id: str | None = None,
    multi_region: bool = False,
    bypass_policy_lockout_safety_check: bool = False,
) -> KmsKey:
    """AWS CreateKey, for symmetric encryption keys generated in the shared fleet.

    Raises:
        ValidationError: a key usage that does not fit the key spec.
        UnsupportedOperationError: a key spec, origin or option keyplane lacks so far.
        TagError: a malformed or reserved tag.
        AccessDeniedError: the caller may not create keys (or tag them).
        MalformedPolicyDocumentError: a bad policy, or one that locks the caller out.
    """
    spec = key_spec or SYMMETRIC_DEFAULT
    usage = key_usage or ENCRYPT_DECRYPT
    tag_values = request_tag_values(tags or {})
    svc.access.check_account(
        ctx,
        "kms:CreateKey",
        values={
            "kms:keyspec": spec,
            "kms:keyusage": usage,
            "kms:keyorigin": origin or ORIGIN_AWS_KMS,
            "kms:multiregion": multi_region,
            **tag_values,
        },
    )
    if tags:
        # AWS: tagging a key as it is created needs kms:TagResource as well.
        svc.access.check_account(ctx, "kms:TagResource", values=tag_values)
    if spec != SYMMETRIC_DEFAULT:
        raise UnsupportedOperationError(
            f"KeySpec {spec} is not supported by keyplane yet."
        )
    if usage != ENCRYPT_DECRYPT:
        raise ValidationError(f"KeyUsage {usage} is not compatible with KeySpec {spec}")
    origin = origin or ORIGIN_AWS_KMS
    if multi_region:
        raise UnsupportedOperationError(
            "Multi-Region keys are not supported by keyplane yet."
        )
    # --- origin EXTERNAL (imported material): see keyplane.kms.ops.imports
    external = origin == ORIGIN_EXTERNAL
    # --- origin AWS_CLOUDHSM (custom key stores): see ops.custom_key_stores
    store = None
    if origin == ORIGIN_AWS_CLOUDHSM or custom_key_store_id is not None:
        store = custom_key_stores.store_for_new_key(
            svc, ctx, origin, custom_key_store_id
        )
    elif origin not in (ORIGIN_AWS_KMS, ORIGIN_EXTERNAL):
        raise UnsupportedOperationError(
            f"Origin {origin} is not supported by keyplane."
        )
    tag_map = dict(tags or {})
    check_tags(tag_map)

    partition = (
        custom_key_stores.partition_of(svc, store)
        if store is not None
        else await svc.partition_for(ctx.account)
    )
    key_id = str(uuid.uuid4())
    key = KmsKey(
        key_id=key_id,
        account=ctx.account,
        region=svc.region,
        arn=key_arn(svc.region, ctx.account, key_id),
        partition=partition,
        created_at=svc.clock(),
        # An imported key has no material until ImportKeyMaterial gives it some.
        state=KeyState.PENDING_IMPORT if external else KeyState.ENABLED,
        description=description,
        key_usage=usage,
        key_spec=spec,
        origin=origin,
        policy=policy or default_policy(ctx.account),
        tags=tag_map,
    )
    if policy is not None:
        key.parsed_policy = checked_policy(
            svc,
            ctx,
            key,
            policy,
            bypass_lockout_check=bypass_policy_lockout_safety_check,
        )
    if store is not None:
        return await custom_key_stores.create_key_in_store(svc, key, store)
    if external:
        await svc.write(svc.store.create_key, key.record(), None)
        svc.keys[key_id] = key
        return key
    slot = partition.generate_key()
    try:
        material = MaterialRecord(
            key_id,
            1,
            partition.export_key(slot, material_context(key_id, 1)),
            key.created_at,
        )
        await svc.write(svc.store.create_key, key.record(), material)
    except BaseException:
        partition.destroy_key(slot)
        raise
    key.versions.append(slot)
    svc.keys[key_id] = key
    return key


def describe_key(svc: KmsService, ctx: RequestContext, key_id: str) -> KmsKey:
    """AWS DescribeKey: any state, by key id, key ARN, alias name or alias ARN."""
    key = svc.authorized(ctx, "kms:DescribeKey", key_id)
    require(key.state, Op.DESCRIBE, key.arn)
    return key


def list_keys(
    svc: KmsService, ctx: RequestContext, limit: int | None, marker: str | None
) -> tuple[list[KmsKey], str | None]:
    """AWS ListKeys: the account's keys in this region, ordered by key id.

    Returns:
        The page of keys, and the marker for the next page (None on the last page).

    Raises:
        InvalidMarkerError: a marker this service did not issue.
    """
    svc.access.check_account(ctx, "kms:ListKeys")
    keys = sorted(
        (
            k
            for k in svc.keys.values()
            if k.account == ctx.account and k.region == svc.region
        ),
        key=lambda k: k.key_id,
    )
    return page(
        keys, limit or DEFAULT_LIST_LIMIT, marker, lambda k: k.key_id, is_key_id
    )


async def enable_key(svc: KmsService, ctx: RequestContext, key_id: str) -> None:
    """AWS EnableKey."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:EnableKey", key_id, aliases=False)
        require(key.state, Op.ENABLE_DISABLE, key.arn)
        await _set_state(svc, key, KeyState.ENABLED)


async def disable_key(svc: KmsService, ctx: RequestContext, key_id: str) -> None:
    """AWS DisableKey."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:DisableKey", key_id, aliases=False)
        require(key.state, Op.ENABLE_DISABLE, key.arn)
        await _set_state(svc, key, KeyState.DISABLED)


async def schedule_key_deletion(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    pending_window_in_days: int | None,
) -> KmsKey:
    """AWS ScheduleKeyDeletion: PendingDeletion for 7-30 days (default 30), after
    which the key and its aliases are deleted.

    Raises:
        ValidationError: a waiting period outside 7-30 days, with AWS's message.
    """
    days = (
        DEFAULT_PENDING_DAYS
        if pending_window_in_days is None
        else pending_window_in_days
    )
    if not MIN_PENDING_DAYS <= days <= MAX_PENDING_DAYS:
        raise ValidationError(
            f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' "
            "failed "
            f"to satisfy constraint: Member must have value "
            + ("greater than or equal to 7" if days < 7 else "less than or equal to 30")
        )
    async with svc.control:
        key = svc.authorized(
            ctx,
            "kms:ScheduleKeyDeletion",
            key_id,
            aliases=False,
            values={"kms:schedulekeydeletionpendingwindowindays": days},
        )
        require(key.state, Op.SCHEDULE_DELETION, key.arn)
        when = svc.clock() + days * DAY_SECONDS
        record = key.record(
            state=KeyState.PENDING_DELETION,
            deletion_date=when,
            pending_window_days=days,
        )
        await svc.write(svc.store.update_key, record)
        key.apply(record)
        return key


async def cancel_key_deletion(
    svc: KmsService, ctx: RequestContext, key_id: str
) -> KmsKey:
    """AWS CancelKeyDeletion: back to Disabled, as AWS does (PendingImport for an
    imported key whose material was deleted meanwhile)."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:CancelKeyDeletion", key_id, aliases=False)
        require(key.state, Op.CANCEL_DELETION, key.arn)
        state = KeyState.PENDING_IMPORT if key.missing_material() else KeyState.DISABLED
        record = key.record(state=state, deletion_date=None, pending_window_days=None)
        await svc.write(svc.store.update_key, record)
        key.apply(record)
        return key


async def update_key_description(
    svc: KmsService, ctx: RequestContext, key_id: str, description: str
) -> None:
    """AWS UpdateKeyDescription."""
    async with svc.control:
        key = svc.authorized(ctx, "kms:UpdateKeyDescription", key_id, aliases=False)
        require(key.state, Op.TAG, key.arn)
        record = key.record(description=description)
        await svc.write(svc.store.update_key, record)
        key.apply(record)


async def _set_state(svc: KmsService, key: KmsKey, state: KeyState) -> None:
    if key.state is state:
        return
    record = key.record(state=state)
    await svc.write(svc.store.update_key, record)
    key.apply(record)
