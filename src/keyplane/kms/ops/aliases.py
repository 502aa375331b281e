"""Alias operations: CreateAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

from typing import Final

from keyplane.errors import AlreadyExistsError, NotFoundError, ValidationError
from keyplane.kms._arn import alias_arn, check_alias_name
from keyplane.kms._model import Alias
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms._state import Op, require
from keyplane.kms.ops._paging import page

DEFAULT_LIST_LIMIT: Final = 50


async def create_alias(
    svc: KmsService, ctx: RequestContext, alias_name: str, target_key_id: str
) -> None:
    """AWS CreateAlias: the target must be a key (not an alias) of the caller's account.

    Raises:
        InvalidAliasNameError: a malformed name or one in ``alias/aws/``.
        AlreadyExistsError: the alias exists.
    """
    check_alias_name(alias_name)
    # AWS asks twice: may the caller create this alias (IAM), and may it point an
    # alias at this key (the key's policy).
    svc.access.check_account(
        ctx, "kms:CreateAlias", alias_arn(svc.region, ctx.account, alias_name)
    )
    async with svc.control:
        key = svc.authorized(ctx, "kms:CreateAlias", target_key_id, aliases=False)
        require(key.state, Op.CREATE_ALIAS, key.arn)
        index = (ctx.account, svc.region, alias_name)
        if index in svc.aliases:
            raise AlreadyExistsError(
                "An alias with the name "
                f"{alias_arn(svc.region, ctx.account, alias_name)}"
                " already exists"
            )
        now = svc.clock()
        alias = Alias(alias_name, ctx.account, svc.region, key.key_id, now, now)
        await svc.write(svc.store.put_alias, alias.record())
        svc.aliases[index] = alias


async def update_alias(
    svc: KmsService, ctx: RequestContext, alias_name: str, target_key_id: str
) -> None:
    """AWS UpdateAlias: point an existing alias at another key of the same type.
    The caller needs kms:UpdateAlias on the alias, the old key and the new key."""
    svc.access.check_account(
        ctx, "kms:UpdateAlias", alias_arn(svc.region, ctx.account, alias_name)
    )
    async with svc.control:
        index = (ctx.account, svc.region, alias_name)
        alias = svc.aliases.get(index)
        if alias is None:
            raise NotFoundError(
                f"Alias {alias_arn(svc.region, ctx.account, alias_name)} is not found."
            )
        key = svc.authorized(ctx, "kms:UpdateAlias", target_key_id, aliases=False)
        require(key.state, Op.UPDATE_ALIAS_TARGET, key.arn)
        current = svc.keys.get(alias.key_id)
        if current is not None:
            svc.access.check_key(ctx, "kms:UpdateAlias", current)
        if current is not None and (current.key_usage, current.key_spec) != (
            key.key_usage,
            key.key_spec,
        ):
            raise ValidationError(
                "Alias can only be updated to a key with the same key usage and key "
                "spec"
            )
        updated = Alias(
            alias.name,
            alias.account,
            alias.region,
            key.key_id,
            alias.created_at,
            svc.clock(),
        )
        await svc.write(svc.store.put_alias, updated.record())
        svc.aliases[index] = updated


async def delete_alias(svc: KmsService, ctx: RequestContext, alias_name: str) -> None:
    """AWS DeleteAlias: needs kms:DeleteAlias on the alias and on its key."""
    svc.access.check_account(
        ctx, "kms:DeleteAlias", alias_arn(svc.region, ctx.account, alias_name)
    )
    async with svc.control:
        index = (ctx.account, svc.region, alias_name)
        alias = svc.aliases.get(index)
        if alias is None:
            raise NotFoundError(
                f"Alias {alias_arn(svc.region, ctx.account, alias_name)} is not found."
            )
        key = svc.keys.get(alias.key_id)
        if key is not None:
            svc.access.check_key(ctx, "kms:DeleteAlias", key)
        await svc.write(svc.store.delete_alias, *index)
        del svc.aliases[index]


def list_aliases(
    svc: KmsService,
    ctx: RequestContext,
    key_id: str | None,
    limit: int | None,
    marker: str | None,
) -> tuple[list[Alias], str | None]:
    """AWS ListAliases: the account's aliases, or those of one key, by name."""
    svc.access.check_account(ctx, "kms:ListAliases")
    aliases = [
        a
        for a in svc.aliases.values()
        if a.account == ctx.account and a.region == svc.region
    ]
    if key_id is not None:
        key = svc.resolve(ctx, key_id, aliases=False)
        if key.account != ctx.account:
            # Not a cross-account operation: another account's key is, to this
            # caller, as absent as one that does not exist.
            raise NotFoundError(f"Key '{key.arn}' does not exist")
        aliases = [a for a in aliases if a.key_id == key.key_id]
    aliases.sort(key=lambda a: a.name)
    return page(
        aliases,
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda a: a.name,
        lambda m: m.startswith("alias/"),
    )
