"""Custom key stores of type AWS_CLOUDHSM: CreateCustomKeyStore,
DescribeCustomKeyStores, ConnectCustomKeyStore, DisconnectCustomKeyStore,
UpdateCustomKeyStore, DeleteCustomKeyStore; CreateKey and GenerateRandom in a key
store; and keyplane's administration of the emulated CloudHSM clusters behind them.

The rules are AWS's (AWS KMS API Reference for each operation, and the
CustomKeyStoreInvalidStateException and CloudHsmCluster* error descriptions):

- Connect is refused while DISCONNECTING or FAILED (a FAILED store is disconnected,
  fixed and connected again), and is a no-op while CONNECTED or CONNECTING.
- Disconnect is refused while DISCONNECTED or DISCONNECTING.
- Update and Delete need DISCONNECTED, except that a CONNECTED store may be renamed.
- CreateKey and GenerateRandom need CONNECTED; CreateKey, CreateCustomKeyStore and
  UpdateCustomKeyStore need a cluster with at least two active HSMs.
- Delete is refused while the store holds keys, in any key state.
- External key stores (EXTERNAL_KEY_STORE) are not supported.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from keyplane.errors import (
    AlreadyExistsError,
    CloudHsmClusterInUseError,
    CloudHsmClusterInvalidConfigurationError,
    CloudHsmClusterNotActiveError,
    CloudHsmClusterNotFoundError,
    CloudHsmClusterNotRelatedError,
    ClusterRoleError,
    ClusterUserLoggedInError,
    ClusterUserNotFoundError,
    ConflictError,
    CustomKeyStoreHasKeysError,
    CustomKeyStoreInvalidStateError,
    CustomKeyStoreNameInUseError,
    CustomKeyStoreNotFoundError,
    IncorrectTrustAnchorError,
    KeyplaneError,
    KeyStateError,
    LimitExceededError,
    NotFoundError,
    UnsupportedOperationError,
    ValidationError,
)
from keyplane.hsm import (
    KMS_USER,
    CloudHsmCluster,
    Partition,
    Role,
    normalize_certificate,
)
from keyplane.kms._key_stores import (
    CLOUDHSM,
    MAX_KEY_STORES,
    ClusterSpec,
    ConnectionState,
    CustomKeyStore,
    OwnedCluster,
)
from keyplane.kms._model import ORIGIN_AWS_CLOUDHSM, KmsKey, material_context
from keyplane.kms._quota import SYMMETRIC
from keyplane.kms._service import KmsService, RequestContext
from keyplane.kms.ops._paging import page
from keyplane.storage import MaterialRecord

EXTERNAL_KEY_STORE: Final = "EXTERNAL_KEY_STORE"
DEFAULT_LIST_LIMIT: Final = 100
# The CloudHsmClusterInvalidConfigurationException text: creating a key store or a
# key, or moving a store to another cluster, needs two active HSMs.
MIN_HSMS_FOR_KEYS: Final = 2
_STORE_ID: Final = re.compile(r"cks-[0-9a-f]{17}")
# Each cluster is a native HSM of its own, with its own locked memory: an account may
# make this many (AWS's default CloudHSM quota is 4 a Region, and adjustable).
MAX_CLUSTERS: Final = 32
_CLUSTER_ALPHABET: Final = "234567abcdefghijklmnopqrstuvwxyz"

CONNECTED, CONNECTING, DISCONNECTED, DISCONNECTING, FAILED = (
    ConnectionState.CONNECTED,
    ConnectionState.CONNECTING,
    ConnectionState.DISCONNECTED,
    ConnectionState.DISCONNECTING,
    ConnectionState.FAILED,
)


def _store(svc: KmsService, ctx: RequestContext, store_id: str) -> CustomKeyStore:
    """The caller's key store of that id in this region.

    Raises:
        CustomKeyStoreNotFoundError: none (another account's is not found either).
    """
    store = svc.key_stores.stores.get(store_id)
    if store is None or store.account != ctx.account or store.region != svc.region:
        raise CustomKeyStoreNotFoundError(
            f"Custom key store {store_id} does not exist in this account and Region."
        )
    return store


def _invalid_state(store: CustomKeyStore, operation: str) -> KeyplaneError:
    return CustomKeyStoreInvalidStateError(
        f"{operation} is not valid for custom key store {store.store_id} while its "
        f"ConnectionState is {store.state.value}."
    )


def _cluster(svc: KmsService, ctx: RequestContext, cluster_id: str) -> OwnedCluster:
    owned = svc.key_stores.cluster_of(ctx.account, cluster_id)
    if owned is None:
        raise CloudHsmClusterNotFoundError(
            f"CloudHSM cluster {cluster_id} does not exist in this account and Region."
        )
    return owned


def _usable_cluster(cluster: CloudHsmCluster) -> None:
    """What creating a key store, moving one or creating a key needs of a cluster.

    Raises:
        CloudHsmClusterNotActiveError: the cluster is not active.
        CloudHsmClusterInvalidConfigurationError: fewer than two active HSMs.
    """
    if not cluster.active:
        raise CloudHsmClusterNotActiveError(
            f"CloudHSM cluster {cluster.cluster_id} is not active."
        )
    if cluster.hsm_count < MIN_HSMS_FOR_KEYS:
        raise CloudHsmClusterInvalidConfigurationError(
            f"CloudHSM cluster {cluster.cluster_id} has {cluster.hsm_count} active "
            f"HSM(s); this operation needs at least {MIN_HSMS_FOR_KEYS}, each in a "
            "different Availability Zone."
        )


def _no_external(store_type: str | None, xks_members: bool) -> None:
    if store_type == EXTERNAL_KEY_STORE:
        raise UnsupportedOperationError(
            "External key stores (EXTERNAL_KEY_STORE) are not supported by keyplane; "
            "only AWS_CLOUDHSM key stores are."
        )
    if xks_members:
        raise ValidationError(
            "XksProxy* parameters are valid only for custom key stores of type "
            "EXTERNAL_KEY_STORE."
        )


async def _verifier(svc: KmsService, cluster: CloudHsmCluster, password: str) -> bytes:
    # scrypt takes tens of milliseconds: off the event loop.
    return await svc.loop.run_in_executor(None, cluster.verifier, password)


# --- the key store operations -----------------------------------------------------


async def create_custom_key_store(
    svc: KmsService,
    ctx: RequestContext,
    *,
    name: str,
    cluster_id: str | None,
    trust_anchor: str | None,
    password: str | None,
    store_type: str | None = None,
    xks_members: bool = False,
) -> CustomKeyStore:
    """AWS CreateCustomKeyStore for an AWS_CLOUDHSM key store: DISCONNECTED until
    ConnectCustomKeyStore. The password is not checked here, as on AWS: a wrong one
    shows as INVALID_CREDENTIALS when the store connects.

    Raises:
        UnsupportedOperationError: an external key store.
        ValidationError: a member a CloudHSM key store needs is missing.
        CloudHsmClusterNotFoundError, CloudHsmClusterInUseError,
        CloudHsmClusterNotActiveError, CloudHsmClusterInvalidConfigurationError,
        IncorrectTrustAnchorError, CustomKeyStoreNameInUseError, LimitExceededError:
            as AWS names them.
    """
    svc.access.check_account(ctx, "kms:CreateCustomKeyStore")
    _no_external(store_type, xks_members)
    if cluster_id is None or trust_anchor is None or password is None:
        missing = [
            member
            for member, value in (
                ("CloudHsmClusterId", cluster_id),
                ("TrustAnchorCertificate", trust_anchor),
                ("KeyStorePassword", password),
            )
            if value is None
        ]
        raise ValidationError(
            f"{', '.join(missing)} must be given for a custom key store of type "
            f"{CLOUDHSM}."
        )
    owned = _cluster(svc, ctx, cluster_id)
    credential = await _verifier(svc, owned.cluster, password)
    async with svc.control:
        stores = svc.key_stores
        mine = [
            s
            for s in stores.stores.values()
            if s.account == ctx.account and s.region == svc.region
        ]
        if any(s.name == name for s in mine):
            raise CustomKeyStoreNameInUseError(
                f"A custom key store named {name!r} already exists in this account."
            )
        if len(mine) >= MAX_KEY_STORES:
            raise LimitExceededError(
                f"An account may have {MAX_KEY_STORES} custom key stores in a Region."
            )
        cluster = owned.cluster
        if stores.in_use(ctx.account, cluster.lineage):
            raise CloudHsmClusterInUseError(
                f"CloudHSM cluster {cluster_id}, or a cluster that shares its backup "
                "history, is already associated with a custom key store."
            )
        _usable_cluster(cluster)
        if normalize_certificate(trust_anchor) != cluster.trust_anchor:
            raise IncorrectTrustAnchorError(
                f"The trust anchor certificate is not the one CloudHSM cluster "
                f"{cluster_id} was initialized with."
            )
        store = CustomKeyStore(
            _new_store_id(stores.stores),
            ctx.account,
            svc.region,
            name,
            cluster_id,
            cluster.trust_anchor,
            credential,
            svc.clock(),
            request_quota=stores.request_quota,
        )
        await svc.write(svc.store.put_custom_key_store, store.record())
        stores.stores[store.store_id] = store
        return store


def _new_store_id(taken: Mapping[str, object]) -> str:
    """An id in AWS's form: ``cks-`` and 17 hex digits."""
    while True:
        store_id = "cks-" + os.urandom(9).hex()[:17]
        if store_id not in taken:
            return store_id


def describe_custom_key_stores(
    svc: KmsService,
    ctx: RequestContext,
    *,
    store_id: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> tuple[list[CustomKeyStore], str | None]:
    """AWS DescribeCustomKeyStores: the account's key stores in this region, or the
    one named by id or by name.

    Raises:
        ValidationError: both an id and a name.
        CustomKeyStoreNotFoundError: no key store of that id or name.
        InvalidMarkerError: a marker this service did not issue.
    """
    svc.access.check_account(ctx, "kms:DescribeCustomKeyStores")
    if store_id is not None and name is not None:
        raise ValidationError(
            "Specify either CustomKeyStoreId or CustomKeyStoreName, not both."
        )
    found = sorted(
        (
            s
            for s in svc.key_stores.stores.values()
            if s.account == ctx.account and s.region == svc.region
        ),
        key=lambda s: s.store_id,
    )
    if store_id is not None:
        found = [_store(svc, ctx, store_id)]
    elif name is not None:
        found = [s for s in found if s.name == name]
        if not found:
            raise CustomKeyStoreNotFoundError(
                f"No custom key store named {name!r} exists in this account and Region."
            )
    return page(
        found,
        limit or DEFAULT_LIST_LIMIT,
        marker,
        lambda s: s.store_id,
        lambda m: _STORE_ID.fullmatch(m) is not None,
    )


async def connect_custom_key_store(
    svc: KmsService, ctx: RequestContext, store_id: str
) -> None:
    """AWS ConnectCustomKeyStore: starts connecting and answers at once; the store is
    CONNECTING, then CONNECTED, or FAILED with a ConnectionErrorCode.

    Raises:
        CustomKeyStoreNotFoundError: no such key store.
        CustomKeyStoreInvalidStateError: DISCONNECTING or FAILED.
        CloudHsmClusterNotActiveError: the cluster is not active.
    """
    svc.access.check_account(ctx, "kms:ConnectCustomKeyStore")
    async with svc.control:
        store = _store(svc, ctx, store_id)
        if store.state in (DISCONNECTING, FAILED):
            raise _invalid_state(store, "ConnectCustomKeyStore")
        if store.state in (CONNECTED, CONNECTING):
            return
        owned = svc.key_stores.clusters.get(store.cluster_id)
        if owned is not None and not owned.cluster.active:
            raise CloudHsmClusterNotActiveError(
                f"CloudHSM cluster {store.cluster_id} is not active."
            )
        record = store.record(state=CONNECTING, error_code=None)
        await svc.write(svc.store.put_custom_key_store, record)
        store.state = CONNECTING
        store.error_code = None
        svc.key_stores.begin_connect(store)


async def disconnect_custom_key_store(
    svc: KmsService, ctx: RequestContext, store_id: str
) -> None:
    """AWS DisconnectCustomKeyStore: the store's keys are Unavailable until it
    connects again. It is DISCONNECTING until the batches already handed to its
    cluster are done.

    Raises:
        CustomKeyStoreNotFoundError: no such key store.
        CustomKeyStoreInvalidStateError: DISCONNECTED or DISCONNECTING.
    """
    svc.access.check_account(ctx, "kms:DisconnectCustomKeyStore")
    async with svc.control:
        store = _store(svc, ctx, store_id)
        if store.state in (DISCONNECTED, DISCONNECTING):
            raise _invalid_state(store, "DisconnectCustomKeyStore")
        record = store.record(state=DISCONNECTED, error_code=None)
        await svc.write(svc.store.put_custom_key_store, record)
        svc.key_stores.begin_disconnect(store)


async def update_custom_key_store(
    svc: KmsService,
    ctx: RequestContext,
    store_id: str,
    *,
    new_name: str | None = None,
    password: str | None = None,
    cluster_id: str | None = None,
    xks_members: bool = False,
) -> None:
    """AWS UpdateCustomKeyStore: rename (CONNECTED or DISCONNECTED), tell the store
    the kmsuser's current password, or move it to a cluster that shares its cluster's
    backup history (both DISCONNECTED only). The store's cluster (or the one it
    moves to) must be active with at least two active HSMs, whatever changes.

    Raises:
        CustomKeyStoreNotFoundError, CustomKeyStoreInvalidStateError,
        CustomKeyStoreNameInUseError, CloudHsmClusterNotFoundError,
        CloudHsmClusterNotRelatedError, CloudHsmClusterNotActiveError,
        CloudHsmClusterInvalidConfigurationError: as AWS names them.
    """
    svc.access.check_account(ctx, "kms:UpdateCustomKeyStore")
    _no_external(None, xks_members)
    store = _store(svc, ctx, store_id)
    target = _cluster(svc, ctx, cluster_id) if cluster_id is not None else None
    credential = None
    if password is not None:
        # Clusters that may take over a store share its cluster's salt.
        salted = target or svc.key_stores.clusters.get(store.cluster_id)
        if salted is not None:
            credential = await _verifier(svc, salted.cluster, password)
    async with svc.control:
        store = _store(svc, ctx, store_id)
        only_name = password is None and cluster_id is None
        if only_name and store.state not in (CONNECTED, DISCONNECTED):
            raise _invalid_state(store, "UpdateCustomKeyStore")
        if not only_name and store.state is not DISCONNECTED:
            raise _invalid_state(store, "UpdateCustomKeyStore")
        changes: dict[str, object] = {}
        if new_name is not None and new_name != store.name:
            if any(
                s.name == new_name
                and s.account == ctx.account
                and s.region == svc.region
                for s in svc.key_stores.stores.values()
            ):
                raise CustomKeyStoreNameInUseError(
                    f"A custom key store named {new_name!r} already exists in this "
                    "account."
                )
            changes["name"] = new_name
        if target is not None:
            current = svc.key_stores.clusters.get(store.cluster_id)
            if current is None or target.cluster.lineage != current.cluster.lineage:
                raise CloudHsmClusterNotRelatedError(
                    f"CloudHSM cluster {cluster_id} does not share a backup history "
                    f"with cluster {store.cluster_id} of the custom key store."
                )
            _usable_cluster(target.cluster)
            changes["cluster_id"] = target.cluster_id
        else:
            # Every update needs the cluster's two active HSMs, a rename too (the
            # CloudHsmClusterInvalidConfigurationException of AWS's API model).
            current = svc.key_stores.clusters.get(store.cluster_id)
            if current is not None:
                _usable_cluster(current.cluster)
        if credential is not None:
            changes["credential"] = credential
        if not changes:
            return
        record = store.record(**changes)
        await svc.write(svc.store.put_custom_key_store, record)
        store.apply(record)


async def delete_custom_key_store(
    svc: KmsService, ctx: RequestContext, store_id: str
) -> None:
    """AWS DeleteCustomKeyStore: a DISCONNECTED store holding no keys. The cluster
    and its users are left as they are.

    Raises:
        CustomKeyStoreNotFoundError: no such key store.
        CustomKeyStoreInvalidStateError: not DISCONNECTED.
        CustomKeyStoreHasKeysError: the store holds keys (even pending deletion).
    """
    svc.access.check_account(ctx, "kms:DeleteCustomKeyStore")
    async with svc.control:
        store = _store(svc, ctx, store_id)
        if store.state is not DISCONNECTED:
            raise _invalid_state(store, "DeleteCustomKeyStore")
        held = svc.key_stores.keys_of(store)
        if held:
            raise CustomKeyStoreHasKeysError(
                f"Custom key store {store_id} still holds {held} KMS key(s). Schedule "
                "their deletion, and delete the key store once they are deleted."
            )
        await svc.write(svc.store.delete_custom_key_store, store_id)
        del svc.key_stores.stores[store_id]


# --- keys and random bytes in a key store -------------------------------------------


def store_for_new_key(
    svc: KmsService, ctx: RequestContext, origin: str, store_id: str | None
) -> CustomKeyStore:
    """The key store CreateKey puts a key in, once it can: CONNECTED, with a cluster
    of two active HSMs.

    Raises:
        ValidationError: Origin AWS_CLOUDHSM without a CustomKeyStoreId.
        UnsupportedOperationError: a CustomKeyStoreId with another origin.
        CustomKeyStoreNotFoundError, CustomKeyStoreInvalidStateError,
        CloudHsmClusterInvalidConfigurationError: as AWS names them.
    """
    if store_id is None:
        raise ValidationError(
            f"A CustomKeyStoreId is required to create a key with Origin "
            f"{ORIGIN_AWS_CLOUDHSM}."
        )
    if origin != ORIGIN_AWS_CLOUDHSM:
        raise UnsupportedOperationError(
            f"A key in a custom key store of type {CLOUDHSM} has Origin "
            f"{ORIGIN_AWS_CLOUDHSM}, not {origin}."
        )
    store = _store(svc, ctx, store_id)
    _ready_for_keys(svc, store)
    return store


def _ready_for_keys(svc: KmsService, store: CustomKeyStore) -> CloudHsmCluster:
    if not store.connected or store.session is None:
        raise _invalid_state(store, "CreateKey")
    cluster = svc.key_stores.clusters[store.cluster_id].cluster
    _usable_cluster(cluster)
    return cluster


def partition_of(svc: KmsService, store: CustomKeyStore) -> Partition:
    """The partition a key store's keys live in: its cluster's, dedicated."""
    return svc.key_stores.clusters[store.cluster_id].cluster.partition


async def create_key_in_store(
    svc: KmsService, key: KmsKey, store: CustomKeyStore
) -> KmsKey:
    """Generate ``key``'s material in the store's cluster, owned by kmsuser, and
    commit the key with it (CreateKey's last step for Origin AWS_CLOUDHSM).

    Raises:
        CustomKeyStoreInvalidStateError: the store disconnected meanwhile.
        CloudHsmClusterInvalidConfigurationError: fewer than two active HSMs.
        LimitExceededError: the cluster holds as many keys as it can.
    """
    cluster = _ready_for_keys(svc, store)
    session = store.session
    if session is None:
        raise _invalid_state(store, "CreateKey")
    owned = svc.key_stores.clusters[store.cluster_id]
    key.custom_key_store_id = store.store_id
    key.key_store = store
    key.stored_partition = owned.partition_name
    key.partition = cluster.partition
    with store.creating_key():
        try:
            slot = cluster.generate_key(session)
        except ClusterRoleError as exc:
            raise _lost_login(store) from exc
        try:
            material = MaterialRecord(
                key.key_id,
                1,
                cluster.partition.export_key(slot, material_context(key.key_id, 1)),
                key.created_at,
            )
            await svc.write(svc.store.create_key, key.record(), material)
        except BaseException:
            with contextlib.suppress(KeyplaneError):
                cluster.destroy_key(None, slot)
            raise
        key.versions.append(slot)
        svc.keys[key.key_id] = key
    return key


async def generate_random(
    svc: KmsService, ctx: RequestContext, store_id: str, number_of_bytes: int | None
) -> bytes:
    """AWS GenerateRandom with a CustomKeyStoreId: bytes from the store's cluster,
    which must be CONNECTED. Counts against the account's and the store's quotas.

    Raises:
        CustomKeyStoreNotFoundError: no such key store.
        CustomKeyStoreInvalidStateError: not CONNECTED, or its cluster has no HSM.
        ThrottlingError: the account or the store is over its quota.
    """
    svc.quotas.charge(ctx.account, SYMMETRIC)
    svc.access.check_account(ctx, "kms:GenerateRandom")
    if number_of_bytes is None:
        raise ValidationError("Please specify number of bytes.")
    store = _store(svc, ctx, store_id)
    worker, session = store.worker, store.session
    if not store.connected or worker is None or session is None:
        raise _invalid_state(store, "GenerateRandom")
    cluster = worker.cluster
    if cluster.hsm_count < 1 or not cluster.active:
        raise CustomKeyStoreInvalidStateError(
            f"CloudHSM cluster {cluster.cluster_id} of custom key store {store_id} has "
            "no active HSM."
        )
    store.charge()
    try:
        return await worker.run(cluster.random, session, number_of_bytes, items=1)
    except ClusterRoleError as exc:
        raise _lost_login(store) from exc
    except KeyStateError as exc:
        # Disconnected while the call waited for the cluster.
        raise _invalid_state(store, "GenerateRandom") from exc


def _lost_login(store: CustomKeyStore) -> KeyplaneError:
    # The cluster ended kmsuser's session (its owner deleted the user, say): AWS
    # reports a key store that cannot reach its key material this way.
    return CustomKeyStoreInvalidStateError(
        f"Custom key store {store.store_id} is not logged in to CloudHSM cluster "
        f"{store.cluster_id}: disconnect it and connect it again."
    )


# --- keyplane's administration of clusters ------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterChanges:
    """What UpdateCloudHsmCluster may change; None leaves a setting as it is."""

    hsm_count: int | None = None
    active: bool | None = None
    trust_anchor: str | None = None
    extra_latency_ms: float | None = None
    capacity_per_second: float | None = None
    kmsuser_password: str | None = None
    delete_kmsuser: bool = False
    kmsuser_locked_out: bool | None = None
    kmsuser_logged_in: bool | None = None


def new_cluster_id() -> str:
    """A cluster id in CloudHSM's form: ``cluster-`` and 11 base32 characters."""
    raw = os.urandom(11)
    return "cluster-" + "".join(_CLUSTER_ALPHABET[b % 32] for b in raw)


async def create_cloudhsm_cluster(
    svc: KmsService, ctx: RequestContext, spec: ClusterSpec
) -> OwnedCluster:
    """keyplane's CreateCloudHsmCluster: an initialized, active cluster of the
    caller's account, with ``kmsuser`` if a password is given, stored before it is
    answered.

    Raises:
        AccessDeniedError: the caller may not keyplane:CreateCloudHsmCluster.
        AlreadyExistsError: a cluster with that id exists.
        ValidationError: a bad setting, or a source cluster that is not the
            account's.
    """
    svc.access.check_account(ctx, "keyplane:CreateCloudHsmCluster")
    stores = svc.key_stores
    async with svc.control, svc.sealing:
        if spec.cluster_id in stores.clusters:
            raise AlreadyExistsError(f"CloudHSM cluster {spec.cluster_id} exists.")
        owned_now = sum(1 for c in stores.clusters.values() if c.account == ctx.account)
        if owned_now >= MAX_CLUSTERS:
            raise LimitExceededError(
                f"An account may have {MAX_CLUSTERS} CloudHSM clusters in keyplane."
            )
        # A new partition and an scrypt verifier: off the event loop.
        owned, partition = await svc.loop.run_in_executor(
            None, stores.new_cluster, spec, svc.clock()
        )
        try:
            await svc.write(svc.store.put_cluster, owned.record(), partition)
        except BaseException:
            stores.forget_new_cluster(owned, partition is not None)
            raise
        stores.adopt_cluster(owned)
        return owned


def describe_cloudhsm_clusters(
    svc: KmsService, ctx: RequestContext, cluster_id: str | None = None
) -> list[OwnedCluster]:
    """keyplane's DescribeCloudHsmClusters: the account's clusters, or one.

    Raises:
        CloudHsmClusterNotFoundError: no cluster of the account has that id.
    """
    svc.access.check_account(ctx, "keyplane:DescribeCloudHsmClusters")
    if cluster_id is not None:
        return [_cluster(svc, ctx, cluster_id)]
    return sorted(
        (c for c in svc.key_stores.clusters.values() if c.account == ctx.account),
        key=lambda c: c.cluster_id,
    )


def stores_of_cluster(svc: KmsService, owned: OwnedCluster) -> Sequence[CustomKeyStore]:
    return [
        s for s in svc.key_stores.stores.values() if s.cluster_id == owned.cluster_id
    ]


async def update_cloudhsm_cluster(
    svc: KmsService, ctx: RequestContext, cluster_id: str, changes: ClusterChanges
) -> OwnedCluster:
    """keyplane's UpdateCloudHsmCluster: what a cluster's owner changes with CloudHSM's
    own tools (HSMs added or removed, the kmsuser's password, a lockout, a login from
    outside KMS), to see how a key store copes. A connected store keeps its login;
    the next connection attempt sees the change.

    Raises:
        CloudHsmClusterNotFoundError: no cluster of the account has that id.
        ClusterUserNotFoundError: a kmsuser change on a cluster without one.
        ValidationError: a setting out of range.
    """
    svc.access.check_account(ctx, "keyplane:UpdateCloudHsmCluster")
    async with svc.control:
        owned = _cluster(svc, ctx, cluster_id)
        cluster = owned.cluster
        officer = cluster.officer()
        before = cluster.settings()
        try:
            cluster.configure(
                hsm_count=changes.hsm_count,
                active=changes.active,
                extra_latency_ms=changes.extra_latency_ms,
                capacity_per_second=changes.capacity_per_second,
            )
            if changes.trust_anchor is not None:
                cluster.trust_anchor = normalize_certificate(changes.trust_anchor)
            if changes.delete_kmsuser:
                cluster.delete_user(officer, KMS_USER)
            if changes.kmsuser_password is not None:
                verifier = await _verifier(svc, cluster, changes.kmsuser_password)
                cluster.put_user(officer, KMS_USER, Role.CRYPTO_USER, verifier)
            if changes.kmsuser_locked_out is not None:
                cluster.set_locked_out(officer, KMS_USER, changes.kmsuser_locked_out)
            if changes.kmsuser_logged_in is not None and KMS_USER not in cluster.users:
                raise ClusterUserNotFoundError(f"{cluster_id} has no user kmsuser")
            if changes.kmsuser_logged_in and cluster.logged_in(KMS_USER):
                # Refused when a connected key store holds the login (checked
                # before anything is stored); a login held from outside stays.
                cluster.hold_session(officer, KMS_USER, True)
            await svc.write(svc.store.put_cluster, owned.record())
        except ClusterUserNotFoundError as exc:
            cluster.load_settings(before)
            raise NotFoundError(str(exc)) from exc
        except ClusterUserLoggedInError as exc:
            cluster.load_settings(before)
            raise ConflictError(
                f"kmsuser is logged in to {cluster_id} by a connected custom key store"
            ) from exc
        except BaseException:
            cluster.load_settings(before)
            raise
        if changes.kmsuser_logged_in is not None:
            cluster.hold_session(officer, KMS_USER, changes.kmsuser_logged_in)
        return owned
