"""The emulated CloudHSM cluster: what a KMS custom key store depends on.

A cluster is dedicated hardware: a partition on a native HSM of its own, the users of
the cluster (crypto officers, who manage users, and crypto users, who own and use
keys), a number of active HSMs, and, while a key store is connected, worker threads of
its own that carry its batches, paced by an optional round-trip latency and capacity.
Nothing of it is shared with another cluster except the root key that wraps its
partition key for storage. Clusters restored from one another's backups (one lineage)
share a cluster certificate, the users they were restored with, and the key material.

It models the CloudHSM behaviour that KMS relies on (AWS CloudHSM User Guide, "HSM
users" and "Managing keys"; AWS KMS Developer Guide, "Troubleshooting a CloudHSM key
store"): a user logs in with its password; a crypto user that is locked out, already
logged in elsewhere, or missing cannot log in; a cluster with no active HSM takes no
login; only a crypto user may generate or use keys, and only a key's owner may destroy
it. This layer knows clusters, users and handles, never accounts, KMS keys or key
stores. Passwords are kept only as salted scrypt verifiers, never as given.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from keyplane.errors import (
    ClusterCredentialsError,
    ClusterHsmsUnavailableError,
    ClusterRoleError,
    ClusterUserLockedOutError,
    ClusterUserLoggedInError,
    ClusterUserNotFoundError,
    KeyplaneError,
    KeyStateError,
    LimitExceededError,
    ValidationError,
)
from keyplane.hsm._batcher import Batcher
from keyplane.hsm._hsm import KeySlot, Partition
from keyplane.native import NativeHsm, random_bytes

T = TypeVar("T")

# AWS CloudHSM User Guide, "Quotas": at most 28 HSMs and 3,300 keys per cluster;
# passwords are 7 to 32 characters, user names at most 31.
MAX_HSMS: Final = 28
MAX_KEYS: Final = 3300
MIN_PASSWORD_CHARS: Final = 7
MAX_PASSWORD_CHARS: Final = 32
MAX_USER_NAME_CHARS: Final = 31
CLUSTER_ID: Final = re.compile(r"cluster-[2-7a-zA-Z]{11,16}")
KMS_USER: Final = "kmsuser"
OFFICER: Final = "admin"

# scrypt at these settings costs tens of milliseconds and 16 MiB per check (RFC 7914
# section 2's interactive-login figures): cheap for a login, dear for a guesser.
_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
SALT_BYTES: Final = 16
# The session token of a login held from outside KMS (see ``hold_session``).
_HELD: Final = -1
# A paced cluster serves at least one operation a second: at less, a batch of a few
# thousand items would hold its worker (and a shutdown) for hours.
MIN_CAPACITY_PER_SECOND: Final = 1.0
# The longest a batch is held back for pacing, however far behind the cluster is: as
# long as the largest round-trip latency a cluster may have.
MAX_PACING_SECONDS: Final = 60.0


class Role(enum.Enum):
    """CloudHSM user types, by their CloudHSM abbreviations."""

    CRYPTO_OFFICER = "CO"
    """Manages users; cannot own or use keys."""
    CRYPTO_USER = "CU"
    """Owns keys it generates and uses them."""


def password_verifier(password: str, salt: bytes) -> bytes:
    """The salted scrypt verifier of ``password``: what the cluster keeps of it, and
    what a client that knows the cluster's salt presents to log in.

    Raises:
        ValidationError: a password outside 7-32 characters.
    """
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValidationError(
            f"a CloudHSM password is {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} "
            "characters"
        )
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


@dataclass(slots=True)
class ClusterUser:
    name: str
    role: Role
    verifier: bytes = field(repr=False)
    locked_out: bool = False


@dataclass(frozen=True, slots=True)
class Session:
    """A user's login to one cluster; the cluster checks it on every key operation."""

    cluster_id: str
    user: str
    role: Role
    token: int = field(repr=False)


