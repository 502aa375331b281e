"""Tag operations: TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from keyplane.errors import LimitExceededError, TagError
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import Op, require
from keyplane.kms.ops._paging import page

# AWS KMS Developer Guide, "Tagging keys" and the resource quotas: tag keys starting
# with "aws:" are reserved, and a key carries at most 50 tags.
RESERVED_PREFIX: Final = "aws:"
MAX_TAGS: Final = 50
DEFAULT_LIST_LIMIT: Final = 50


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuse reserved tag keys and more tags than a key may carry.

    Raises:
        TagError: a tag key in the reserved ``aws:`` space.
        LimitExceededError: more than 50 tags.
    """
    for key in tags:
        if key.lower().startswith(RESERVED_PREFIX):
            raise TagError("Tag keys beginning with aws: are reserved for AWS use")
    if len(tags) > MAX_TAGS:
        raise LimitExceededError(f"A key can have at most {MAX_TAGS} tags")


def request_tag_values(tags: Mapping[str, str]) -> dict[str, object]:
    """The aws:RequestTag/<key> and aws:TagKeys condition keys of a request."""
    values: dict[str, object] = {
        f"aws:requesttag/{k.lower()}": v for k, v in tags.items()
    }
    values["aws:tagkeys"] = list(tags)
    return values


async def tag_resource(
    svc: KmsService, ctx: RequestContext, key_id: str, tags: Mapping[str, str]
) -> None:
    """AWS TagResource: adds tags, replacing the value of a key already present."""
    async with svc.control:
        key = svc.authorized(
            ctx,
            "kms:TagResource",
            key_id,
            aliases=False,
            values=request_tag_values(tags),
        )
        require(key.state, Op.TAG, key.arn)
        merged = {**key.tags, **tags}
        check_tags(merged)
        record = key.record(tags=merged)
        await svc.write(svc.store.update_key, record)
        key.apply(record)


async def untag_resource(
    svc: KmsService, ctx: RequestContext, key_id: str, tag_keys: Sequence[str]
) -> None:
    """AWS UntagResource: removing a tag that is not there is not an error."""
    async with svc.control:
        key = svc.authorized(
            ctx,
            "kms:UntagResource",
            key_id,
            aliases=False,
            values={"aws:tagkeys": list(tag_keys)},
        )
        require(key.state, Op.TAG, key.arn)
        remaining = {k: v for k, v in key.tags.items() if k not in set(tag_keys)}
        record = key.record(tags=remaining)
        await svc.write(svc.store.update_key, record)
        key.apply(record)


def list_resource_tags(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str,
    limit: int | None,
    marker: str | None,
) -> tuple[list[tuple[str, str]], str | None]:
    """AWS ListResourceTags, ordered by tag key."""
    key = svc.authorized(ctx, "kms:ListResourceTags", key_id, aliases=False)
    require(key.state, Op.DESCRIBE, key.arn)
    return page(
        sorted(key.tags.items()),
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda tag: tag[0],
    )
