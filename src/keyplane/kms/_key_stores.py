"""Custom key stores (type AWS_CLOUDHSM) and the emulated CloudHSM clusters behind
them: the service's in-memory copy, their store records, and the connection life
cycle.

A cluster belongs to one account and holds its keys in a dedicated partition (one per
backup lineage); a key store is associated with one cluster and, while CONNECTED, holds
a login of the cluster's ``kmsuser`` crypto user and the cluster's own worker, which
carries every cryptographic operation on the store's keys. Connecting is asynchronous,
as on AWS: ConnectCustomKeyStore answers at once with the store CONNECTING, and a task
logs in a moment later, leaving it CONNECTED or FAILED with a ConnectionErrorCode (AWS
KMS API Reference, ConnectCustomKeyStore and CustomKeyStoresListEntry).

What a connection should be survives a restart: a store that was connected (or was
connecting) reconnects when the service starts. The kmsuser password never reaches the
store as given: a key store keeps the salted verifier that it presents to log in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from keyplane.errors import (
    ClusterCredentialsError,
    ClusterHsmsUnavailableError,
    ClusterLoginError,
    ClusterRoleError,
    ClusterUserLockedOutError,
    ClusterUserLoggedInError,
    ClusterUserNotFoundError,
    KeyStateError,
    ThrottlingError,
    ValidationError,
)
from keyplane.hsm import (
    KMS_USER,
    CloudHsmCluster,
    ClusterWorker,
    KeySlot,
    Partition,
    Role,
    Session,
    Tenancy,
    normalize_certificate,
)
from keyplane.kms._quota import TokenBucket
from keyplane.storage import ClusterRecord, CustomKeyStoreRecord, PartitionRecord

if TYPE_CHECKING:
    from keyplane.kms._service import KmsService

_log = logging.getLogger(__name__)

CLOUDHSM: Final = "AWS_CLOUDHSM"
# AWS KMS Developer Guide, "Request quotas": 1,800 cryptographic requests per second
# per CloudHSM key store (not adjustable on AWS; a setting here).
DEFAULT_REQUEST_QUOTA: Final = 1800.0
# How long a connection takes to come up. AWS takes minutes; a test wants to see
# CONNECTING, and nobody wants to wait.
DEFAULT_CONNECT_SECONDS: Final = 0.5
# AWS KMS Developer Guide, "Resource quotas": 10 custom key stores per account and
# Region.
MAX_KEY_STORES: Final = 10


class ConnectionState(enum.Enum):
    CONNECTED = "CONNECTED"
    CONNECTING = "CONNECTING"
    DISCONNECTED = "DISCONNECTED"
    DISCONNECTING = "DISCONNECTING"
    FAILED = "FAILED"


# What a failed login leaves in ConnectionErrorCode.
_LOGIN_ERRORS: Final[Mapping[type[ClusterLoginError], str]] = {
    ClusterUserNotFoundError: "USER_NOT_FOUND",
    ClusterCredentialsError: "INVALID_CREDENTIALS",
    ClusterUserLockedOutError: "USER_LOCKED_OUT",
    ClusterUserLoggedInError: "USER_LOGGED_IN",
    ClusterHsmsUnavailableError: "INSUFFICIENT_CLOUDHSM_HSMS",
}
CLUSTER_NOT_FOUND: Final = "CLUSTER_NOT_FOUND"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A cluster as configuration declares it (or the admin operation asks for it)."""

    cluster_id: str
    account: str
    trust_anchor: str
    hsm_count: int = 2
    kmsuser_password: str | None = field(default=None, repr=False)
    extra_latency_ms: float = 0.0
    capacity_per_second: float = 0.0
    backup_of: str | None = None


@dataclass(slots=True)
class OwnedCluster:
    """A cluster and what KMS knows beside it: its account and storage names."""

    cluster: CloudHsmCluster
    account: str
    partition_name: str
    created_at: float

    @property
    def cluster_id(self) -> str:
        return self.cluster.cluster_id

    def record(self) -> ClusterRecord:
        return ClusterRecord(
            self.cluster.cluster_id,
            self.account,
            self.partition_name,
            self.created_at,
            self.cluster.settings(),
        )


