"""Wire requests to KMS operations and results back: the AWS member names live here.

``shapes`` has already checked every member against the model and decoded blobs; each
handler here picks the members its operation takes, calls it with snake_case
arguments, and names the result's members as AWS does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from keyplane.errors import UnsupportedOperationError, ValidationError
from keyplane.kms import (
    ConnectionState,
    CustomKeyStore,
    KeyGrant,
    KeyState,
    KmsKey,
    KmsService,
    RequestContext,
)
from keyplane.kms.ops import (
    aliases,
    crypto,
    custom_key_stores,
    grants,
    imports,
    keys,
    policies,
    rotation,
    tags,
)

Params = Mapping[str, Any]
Result = dict[str, Any]
Handler = Callable[[KmsService, RequestContext, Params], "Result | Awaitable[Result]"]

SYMMETRIC_DEFAULT: Final = "SYMMETRIC_DEFAULT"


def key_metadata(key: KmsKey) -> Result:
    """KeyMetadata as DescribeKey and CreateKey return it for a symmetric key."""
    metadata: Result = {
        "AWSAccountId": key.account,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created_at,
        "Enabled": key.effective_state is KeyState.ENABLED,
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.effective_state.value,
        "Origin": key.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
        "MultiRegion": False,
    }
    if key.current_version:
        metadata["CurrentKeyMaterialId"] = key.material_id(key.current_version)
    expiry = key.material_expiry() if key.origin == "EXTERNAL" else None
    if expiry is not None:
        # AWS: present only for imported keys.
        metadata["ExpirationModel"], valid_to = expiry
        if valid_to is not None:
            metadata["ValidTo"] = valid_to
    if key.key_store is not None:
        metadata["CustomKeyStoreId"] = key.key_store.store_id
        metadata["CloudHsmClusterId"] = key.key_store.cluster_id
    if key.state is KeyState.PENDING_DELETION:
        metadata["DeletionDate"] = key.deletion_date
        metadata["PendingDeletionWindowInDays"] = key.pending_window_days
    return metadata


def _tags(items: list[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in items or ()}


def _no_recipient(params: Params) -> None:
    if params.get("Recipient") is not None:
        raise UnsupportedOperationError(
            "Recipient (Nitro Enclaves attestation) is not supported by keyplane."
        )


def _ciphertext(params: Params) -> bytes:
    """The CiphertextBlob of Decrypt or ReEncrypt.

    The model leaves it optional only for a DryRun whose DryRunModifiers hold
    IGNORE_CIPHERTEXT (AWS KMS API Reference, Decrypt: "required in all cases except
    when DryRun is true and DryRunModifiers is set to IGNORE_CIPHERTEXT"), which
    keyplane does not support; otherwise its absence is the validation error AWS gives
    any missing required member.

    Raises:
        UnsupportedOperationError: no ciphertext, and IGNORE_CIPHERTEXT asked for.
        ValidationError: no ciphertext.
    """
    blob: bytes | None = params.get("CiphertextBlob")
    if blob is not None:
        return blob
    if "IGNORE_CIPHERTEXT" in (params.get("DryRunModifiers") or ()):
        raise UnsupportedOperationError(
            "DryRunModifiers IGNORE_CIPHERTEXT is not supported by keyplane."
        )
    raise ValidationError(
        "1 validation error detected: Value null at 'ciphertextBlob' failed to "
        "satisfy constraint: Member must not be null"
    )


def _page(result: Result, marker: str | None) -> Result:
    result["Truncated"] = marker is not None
    if marker is not None:
        result["NextMarker"] = marker
    return result


# --- keys -----------------------------------------------------------------------------


async def create_key(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    key = await keys.create_key(
        svc,
        ctx,
        description=p.get("Description", ""),
        key_usage=p.get("KeyUsage"),
        key_spec=p.get("KeySpec") or p.get("CustomerMasterKeySpec"),
        origin=p.get("Origin"),
        policy=p.get("Policy"),
        tags=_tags(p.get("Tags")),
        custom_key_store_id=p.get("CustomKeyStoreId"),
        multi_region=bool(p.get("MultiRegion", False)),
        bypass_policy_lockout_safety_check=bool(
            p.get("BypassPolicyLockoutSafetyCheck", False)
        ),
    )
    return {"KeyMetadata": key_metadata(key)}


def describe_key(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    return {"KeyMetadata": key_metadata(keys.describe_key(svc, ctx, p["KeyId"]))}


def list_keys(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    found, marker = keys.list_keys(svc, ctx, p.get("Limit"), p.get("Marker"))
    return _page(
        {"Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in found]}, marker
    )


async def enable_key(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await keys.enable_key(svc, ctx, p["KeyId"])
    return {}


async def disable_key(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await keys.disable_key(svc, ctx, p["KeyId"])
    return {}


async def schedule_key_deletion(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    key = await keys.schedule_key_deletion(
        svc, ctx, p["KeyId"], p.get("PendingWindowInDays")
    )
    return {
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date,
        "KeyState": key.state.value,
        "PendingWindowInDays": key.pending_window_days,
    }


async def cancel_key_deletion(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    key = await keys.cancel_key_deletion(svc, ctx, p["KeyId"])
    return {"KeyId": key.arn}


async def update_key_description(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await keys.update_key_description(svc, ctx, p["KeyId"], p["Description"])
    return {}


# --- aliases --------------------------------------------------------------------------


async def create_alias(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await aliases.create_alias(svc, ctx, p["AliasName"], p["TargetKeyId"])
    return {}


async def update_alias(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await aliases.update_alias(svc, ctx, p["AliasName"], p["TargetKeyId"])
    return {}


async def delete_alias(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await aliases.delete_alias(svc, ctx, p["AliasName"])
    return {}


def list_aliases(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    found, marker = aliases.list_aliases(
        svc, ctx, p.get("KeyId"), p.get("Limit"), p.get("Marker")
    )
    return _page(
        {
            "Aliases": [
                {
                    "AliasName": a.name,
                    "AliasArn": f"arn:aws:kms:{a.region}:{a.account}:{a.name}",
                    "TargetKeyId": a.key_id,
                    "CreationDate": a.created_at,
                    "LastUpdatedDate": a.updated_at,
                }
                for a in found
            ]
        },
        marker,
    )


# --- tags -----------------------------------------------------------------------------


async def tag_resource(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await tags.tag_resource(svc, ctx, p["KeyId"], _tags(p["Tags"]))
    return {}


async def untag_resource(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await tags.untag_resource(svc, ctx, p["KeyId"], p["TagKeys"])
    return {}


def list_resource_tags(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    found, marker = tags.list_resource_tags(
        svc, ctx, p["KeyId"], p.get("Limit"), p.get("Marker")
    )
    return _page({"Tags": [{"TagKey": k, "TagValue": v} for k, v in found]}, marker)


# --- the data plane -------------------------------------------------------------------


async def encrypt(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    sealed = await crypto.encrypt(
        svc,
        ctx,
        key_id=p["KeyId"],
        plaintext=p["Plaintext"],
        encryption_context=p.get("EncryptionContext"),
        encryption_algorithm=p.get("EncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun", False)),
    )
    return {
        "CiphertextBlob": sealed.ciphertext_blob,
        "KeyId": sealed.key.arn,
        "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
    }


async def decrypt(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    _no_recipient(p)
    opened = await crypto.decrypt(
        svc,
        ctx,
        ciphertext_blob=_ciphertext(p),
        encryption_context=p.get("EncryptionContext"),
        key_id=p.get("KeyId"),
        encryption_algorithm=p.get("EncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun", False)),
    )
    return {
        "KeyId": opened.key.arn,
        "Plaintext": opened.plaintext,
        "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
        "KeyMaterialId": opened.key.material_id(opened.version),
    }


async def re_encrypt(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    resealed = await crypto.re_encrypt(
        svc,
        ctx,
        ciphertext_blob=_ciphertext(p),
        destination_key_id=p["DestinationKeyId"],
        source_encryption_context=p.get("SourceEncryptionContext"),
        source_key_id=p.get("SourceKeyId"),
        destination_encryption_context=p.get("DestinationEncryptionContext"),
        source_encryption_algorithm=p.get("SourceEncryptionAlgorithm"),
        destination_encryption_algorithm=p.get("DestinationEncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun", False)),
    )
    return {
        "CiphertextBlob": resealed.ciphertext_blob,
        "SourceKeyId": resealed.source.arn,
        "KeyId": resealed.destination.arn,
        "SourceEncryptionAlgorithm": SYMMETRIC_DEFAULT,
        "DestinationEncryptionAlgorithm": SYMMETRIC_DEFAULT,
        "SourceKeyMaterialId": resealed.source.material_id(resealed.source_version),
        "DestinationKeyMaterialId": resealed.destination.material_id(
            resealed.destination_version
        ),
    }


async def _data_key(
    svc: KmsService, ctx: RequestContext, p: Params, action: str
) -> crypto.DataKey:
    _no_recipient(p)
    return await crypto.generate_data_key(
        svc,
        ctx,
        key_id=p["KeyId"],
        number_of_bytes=p.get("NumberOfBytes"),
        key_spec=p.get("KeySpec"),
        encryption_context=p.get("EncryptionContext"),
        dry_run=bool(p.get("DryRun", False)),
        action=action,
    )


async def generate_data_key(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    data_key = await _data_key(svc, ctx, p, "kms:GenerateDataKey")
    return {
        "CiphertextBlob": data_key.ciphertext_blob,
        "Plaintext": data_key.plaintext,
        "KeyId": data_key.key.arn,
        "KeyMaterialId": data_key.key.material_id(data_key.version),
    }


async def generate_data_key_without_plaintext(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    data_key = await _data_key(svc, ctx, p, "kms:GenerateDataKeyWithoutPlaintext")
    return {
        "CiphertextBlob": data_key.ciphertext_blob,
        "KeyId": data_key.key.arn,
        "KeyMaterialId": data_key.key.material_id(data_key.version),
    }


def generate_random(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result | Awaitable[Result]:
    _no_recipient(p)
    store_id = p.get("CustomKeyStoreId")
    if store_id is not None:
        # From the key store's cluster, on its own worker: a coroutine, where the
        # plain call answers at once.
        return _random_in_store(svc, ctx, store_id, p.get("NumberOfBytes"))
    return {"Plaintext": crypto.generate_random(svc, ctx, p.get("NumberOfBytes"))}


# --- rotation -------------------------------------------------------------------------


async def enable_key_rotation(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await rotation.enable_key_rotation(
        svc, ctx, p["KeyId"], p.get("RotationPeriodInDays")
    )
    return {}


async def disable_key_rotation(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await rotation.disable_key_rotation(svc, ctx, p["KeyId"])
    return {}


def get_key_rotation_status(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    key = rotation.get_key_rotation_status(svc, ctx, p["KeyId"])
    # AWS: a key pending deletion reports rotation off; its setting is kept, and
    # reported again once the deletion is cancelled.
    enabled = key.rotation_enabled and key.state is not KeyState.PENDING_DELETION
    result: Result = {"KeyRotationEnabled": enabled, "KeyId": key.arn}
    if enabled:
        result["RotationPeriodInDays"] = key.rotation_period_days
        result["NextRotationDate"] = key.next_rotation_date
    return result


async def rotate_key_on_demand(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    key = await rotation.rotate_key_on_demand(svc, ctx, p["KeyId"])
    # AWS's examples show the key id here, and in ListKeyRotations' entries.
    return {"KeyId": key.key_id}


def list_key_rotations(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    entries, marker = rotation.list_key_rotations(
        svc,
        ctx,
        p["KeyId"],
        p.get("IncludeKeyMaterial"),
        p.get("Limit"),
        p.get("Marker"),
    )
    rows = []
    for entry in entries:
        row: Result = {
            "KeyId": entry.key.key_id,
            "KeyMaterialId": entry.key.material_id(entry.version),
            "KeyMaterialState": entry.state,
        }
        if entry.date is not None:
            row["RotationDate"] = entry.date
            row["RotationType"] = entry.rotation_type
        if entry.key.origin == "EXTERNAL":
            row.update(_imported_material(entry.key, entry.version))
        rows.append(row)
    return _page({"Rotations": rows}, marker)


def _imported_material(key: KmsKey, version: int) -> Result:
    """The members ListKeyRotations adds for a version of imported material."""
    entry = key.imported[version - 1]
    row: Result = {
        "ImportState": "PENDING_IMPORT"
        if key.versions[version - 1] is None
        else "IMPORTED",
        "ExpirationModel": entry["expiration_model"],
    }
    if entry.get("valid_to") is not None:
        row["ValidTo"] = entry["valid_to"]
    if entry.get("description"):
        row["KeyMaterialDescription"] = entry["description"]
    return row


# --- imported key material ------------------------------------------------------------


async def get_parameters_for_import(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    found = await imports.get_parameters_for_import(
        svc, ctx, p["KeyId"], p["WrappingAlgorithm"], p["WrappingKeySpec"]
    )
    return {
        "KeyId": found.key.arn,
        "ImportToken": found.import_token,
        "PublicKey": found.public_key,
        "ParametersValidTo": found.valid_to,
    }


async def import_key_material(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    done = await imports.import_key_material(
        svc,
        ctx,
        p["KeyId"],
        p["ImportToken"],
        p["EncryptedKeyMaterial"],
        expiration_model=p.get("ExpirationModel"),
        valid_to=p.get("ValidTo"),
        import_type=p.get("ImportType"),
        key_material_id=p.get("KeyMaterialId"),
        description=p.get("KeyMaterialDescription"),
    )
    return {"KeyId": done.key.arn, "KeyMaterialId": done.material_id}


async def delete_imported_key_material(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    key, material_id = await imports.delete_imported_key_material(
        svc, ctx, p["KeyId"], p.get("KeyMaterialId")
    )
    result: Result = {"KeyId": key.arn}
    if material_id is not None:
        result["KeyMaterialId"] = material_id
    return result


# --- key policies ---------------------------------------------------------------------


async def put_key_policy(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await policies.put_key_policy(
        svc,
        ctx,
        p["KeyId"],
        p["Policy"],
        policy_name=p.get("PolicyName"),
        bypass_lockout_check=bool(p.get("BypassPolicyLockoutSafetyCheck", False)),
    )
    return {}


def get_key_policy(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    policy = policies.get_key_policy(svc, ctx, p["KeyId"], p.get("PolicyName"))
    return {"Policy": policy, "PolicyName": policies.POLICY_NAME}


def list_key_policies(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    names = policies.list_key_policies(svc, ctx, p["KeyId"])
    return {"PolicyNames": names, "Truncated": False}


# --- grants ---------------------------------------------------------------------------


def grant_entry(key: KmsKey, grant: KeyGrant) -> Result:
    entry: Result = {
        "KeyId": key.arn,
        "GrantId": grant.grant_id,
        "CreationDate": grant.created_at,
        "GranteePrincipal": grant.grantee,
        "IssuingAccount": f"arn:aws:iam::{grant.issuing_account}:root",
        "Operations": list(grant.operations),
    }
    if grant.name:
        entry["Name"] = grant.name
    if grant.retiring is not None:
        entry["RetiringPrincipal"] = grant.retiring
    if grant.constraints:
        entry["Constraints"] = grant.constraints
    return entry


async def create_grant(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    grant, token = await grants.create_grant(
        svc,
        ctx,
        key_id=p["KeyId"],
        grantee=p.get("GranteePrincipal"),
        operations=p["Operations"],
        retiring=p.get("RetiringPrincipal"),
        constraints=p.get("Constraints"),
        name=p.get("Name"),
        dry_run=bool(p.get("DryRun", False)),
    )
    return {"GrantToken": token, "GrantId": grant.grant_id}


def list_grants(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    key, found, marker = grants.list_grants(
        svc,
        ctx,
        p["KeyId"],
        p.get("Limit"),
        p.get("Marker"),
        grant_id=p.get("GrantId"),
        grantee=p.get("GranteePrincipal"),
    )
    return _page({"Grants": [grant_entry(key, g) for g in found]}, marker)


def list_retirable_grants(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    found, marker = grants.list_retirable_grants(
        svc, ctx, p.get("RetiringPrincipal"), p.get("Limit"), p.get("Marker")
    )
    return _page({"Grants": [grant_entry(k, g) for k, g in found]}, marker)


async def retire_grant(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await grants.retire_grant(
        svc,
        ctx,
        grant_token=p.get("GrantToken"),
        key_id=p.get("KeyId"),
        grant_id=p.get("GrantId"),
        dry_run=bool(p.get("DryRun", False)),
    )
    return {}


async def revoke_grant(svc: KmsService, ctx: RequestContext, p: Params) -> Result:
    await grants.revoke_grant(
        svc,
        ctx,
        key_id=p["KeyId"],
        grant_id=p["GrantId"],
        dry_run=bool(p.get("DryRun", False)),
    )
    return {}


# --- custom key stores ----------------------------------------------------------------

# Members only an external key store takes: keyplane has none.
XKS_MEMBERS: Final = (
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyVpcEndpointServiceName",
    "XksProxyVpcEndpointServiceOwner",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
)


def _xks(p: Params) -> bool:
    return any(p.get(member) is not None for member in XKS_MEMBERS)


async def _random_in_store(
    svc: KmsService, ctx: RequestContext, store_id: str, number_of_bytes: int | None
) -> Result:
    plaintext = await custom_key_stores.generate_random(
        svc, ctx, store_id, number_of_bytes
    )
    return {"Plaintext": plaintext}


def custom_key_store_entry(store: CustomKeyStore) -> Result:
    """A CustomKeyStoresListEntry of DescribeCustomKeyStores."""
    entry: Result = {
        "CustomKeyStoreId": store.store_id,
        "CustomKeyStoreName": store.name,
        "CloudHsmClusterId": store.cluster_id,
        "TrustAnchorCertificate": store.trust_anchor,
        "ConnectionState": store.state.value,
        "CreationDate": store.created_at,
        "CustomKeyStoreType": "AWS_CLOUDHSM",
    }
    # AWS: ConnectionErrorCode appears only while the state is FAILED.
    if store.state is ConnectionState.FAILED and store.error_code is not None:
        entry["ConnectionErrorCode"] = store.error_code
    return entry


async def create_custom_key_store(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    store = await custom_key_stores.create_custom_key_store(
        svc,
        ctx,
        name=p["CustomKeyStoreName"],
        cluster_id=p.get("CloudHsmClusterId"),
        trust_anchor=p.get("TrustAnchorCertificate"),
        password=p.get("KeyStorePassword"),
        store_type=p.get("CustomKeyStoreType"),
        xks_members=_xks(p),
    )
    return {"CustomKeyStoreId": store.store_id}


def describe_custom_key_stores(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    found, marker = custom_key_stores.describe_custom_key_stores(
        svc,
        ctx,
        store_id=p.get("CustomKeyStoreId"),
        name=p.get("CustomKeyStoreName"),
        limit=p.get("Limit"),
        marker=p.get("Marker"),
    )
    return _page(
        {"CustomKeyStores": [custom_key_store_entry(s) for s in found]}, marker
    )


async def connect_custom_key_store(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await custom_key_stores.connect_custom_key_store(svc, ctx, p["CustomKeyStoreId"])
    return {}


async def disconnect_custom_key_store(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await custom_key_stores.disconnect_custom_key_store(svc, ctx, p["CustomKeyStoreId"])
    return {}


async def update_custom_key_store(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await custom_key_stores.update_custom_key_store(
        svc,
        ctx,
        p["CustomKeyStoreId"],
        new_name=p.get("NewCustomKeyStoreName"),
        password=p.get("KeyStorePassword"),
        cluster_id=p.get("CloudHsmClusterId"),
        xks_members=_xks(p),
    )
    return {}


async def delete_custom_key_store(
    svc: KmsService, ctx: RequestContext, p: Params
) -> Result:
    await custom_key_stores.delete_custom_key_store(svc, ctx, p["CustomKeyStoreId"])
    return {}


OPERATIONS: Final[Mapping[str, Handler]] = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ListKeys": list_keys,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "UpdateKeyDescription": update_key_description,
    "CreateAlias": create_alias,
    "UpdateAlias": update_alias,
    "DeleteAlias": delete_alias,
    "ListAliases": list_aliases,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "ReEncrypt": re_encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateRandom": generate_random,
    "PutKeyPolicy": put_key_policy,
    "GetKeyPolicy": get_key_policy,
    "ListKeyPolicies": list_key_policies,
    "CreateGrant": create_grant,
    "ListGrants": list_grants,
    "ListRetirableGrants": list_retirable_grants,
    "RetireGrant": retire_grant,
    "RevokeGrant": revoke_grant,
    "EnableKeyRotation": enable_key_rotation,
    "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status,
    "RotateKeyOnDemand": rotate_key_on_demand,
    "ListKeyRotations": list_key_rotations,
    "GetParametersForImport": get_parameters_for_import,
    "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": delete_imported_key_material,
    "CreateCustomKeyStore": create_custom_key_store,
    "DescribeCustomKeyStores": describe_custom_key_stores,
    "ConnectCustomKeyStore": connect_custom_key_store,
    "DisconnectCustomKeyStore": disconnect_custom_key_store,
    "UpdateCustomKeyStore": update_custom_key_store,
    "DeleteCustomKeyStore": delete_custom_key_store,
}

# Handlers that never await run without a task (cheaper); the rest are coroutines.
ASYNC_OPERATIONS: Final = frozenset(
    name for name, handler in OPERATIONS.items() if inspect.iscoroutinefunction(handler)
)