class CloudHsmCluster:
    """One emulated CloudHSM cluster.

    Thread-safe for its key operations; user management and settings are changed on
    the event loop's thread only.
    """

    def __init__(
        self,
        cluster_id: str,
        partition: Partition,
        *,
        trust_anchor: str,
        salt: bytes,
        lineage: str | None = None,
        hsm_count: int = 2,
        active: bool = True,
        extra_latency_ms: float = 0.0,
        capacity_per_second: float = 0.0,
        users: Mapping[str, ClusterUser] | None = None,
        keys: KeySpace | None = None,
    ) -> None:
        """A cluster over ``partition`` (a dedicated one, shared only with the other
        clusters of its lineage, which share ``keys`` too).

        Raises:
            ValidationError: a malformed id or a setting out of range.
        """
        if not CLUSTER_ID.fullmatch(cluster_id):
            raise ValidationError(
                f"a cluster id looks like cluster-1a23b4cdefg, not {cluster_id!r}"
            )
        self.cluster_id = cluster_id
        self.partition = partition
        self.lineage = lineage or cluster_id
        self.trust_anchor = normalize_certificate(trust_anchor)
        self.salt = salt
        self.hsm_count = 0
        self.active = active
        self.extra_latency_ms = 0.0
        self.capacity_per_second: float | None = None
        self.configure(
            hsm_count=hsm_count,
            extra_latency_ms=extra_latency_ms,
            capacity_per_second=capacity_per_second,
        )
        self.users: dict[str, ClusterUser] = dict(users or {})
        self._sessions: dict[str, int] = {}
        self.keys = keys if keys is not None else KeySpace(partition)
        self.pacer = Pacer(self)

    def __repr__(self) -> str:
        return (
            f"CloudHsmCluster({self.cluster_id}, hsms={self.hsm_count}, "
            f"users={sorted(self.users)})"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a CloudHsmCluster cannot be pickled")

    # --- settings ---------------------------------------------------------------------

    def configure(
        self,
        *,
        hsm_count: int | None = None,
        active: bool | None = None,
        extra_latency_ms: float | None = None,
        capacity_per_second: float | None = None,
    ) -> None:
        """Change the cluster's hardware settings (None leaves one as it is); a
        capacity of 0 makes the cluster's throughput unlimited.

        Raises:
            ValidationError: a setting out of range.
        """
        if hsm_count is not None:
            if (
                isinstance(hsm_count, bool)
                or not isinstance(hsm_count, int)
                or not 0 <= hsm_count <= MAX_HSMS
            ):
                raise ValidationError(f"a cluster has 0 to {MAX_HSMS} HSMs")
            self.hsm_count = hsm_count
        if active is not None:
            self.active = active
        if extra_latency_ms is not None:
            if not 0 <= extra_latency_ms <= 60_000:
                raise ValidationError("extra latency is 0 to 60000 milliseconds")
            self.extra_latency_ms = float(extra_latency_ms)
        if capacity_per_second is not None:
            if not (
                capacity_per_second == 0
                or MIN_CAPACITY_PER_SECOND <= capacity_per_second < 1e12
            ):
                raise ValidationError(
                    "capacity is 0 (unlimited) or at least "
                    f"{MIN_CAPACITY_PER_SECOND:g} operation a second"
                )
            self.capacity_per_second = (
                float(capacity_per_second) if capacity_per_second else None
            )

    def settings(self) -> dict[str, Any]:
        """What storage keeps of the cluster (JSON-serialisable; verifiers, never
        passwords)."""
        return {
            "lineage": self.lineage,
            "trust_anchor": self.trust_anchor,
            "salt": self.salt.hex(),
            "hsm_count": self.hsm_count,
            "active": self.active,
            "extra_latency_ms": self.extra_latency_ms,
            "capacity_per_second": self.capacity_per_second,
            "users": {
                u.name: {
                    "role": u.role.value,
                    "verifier": u.verifier.hex(),
                    "locked_out": u.locked_out,
                }
                for u in self.users.values()
            },
        }

    @classmethod
    def from_settings(
        cls,
        cluster_id: str,
        partition: Partition,
        settings: Mapping[str, Any],
        *,
        keys: KeySpace | None = None,
    ) -> CloudHsmCluster:
        """A cluster from ``settings()`` as storage gave it back; ``keys`` is the key
        space of another cluster of its lineage, when one was restored already."""
        users = {
            name: ClusterUser(
                name,
                Role(u["role"]),
                bytes.fromhex(u["verifier"]),
                bool(u.get("locked_out", False)),
            )
            for name, u in settings.get("users", {}).items()
        }
        return cls(
            cluster_id,
            partition,
            trust_anchor=settings["trust_anchor"],
            salt=bytes.fromhex(settings["salt"]),
            lineage=settings.get("lineage"),
            hsm_count=int(settings.get("hsm_count", 2)),
            active=bool(settings.get("active", True)),
            extra_latency_ms=float(settings.get("extra_latency_ms", 0.0)),
            capacity_per_second=settings.get("capacity_per_second") or 0.0,
            users=users,
            keys=keys,
        )

    def load_settings(self, settings: Mapping[str, Any]) -> None:
        """Go back to ``settings()`` taken earlier (a change storage refused). The
        lineage, salt and sessions stay as they are."""
        self.trust_anchor = normalize_certificate(settings["trust_anchor"])
        self.active = bool(settings.get("active", True))
        self.configure(
            hsm_count=int(settings.get("hsm_count", 2)),
            extra_latency_ms=float(settings.get("extra_latency_ms", 0.0)),
            capacity_per_second=settings.get("capacity_per_second") or 0.0,
        )
        self.users = {
            name: ClusterUser(
                name,
                Role(u["role"]),
                bytes.fromhex(u["verifier"]),
                bool(u.get("locked_out", False)),
            )
            for name, u in settings.get("users", {}).items()
        }

    def restored_copy(self, cluster_id: str) -> CloudHsmCluster:
        """A new cluster made from a backup of this one: the same lineage, trust
        anchor, salt and users (as they are now), over the lineage's key material."""
        return CloudHsmCluster(
            cluster_id,
            self.partition,
            keys=self.keys,
            trust_anchor=self.trust_anchor,
            salt=self.salt,
            lineage=self.lineage,
            hsm_count=self.hsm_count,
            extra_latency_ms=self.extra_latency_ms,
            capacity_per_second=self.capacity_per_second or 0.0,
            users={
                u.name: ClusterUser(u.name, u.role, u.verifier, u.locked_out)
                for u in self.users.values()
            },
        )

    # --- users ------------------------------------------------------------------------

    def verifier(self, password: str) -> bytes:
        """What a client presents to log in with ``password`` (see
        ``password_verifier``)."""
        return password_verifier(password, self.salt)

    def login(self, user: str, verifier: bytes) -> Session:
        """Log ``user`` in; it stays logged in until ``logout``.

        Raises:
            ClusterHsmsUnavailableError: the cluster has no active HSM, or is not
                active.
            ClusterUserNotFoundError, ClusterUserLockedOutError,
            ClusterUserLoggedInError, ClusterCredentialsError: as named.
        """
        if not self.active or self.hsm_count < 1:
            raise ClusterHsmsUnavailableError(
                f"{self.cluster_id} has no active HSM to log in to"
            )
        found = self.users.get(user)
        if found is None:
            raise ClusterUserNotFoundError(f"{self.cluster_id} has no user {user!r}")
        if found.locked_out:
            raise ClusterUserLockedOutError(f"{user} is locked out of the cluster")
        if user in self._sessions:
            raise ClusterUserLoggedInError(f"{user} is already logged in")
        if not hmac.compare_digest(verifier, found.verifier):
            raise ClusterCredentialsError(f"wrong password for {user}")
        token = int.from_bytes(os.urandom(8), "big")
        self._sessions[user] = token
        return Session(self.cluster_id, user, found.role, token)

    def logout(self, session: Session) -> None:
        """End ``session``; a session already ended is left alone."""
        if self._sessions.get(session.user) == session.token:
            del self._sessions[session.user]

    def logged_in(self, user: str) -> bool:
        return user in self._sessions

    def officer(self) -> Session:
        """A crypto officer's session, as the cluster's owner opens with its
        management utility: what keyplane's administrative operations act as."""
        return Session(self.cluster_id, OFFICER, Role.CRYPTO_OFFICER, 0)

    def set_user(
        self, officer: Session, name: str, role: Role, password: str
    ) -> ClusterUser:
        """Create a user, or give an existing one a new password (which also ends a
        lockout).

        Raises:
            ClusterRoleError: ``officer`` is not a crypto officer of this cluster.
            ValidationError: a malformed name or password.
        """
        return self.put_user(officer, name, role, self.verifier(password))

    def put_user(
        self, officer: Session, name: str, role: Role, verifier: bytes
    ) -> ClusterUser:
        """``set_user`` with the password's verifier computed already (scrypt is
        slow: a caller on an event loop computes it on another thread).

        Raises:
            ClusterRoleError: ``officer`` is not a crypto officer of this cluster.
            ValidationError: a malformed name.
        """
        self._require_officer(officer)
        if not 1 <= len(name) <= MAX_USER_NAME_CHARS or not name.isprintable():
            raise ValidationError(
                f"a user name is 1 to {MAX_USER_NAME_CHARS} characters"
            )
        user = ClusterUser(name, role, verifier)
        self.users[name] = user
        return user

    def delete_user(self, officer: Session, name: str) -> None:
        """Delete a user (and end its session).

        Raises:
            ClusterRoleError: not a crypto officer's session.
            ClusterUserNotFoundError: no such user.
        """
        self._require_officer(officer)
        if self.users.pop(name, None) is None:
            raise ClusterUserNotFoundError(f"{self.cluster_id} has no user {name!r}")
        self._sessions.pop(name, None)

    def set_locked_out(self, officer: Session, name: str, locked: bool) -> None:
        """Lock a user out, or let it back in.

        Raises:
            ClusterRoleError: not a crypto officer's session.
            ClusterUserNotFoundError: no such user.
        """
        self._require_officer(officer)
        user = self.users.get(name)
        if user is None:
            raise ClusterUserNotFoundError(f"{self.cluster_id} has no user {name!r}")
        user.locked_out = locked

    def hold_session(self, officer: Session, name: str, held: bool) -> None:
        """Log ``name`` in from outside KMS, as a person with the cluster's tools
        would (``held``), or end that login: how a cluster's owner blocks the user's
        login, and frees it again. A login of someone else is left alone.

        Raises:
            ClusterRoleError: not a crypto officer's session.
            ClusterUserNotFoundError: no such user.
            ClusterUserLoggedInError: someone else is logged in as the user.
        """
        self._require_officer(officer)
        if name not in self.users:
            raise ClusterUserNotFoundError(f"{self.cluster_id} has no user {name!r}")
        current = self._sessions.get(name)
        if held:
            if current is not None and current != _HELD:
                raise ClusterUserLoggedInError(f"{name} is already logged in")
            self._sessions[name] = _HELD
        elif current == _HELD:
            del self._sessions[name]

    def _require_officer(self, session: Session) -> None:
        if (
            session.cluster_id != self.cluster_id
            or session.role is not Role.CRYPTO_OFFICER
        ):
            raise ClusterRoleError("only a crypto officer of the cluster manages users")

    def _require_user(self, session: Session) -> None:
        if (
            session.cluster_id != self.cluster_id
            or session.role is not Role.CRYPTO_USER
            or self._sessions.get(session.user) != session.token
        ):
            raise ClusterRoleError(
                "only a crypto user logged in to the cluster uses keys"
            )

    # --- keys -------------------------------------------------------------------------

    def generate_key(self, session: Session) -> KeySlot:
        """A new persistent, non-exportable AES-256 key owned by the session's user.

        Raises:
            ClusterRoleError: not a logged-in crypto user's session.
            LimitExceededError: the cluster holds as many keys as it can.
        """
        self._require_user(session)
        return self.keys.generate(session.user, self.cluster_id)

    def destroy_key(self, session: Session | None, slot: KeySlot) -> None:
        """Destroy a key. With a session, only the key's owner may; without one, the
        key is being cleaned up by whoever holds the cluster's storage (KMS, at the
        end of a deletion window, when it is not logged in).

        Raises:
            ClusterRoleError: the session's user does not own the key.
            KeyUnavailableError: the key was already destroyed.
        """
        if session is not None:
            self._require_user(session)
            if self.keys.owner_of(slot) != session.user:
                raise ClusterRoleError("only a key's owner may destroy it")
        self.keys.destroy(slot)

    def random(self, session: Session, n: int) -> bytes:
        """``n`` random bytes from the cluster's generator (GenerateRandom).

        Raises:
            ClusterRoleError: not a logged-in crypto user's session.
        """
        self._require_user(session)
        return random_bytes(n)


class KeySpace:
    """The key handles of a lineage's partition and the crypto user owning each."""

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        self._owners: dict[int, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)

    def generate(self, owner: str, cluster_id: str) -> KeySlot:
        with self._lock:
            if len(self._owners) >= MAX_KEYS:
                raise LimitExceededError(
                    f"{cluster_id} holds {MAX_KEYS} keys, the most a cluster can"
                )
            slot = self.partition.generate_key()
            self._owners[slot.handle] = owner
        return slot

    def adopt(self, slot: KeySlot, owner: str = KMS_USER) -> None:
        """Record ``owner`` as the owner of a key restored into the partition."""
        with self._lock:
            self._owners[slot.handle] = owner

    def owner_of(self, slot: KeySlot) -> str | None:
        with self._lock:
            return self._owners.get(slot.handle)

    def destroy(self, slot: KeySlot) -> None:
        with self._lock:
            self._owners.pop(slot.handle, None)
        self.partition.destroy_key(slot)


def normalize_certificate(text: str) -> str:
    """A certificate's text as compared: line endings and surrounding blanks do not
    make it another certificate."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


class Pacer:
    """Makes a batch take as long as the cluster's hardware would: the configured
    round-trip latency, and at most ``capacity_per_second`` items a second across
    every worker of the cluster. Called on a worker thread, before the native call.

    No batch waits longer than ``MAX_PACING_SECONDS``: a cluster far behind its
    capacity then serves faster than configured rather than holding requests (and
    its threads) for hours."""

    def __init__(self, cluster: CloudHsmCluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self._free_at = 0.0
        self._threads: set[str] = set()

    def thread_names(self) -> list[str]:
        """The threads that have carried the cluster's batches (for metrics)."""
        with self._lock:
            return sorted(self._threads)

    def __call__(self, items: int, stop: threading.Event | None = None) -> None:
        """Wait as long as ``items`` items take, or until ``stop`` is set (the
        worker is stopping: the caller checks it before going on)."""
        name = threading.current_thread().name
        if name not in self._threads:
            with self._lock:
                self._threads.add(name)
        latency = self._cluster.extra_latency_ms / 1000.0
        capacity = self._cluster.capacity_per_second
        wait = latency
        if capacity is not None:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._free_at)
                self._free_at = min(start + items / capacity, now + MAX_PACING_SECONDS)
                wait = max(wait, self._free_at - now)
        wait = min(wait, MAX_PACING_SECONDS)
        if wait > 0:
            if stop is None:
                time.sleep(wait)
            else:
                stop.wait(wait)