class CustomKeyStore:
    """One CloudHSM key store."""

    def __init__(
        self,
        store_id: str,
        account: str,
        region: str,
        name: str,
        cluster_id: str,
        trust_anchor: str,
        credential: bytes,
        created_at: float,
        *,
        state: ConnectionState = ConnectionState.DISCONNECTED,
        error_code: str | None = None,
        request_quota: float = DEFAULT_REQUEST_QUOTA,
    ) -> None:
        self.store_id = store_id
        self.account = account
        self.region = region
        self.name = name
        self.cluster_id = cluster_id
        self.trust_anchor = trust_anchor
        # The kmsuser password's verifier for the cluster's salt: what the store
        # presents to log in (never the password).
        self.credential = credential
        self.created_at = created_at
        self.error_code = error_code
        self.connected = False
        self._state = ConnectionState.DISCONNECTED
        self.state = state
        # While connected: the kmsuser login and the cluster's worker.
        self.session: Session | None = None
        self.worker: ClusterWorker | None = None
        self.quota: TokenBucket | None = (
            TokenBucket(request_quota) if request_quota > 0 else None
        )
        # Bumped by every connect and disconnect: a connection attempt that finds it
        # moved on gives up.
        self.attempt = 0
        # CreateKey calls between their state check and their commit: DeleteCustomKey
        # Store must count them as keys.
        self.creating = 0

    def __repr__(self) -> str:
        return (
            f"CustomKeyStore({self.store_id}, {self.name!r}, {self.cluster_id}, "
            f"{self._state.value})"
        )

    @property
    def state(self) -> ConnectionState:
        return self._state

    @state.setter
    def state(self, value: ConnectionState) -> None:
        self._state = value
        self.connected = value is ConnectionState.CONNECTED

    def record(self, **changes: Any) -> CustomKeyStoreRecord:
        """The store record, with ``changes`` (name, cluster_id, credential, state,
        error_code) applied to it rather than to the key store."""
        values: dict[str, Any] = {
            "name": self.name,
            "cluster_id": self.cluster_id,
            "credential": self.credential,
            "state": self._persisted_state(),
            "error_code": self.error_code,
        }
        unknown = set(changes) - set(values)
        if unknown:
            raise KeyError(f"not key store fields: {sorted(unknown)}")
        values.update(changes)
        state = values["state"]
        return CustomKeyStoreRecord(
            self.store_id,
            self.account,
            self.region,
            values["name"],
            values["cluster_id"],
            self.created_at,
            {
                "type": CLOUDHSM,
                "trust_anchor": self.trust_anchor,
                "credential": values["credential"].hex(),
                "connection_state": (
                    state.value if isinstance(state, ConnectionState) else state
                ),
                "error_code": values["error_code"],
            },
        )

    def _persisted_state(self) -> ConnectionState:
        # A disconnection in progress is as good as done once it is stored.
        if self._state is ConnectionState.DISCONNECTING:
            return ConnectionState.DISCONNECTED
        return self._state

    def apply(self, record: CustomKeyStoreRecord) -> None:
        """Take over a committed record's name, cluster, credential and state."""
        self.name = record.name
        self.cluster_id = record.cluster_id
        self.credential = bytes.fromhex(record.data["credential"])
        self.state = ConnectionState(record.data["connection_state"])
        self.error_code = record.data.get("error_code")

    @classmethod
    def from_record(
        cls, record: CustomKeyStoreRecord, request_quota: float
    ) -> CustomKeyStore:
        data = record.data
        return cls(
            record.store_id,
            record.account,
            record.region,
            record.name,
            record.cluster_id,
            data["trust_anchor"],
            bytes.fromhex(data["credential"]),
            record.created_at,
            state=ConnectionState(data["connection_state"]),
            error_code=data.get("error_code"),
            request_quota=request_quota,
        )

    # --- the data plane ---------------------------------------------------------------

    def charge(self, n: int = 1) -> None:
        """Count ``n`` requests against the store's request quota.

        Raises:
            ThrottlingError: the store is over its quota (all or none are counted).
        """
        quota = self.quota
        if quota is not None and not quota.take(n):
            raise ThrottlingError(
                f"Rate exceeded: custom key store {self.store_id} request quota of "
                f"{quota.rate:g} requests per second"
            )

    def ready_worker(self, arn: str) -> ClusterWorker:
        """The cluster worker that serves the store's keys, once the store is
        connected and its cluster can serve.

        Raises:
            KeyStateError: disconnected (AWS's "is unavailable"), or the cluster has
                no active HSM (AWS answers such failures of a key store's keys with
                KMSInvalidStateException and a message).
        """
        worker = self.worker
        if worker is None or not self.connected:
            raise KeyStateError(f"{arn} is unavailable.")
        cluster = worker.cluster
        if cluster.hsm_count < 1 or not cluster.active:
            raise KeyStateError(
                f"{arn} is unavailable: CloudHSM cluster {cluster.cluster_id} has no "
                "active HSM."
            )
        return worker

    @contextlib.contextmanager
    def creating_key(self) -> Iterator[None]:
        self.creating += 1
        try:
            yield
        finally:
            self.creating -= 1


