"""keyplane's administration of emulated CloudHSM clusters:
``KeyplaneService.CreateCloudHsmCluster``, ``DescribeCloudHsmClusters`` and
``UpdateCloudHsmCluster``.

AWS creates clusters with CloudHSM's own API, which keyplane does not emulate; these
stand in for it (and for the cluster tools a crypto officer uses), so that a custom
key store has a cluster to be associated with, and so that a test can take HSMs away,
change or lock the kmsuser's password, or log kmsuser in from outside KMS.
docs/origin-cloudhsm.md describes them. Passwords are never answered back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

from keyplane.errors import MalformedRequestError
from keyplane.kms import ClusterSpec, KmsService, OwnedCluster, RequestContext
from keyplane.kms.ops import custom_key_stores as cks


def _body(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError("the request body is not valid JSON") from exc
    if not isinstance(request, dict):
        raise MalformedRequestError("the request body must be a JSON object")
    return request


def _get(request: Mapping[str, Any], member: str, kind: type, default: Any) -> Any:
    """A member of the expected JSON kind (bool is not a number here), or
    ``default`` when absent or null."""
    value = request.get(member)
    if value is None:
        return default
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str) and bool(value)
    if not ok:
        raise MalformedRequestError(f"{member} must be a {_KINDS[kind]}")
    return value


_KINDS: Final = {
    bool: "boolean",
    float: "number",
    int: "whole number",
    str: "non-empty string",
}


def describe(svc: KmsService, owned: OwnedCluster) -> dict[str, Any]:
    """What DescribeCloudHsmClusters says of a cluster: never a password or a
    verifier."""
    cluster = owned.cluster
    entry: dict[str, Any] = {
        "ClusterId": cluster.cluster_id,
        "State": "ACTIVE" if cluster.active else "INITIALIZED",
        "HsmCount": cluster.hsm_count,
        "TrustAnchorCertificate": cluster.trust_anchor,
        "BackupLineage": cluster.lineage,
        "ExtraLatencyMs": cluster.extra_latency_ms,
        "CapacityPerSecond": cluster.capacity_per_second or 0,
        "Users": [
            {
                "Username": user.name,
                "Role": user.role.value,
                "LockedOut": user.locked_out,
                "LoggedIn": cluster.logged_in(user.name),
            }
            for user in sorted(cluster.users.values(), key=lambda u: u.name)
        ],
        "Keys": len(cluster.keys),
        "Partition": owned.partition_name,
        "Tenancy": cluster.partition.tenancy.value,
        "CreationDate": owned.created_at,
    }
    stores = cks.stores_of_cluster(svc, owned)
    entry["CustomKeyStoreIds"] = [s.store_id for s in stores]
    workers = [s.worker for s in stores if s.worker is not None]
    if workers:
        worker = workers[0]
        entry["Worker"] = {
            "Threads": worker.threads,
            "ThreadNames": cluster.pacer.thread_names(),
            "Batches": worker.batcher.batches,
            "BatchedItems": worker.batcher.items,
        }
    return entry


async def create_cloudhsm_cluster(
    svc: KmsService, ctx: RequestContext, body: bytes
) -> bytes:
    request = _body(body)
    trust_anchor = _get(request, "TrustAnchorCertificate", str, None)
    if trust_anchor is None:
        raise MalformedRequestError("TrustAnchorCertificate is required")
    spec = ClusterSpec(
        cluster_id=_get(request, "ClusterId", str, None) or cks.new_cluster_id(),
        account=ctx.account,
        trust_anchor=trust_anchor,
        hsm_count=_get(request, "HsmCount", int, 2),
        kmsuser_password=_get(request, "KmsUserPassword", str, None),
        extra_latency_ms=_get(request, "ExtraLatencyMs", float, 0.0),
        capacity_per_second=_get(request, "CapacityPerSecond", float, 0.0),
        backup_of=_get(request, "SourceClusterId", str, None),
    )
    owned = await cks.create_cloudhsm_cluster(svc, ctx, spec)
    return orjson.dumps({"Cluster": describe(svc, owned)})


async def describe_cloudhsm_clusters(
    svc: KmsService, ctx: RequestContext, body: bytes
) -> bytes:
    request = _body(body)
    found = cks.describe_cloudhsm_clusters(
        svc, ctx, _get(request, "ClusterId", str, None)
    )
    return orjson.dumps({"Clusters": [describe(svc, c) for c in found]})


async def update_cloudhsm_cluster(
    svc: KmsService, ctx: RequestContext, body: bytes
) -> bytes:
    request = _body(body)
    cluster_id = _get(request, "ClusterId", str, None)
    if cluster_id is None:
        raise MalformedRequestError("ClusterId is required")
    changes = cks.ClusterChanges(
        hsm_count=_get(request, "HsmCount", int, None),
        active=_get(request, "Active", bool, None),
        trust_anchor=_get(request, "TrustAnchorCertificate", str, None),
        extra_latency_ms=_get(request, "ExtraLatencyMs", float, None),
        capacity_per_second=_get(request, "CapacityPerSecond", float, None),
        kmsuser_password=_get(request, "KmsUserPassword", str, None),
        delete_kmsuser=_get(request, "DeleteKmsUser", bool, False),
        kmsuser_locked_out=_get(request, "KmsUserLockedOut", bool, None),
        kmsuser_logged_in=_get(request, "KmsUserLoggedIn", bool, None),
    )
    owned = await cks.update_cloudhsm_cluster(svc, ctx, cluster_id, changes)
    return orjson.dumps({"Cluster": describe(svc, owned)})


OPERATIONS: Final = {
    "CreateCloudHsmCluster": create_cloudhsm_cluster,
    "DescribeCloudHsmClusters": describe_cloudhsm_clusters,
    "UpdateCloudHsmCluster": update_cloudhsm_cluster,
}