class _PacedNative:
    """The native HSM of a cluster as its batcher sees it: every call paced first."""

    def __init__(self, native: NativeHsm, pace: Callable[[int], None]) -> None:
        self._native = native
        self._pace = pace

    def encrypt_batch(self, scope: int, handles: Any, inputs: Any, aad: Any) -> Any:
        self._pace(len(inputs))
        return self._native.encrypt_batch(scope, handles, inputs, aad)

    def decrypt_batch(self, scope: int, handles: Any, inputs: Any, aad: Any) -> Any:
        self._pace(len(inputs))
        return self._native.decrypt_batch(scope, handles, inputs, aad)

    def generate_data_key_batch(
        self, scope: int, handles: Any, key_bytes: Any, n: int, aad: Any
    ) -> Any:
        self._pace(n)
        return self._native.generate_data_key_batch(scope, handles, key_bytes, n, aad)


class ClusterWorker:
    """The scheduler and threads of a connected cluster: its own micro-batcher, and
    one worker thread per active HSM (at least one), never shared with another
    cluster or with the shared fleet. Every batch runs on these threads, paced.

    Stopping is in two steps: ``stop`` (on the event loop's thread) fails every item
    not yet in a native call with the error it is given and makes later work fail
    the same way at once; ``join`` or ``wait_closed`` then waits for the native calls
    already running, which take milliseconds (pacing waits end at ``stop``).
    """

    def __init__(
        self, cluster: CloudHsmCluster, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.cluster = cluster
        self.threads = max(1, cluster.hsm_count)
        self._loop = loop
        self._executor = ThreadPoolExecutor(
            self.threads, thread_name_prefix=f"keyplane-{cluster.cluster_id}"
        )
        self._stopping = threading.Event()
        self._error: KeyplaneError | None = None
        # offload_items=1: every batch goes to this cluster's threads, however small.
        # The batcher takes the paced native HSM for a NativeHsm: it calls only the
        # three batch methods _PacedNative has.
        self.batcher = Batcher(
            cast(NativeHsm, _PacedNative(cluster.partition.native, self._pace)),
            loop,
            executor=self._executor,
            offload_items=1,
        )

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def _pace(self, items: int) -> None:
        """Pace ``items`` items on a worker thread; refuse them once stopping.

        Raises:
            KeyplaneError: the error ``stop`` was given.
        """
        self.cluster.pacer(items, self._stopping)
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        error = self._error
        if error is not None:
            # A copy per raise: the same instance raised on several threads would
            # share one traceback.
            raise copy.copy(error)

    async def run(self, fn: Callable[..., T], *args: Any, items: int) -> T:
        """Run one call of ``items`` items on the cluster's threads, paced.

        Raises:
            KeyplaneError: the worker stopped before the call began (the error
                ``stop`` was given), or whatever ``fn`` raises.
        """
        self._raise_if_stopped()

        def paced() -> T:
            self._pace(items)
            return fn(*args)

        try:
            submitted = self._executor.submit(paced)
        except RuntimeError:
            # Shut down between the check and here: only ``stop`` shuts it down.
            self._raise_if_stopped()
            raise
        try:
            return await asyncio.wrap_future(submitted, loop=self._loop)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if submitted.cancelled() and task is not None and not task.cancelling():
                # Cancelled by the shutdown of a stopping worker, not by our caller.
                self._raise_if_stopped()
            raise

    def stop(self, error: KeyplaneError) -> None:
        """Fail every item waiting for the cluster with ``error`` (and every later
        one), end pacing waits, and start shutting the threads down. Called on the
        event loop's thread; idempotent."""
        if self._error is None:
            self._error = error
        self._stopping.set()
        self.batcher.close(self._error)
        # Calls not yet started are cancelled: their callers get ``error``.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def join(self) -> None:
        """Wait until the native calls running on the worker's threads are done
        (after ``stop``, a few milliseconds)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def wait_closed(self) -> None:
        """``join`` without blocking the event loop or taking a thread that anything
        else shares: a thread of its own waits for the worker's threads."""
        done: asyncio.Future[None] = self._loop.create_future()

        def joined() -> None:
            if not done.done():
                done.set_result(None)

        def join_then_tell() -> None:
            try:
                self.join()
            finally:
                # The loop may be closed by now (a shutdown): nobody waits then.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(joined)

        threading.Thread(
            target=join_then_tell,
            name=f"keyplane-{self.cluster.cluster_id}-join",
            daemon=True,
        ).start()
        await done

    def close(self, error: KeyplaneError | None = None) -> None:
        """``stop`` (with ``error``, or one saying the worker stopped), then
        ``join``: on the event loop's thread, it blocks for at most the native calls
        already running."""
        self.stop(
            error
            or KeyStateError(
                f"CloudHSM cluster {self.cluster.cluster_id} is no longer connected."
            )
        )
        self.join()