class KeyStores:
    """The service's clusters and custom key stores, and their connections."""

    def __init__(
        self,
        svc: KmsService,
        *,
        request_quota: float = DEFAULT_REQUEST_QUOTA,
        connect_seconds: float = DEFAULT_CONNECT_SECONDS,
    ) -> None:
        self.svc = svc
        self.request_quota = request_quota
        self.connect_seconds = connect_seconds
        self.clusters: dict[str, OwnedCluster] = {}
        self.stores: dict[str, CustomKeyStore] = {}
        # The clusters' dedicated partitions by their names in storage, one per
        # backup lineage.
        self.partitions: dict[str, Partition] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Disconnections under way: the stopped worker and the login to end once
        # its running calls are done.
        self._closing: dict[
            CustomKeyStore, tuple[ClusterWorker | None, Session | None]
        ] = {}

    # --- restoring and starting -------------------------------------------------------

    def restore(
        self,
        clusters: Sequence[ClusterRecord],
        stores: Sequence[CustomKeyStoreRecord],
        partitions: Mapping[str, Partition],
    ) -> None:
        """Rebuild clusters and key stores from their records; ``partitions`` are the
        opened partitions by name."""
        spaces: dict[str, CloudHsmCluster] = {}
        for c in clusters:
            partition = partitions[c.partition]
            self.partitions[c.partition] = partition
            sibling = spaces.get(c.partition)
            cluster = CloudHsmCluster.from_settings(
                c.cluster_id,
                partition,
                c.data,
                keys=None if sibling is None else sibling.keys,
            )
            spaces.setdefault(c.partition, cluster)
            self.clusters[c.cluster_id] = OwnedCluster(
                cluster, c.account, c.partition, c.created_at
            )
        for s in stores:
            self.stores[s.store_id] = CustomKeyStore.from_record(s, self.request_quota)

    def adopt_key_slot(self, store_id: str, slot: KeySlot) -> CustomKeyStore:
        """The key store of a restored key, which records the key's slot as kmsuser's
        in the cluster."""
        store = self.stores[store_id]
        self.clusters[store.cluster_id].cluster.keys.adopt(slot, KMS_USER)
        return store

    def start(self, specs: Sequence[ClusterSpec] = ()) -> None:
        """Declare the configured clusters, then reconnect every key store that was
        connected (or connecting) when the service stopped. Runs before the service
        serves, so it writes to the store directly.

        Raises:
            ValidationError: a configured cluster that contradicts the stored one.
        """
        for spec in specs:
            self._declare(spec)
        for store in self.stores.values():
            if store.state in (ConnectionState.CONNECTED, ConnectionState.CONNECTING):
                before = store.state
                self._finish_connect(store)
                if store.state is not before:
                    self.svc.store.put_custom_key_store(store.record())
                _log.info(
                    "custom key store %s: %s at start",
                    store.store_id,
                    store.state.value,
                )

    def _declare(self, spec: ClusterSpec) -> None:
        owned = self.clusters.get(spec.cluster_id)
        if owned is None:
            owned, partition = self.new_cluster(spec, self.svc.clock())
            self.svc.store.put_cluster(owned.record(), partition)
            self._adopt(owned)
            return
        if owned.account != spec.account:
            raise ValidationError(
                f"cluster {spec.cluster_id} belongs to account {owned.account}, "
                f"not {spec.account}"
            )
        cluster = owned.cluster
        if spec.backup_of is not None:
            source = self.clusters.get(spec.backup_of)
            if source is None or source.cluster.lineage != cluster.lineage:
                raise ValidationError(
                    f"cluster {spec.cluster_id} exists with another backup history"
                )
        cluster.configure(
            hsm_count=spec.hsm_count,
            extra_latency_ms=spec.extra_latency_ms,
            capacity_per_second=spec.capacity_per_second,
        )
        cluster.trust_anchor = normalize_certificate(spec.trust_anchor)
        if spec.kmsuser_password is not None:
            user = cluster.users.get(KMS_USER)
            verifier = cluster.verifier(spec.kmsuser_password)
            if user is None or user.verifier != verifier:
                officer = cluster.officer()
                cluster.put_user(officer, KMS_USER, Role.CRYPTO_USER, verifier)
        self.svc.store.put_cluster(owned.record())

    def new_cluster(
        self, spec: ClusterSpec, now: float
    ) -> tuple[OwnedCluster, PartitionRecord | None]:
        """A cluster as ``spec`` describes it, not yet stored: from a backup of
        another cluster of the account (sharing its partition), or new with a new
        partition, whose record is returned to be stored with it. The caller holds
        ``svc.sealing`` when a partition is made while the service runs.

        Raises:
            ValidationError: a source cluster that is not the account's, or a bad
                setting.
        """
        if spec.backup_of is not None:
            source = self.clusters.get(spec.backup_of)
            if source is None or source.account != spec.account:
                raise ValidationError(
                    f"no cluster {spec.backup_of} of account {spec.account} to restore "
                    "a backup of"
                )
            cluster = source.cluster.restored_copy(spec.cluster_id)
            cluster.configure(
                hsm_count=spec.hsm_count,
                extra_latency_ms=spec.extra_latency_ms,
                capacity_per_second=spec.capacity_per_second,
            )
            if normalize_certificate(spec.trust_anchor) != cluster.trust_anchor:
                raise ValidationError(
                    "a cluster restored from a backup keeps the trust anchor of the "
                    "cluster it was backed up from"
                )
            if spec.kmsuser_password is not None:
                cluster.set_user(
                    cluster.officer(), KMS_USER, Role.CRYPTO_USER, spec.kmsuser_password
                )
            owned = OwnedCluster(cluster, spec.account, source.partition_name, now)
            return owned, None
        partition = self.svc.hsm.create_partition(Tenancy.DEDICATED)
        try:
            cluster = CloudHsmCluster(
                spec.cluster_id,
                partition,
                trust_anchor=spec.trust_anchor,
                salt=os.urandom(16),
                hsm_count=spec.hsm_count,
                extra_latency_ms=spec.extra_latency_ms,
                capacity_per_second=spec.capacity_per_second,
            )
            if spec.kmsuser_password is not None:
                cluster.set_user(
                    cluster.officer(), KMS_USER, Role.CRYPTO_USER, spec.kmsuser_password
                )
            name = f"dedicated:{spec.cluster_id}"
            record = PartitionRecord(
                name, Tenancy.DEDICATED.value, partition.export(), now
            )
        except BaseException:
            partition.destroy()
            raise
        return OwnedCluster(cluster, spec.account, name, now), record

    def forget_new_cluster(self, owned: OwnedCluster, made_partition: bool) -> None:
        """Undo ``new_cluster`` when the store refused it."""
        if made_partition:
            owned.cluster.partition.destroy()

    def adopt_cluster(self, owned: OwnedCluster) -> None:
        """Take a stored new cluster into memory."""
        self._adopt(owned)

    def _adopt(self, owned: OwnedCluster) -> None:
        self.clusters[owned.cluster_id] = owned
        self.partitions[owned.partition_name] = owned.cluster.partition

    def cluster_of(self, account: str, cluster_id: str) -> OwnedCluster | None:
        """The account's cluster of that id; another account's is not found."""
        owned = self.clusters.get(cluster_id)
        return owned if owned is not None and owned.account == account else None

    # --- connections ------------------------------------------------------------------

    def begin_connect(self, store: CustomKeyStore) -> None:
        """Start logging in a store that the caller has stored as CONNECTING."""
        store.attempt += 1
        attempt = store.attempt
        task = asyncio.ensure_future(self._connect_later(store, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_later(self, store: CustomKeyStore, attempt: int) -> None:
        try:
            await asyncio.sleep(self.connect_seconds)
            async with self.svc.control:
                if store.attempt != attempt or self.stores.get(store.store_id) is not (
                    store
                ):
                    return
                self._finish_connect(store)
                try:
                    await self.svc.write(
                        self.svc.store.put_custom_key_store, store.record()
                    )
                except BaseException:
                    # The outcome is not durable: stay CONNECTING, as the store says,
                    # and try again at the next start.
                    self._drop_connection(store)
                    store.state = ConnectionState.CONNECTING
                    store.error_code = None
                    raise
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("connecting custom key store %s failed", store.store_id)

    def _finish_connect(self, store: CustomKeyStore) -> None:
        """Log in to the store's cluster as kmsuser and start its worker: CONNECTED,
        or FAILED with the error code that says why."""
        owned = self.clusters.get(store.cluster_id)
        if owned is None:
            self._fail(store, CLUSTER_NOT_FOUND)
            return
        cluster = owned.cluster
        try:
            session = cluster.login(KMS_USER, store.credential)
        except ClusterLoginError as exc:
            self._fail(store, _LOGIN_ERRORS.get(type(exc), INTERNAL_ERROR))
            return
        try:
            worker = ClusterWorker(cluster, self.svc.loop)
        except BaseException:
            cluster.logout(session)
            raise
        store.session, store.worker = session, worker
        store.state = ConnectionState.CONNECTED
        store.error_code = None

    def _fail(self, store: CustomKeyStore, code: str) -> None:
        store.state = ConnectionState.FAILED
        store.error_code = code
        _log.info("custom key store %s failed to connect: %s", store.store_id, code)

    def begin_disconnect(self, store: CustomKeyStore) -> None:
        """Stop the store's worker at once (what waits for it fails with
        KeyStateError), and, once the calls already running on it are done, log out;
        the store is DISCONNECTING until then. The caller has stored the store as
        DISCONNECTED."""
        store.attempt += 1
        store.state = ConnectionState.DISCONNECTING
        store.error_code = None
        worker, session = self._detach(store)
        self._closing[store] = (worker, session)
        attempt = store.attempt
        task = asyncio.ensure_future(self._disconnect_later(store, worker, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _detach(
        self, store: CustomKeyStore
    ) -> tuple[ClusterWorker | None, Session | None]:
        """Take the store's worker and login from it, and stop the worker: the keys
        are unavailable from here on, and nothing waits on the worker forever."""
        worker, session = store.worker, store.session
        store.worker = store.session = None
        if worker is not None:
            worker.stop(
                KeyStateError(
                    f"Custom key store {store.store_id} was disconnected before the "
                    "request was served."
                )
            )
        return worker, session

    def _logout(self, store: CustomKeyStore, session: Session | None) -> None:
        if session is not None:
            owned = self.clusters.get(store.cluster_id)
            if owned is not None:
                owned.cluster.logout(session)

    def _drop_connection(self, store: CustomKeyStore) -> None:
        """Stop the store's worker, wait for its running calls (milliseconds once
        stopped), and log out."""
        worker, session = self._detach(store)
        if worker is not None:
            worker.join()
        self._logout(store, session)

    async def _disconnect_later(
        self, store: CustomKeyStore, worker: ClusterWorker | None, attempt: int
    ) -> None:
        if worker is not None:
            # On a thread of its own: the loop's default executor is shared with
            # every tenant's password checks.
            await worker.wait_closed()
        # Logged out only now: a call running on the worker (GenerateRandom, say)
        # still holds a valid session.
        _, session = self._closing.pop(store, (None, None))
        self._logout(store, session)
        if store.attempt == attempt:
            store.state = ConnectionState.DISCONNECTED

    def destroy_slot(self, store: CustomKeyStore, slot: KeySlot) -> None:
        """Destroy a deleted key's material in its cluster: logged in as its owner
        while the store is connected; otherwise cleaned up from the cluster's storage
        (AWS makes a best effort; here the material would otherwise be unreachable).

        Raises:
            KeyUnavailableError: the slot was destroyed already.
        """
        cluster = self.clusters[store.cluster_id].cluster
        session = store.session if store.connected else None
        try:
            cluster.destroy_key(session, slot)
        except ClusterRoleError:
            # The session was ended under the store (its user deleted, say): the
            # material is KMS's to clean up all the same.
            cluster.destroy_key(None, slot)

    def keys_of(self, store: CustomKeyStore) -> int:
        """How many KMS keys the store holds, in any state (and being created)."""
        return store.creating + sum(
            1 for k in self.svc.keys.values() if k.key_store is store
        )

    def in_use(self, account: str, lineage: str, besides: str | None = None) -> bool:
        """Whether a key store of the account (other than ``besides``) uses a cluster
        of ``lineage``."""
        for store in self.stores.values():
            if store.account != account or store.store_id == besides:
                continue
            owned = self.clusters.get(store.cluster_id)
            if owned is not None and owned.cluster.lineage == lineage:
                return True
        return False

    def close(self) -> None:
        """Stop every connection's worker (at shutdown): what waits for one fails,
        and this returns once the native calls already running are done."""
        for task in list(self._tasks):
            task.cancel()
        for store, (worker, session) in list(self._closing.items()):
            if worker is not None:
                worker.join()
            self._logout(store, session)
        self._closing.clear()
        for store in self.stores.values():
            self._drop_connection(store)
