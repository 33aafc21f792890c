"""The Store contract: every backend (embedded SQLite or LMDB, PostgreSQL) implements it.

Keys are normalised handles (``protocol.identifier.Handle.key``): the store
never normalises or validates them itself. Records are tuples of
``HandleValue``; timestamps are set by the caller. Every write returns only
once it is durable against a crash of this process; a write that raises has
changed nothing (all or nothing, per call, and per item for ``put_many``).

Errors are the protocol's (``protocol.errors``): ``HandleNotFound`` (100),
``HandleAlreadyExists`` (101), ``ValuesNotFound`` (200),
``ValueAlreadyExists`` (201); failures of the storage itself are
``StoreError`` (rc 2) and its subclasses below, shared by every backend.

``add_values`` leaves the record sorted by index; ``put`` keeps the caller's
order. Removing every value leaves an empty record, not a deleted handle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from protocol.codes import RC
from protocol.errors import HandleError, MalformedMessage
from protocol.record_msgpack import decode_record
from protocol.values import HandleValue

Record = tuple[HandleValue, ...]
# A record as the resolve path reads it (``Store.inline_reader``): a sequence
# of values that may be made on demand (``protocol.record_msgpack.StoredRecord``).
RecordView = Sequence[HandleValue]


class StoreError(HandleError):
    """The storage itself failed (I/O, disk full, corrupt data): rc 2."""

    rc = RC.ERROR


class StoreBusy(StoreError):
    """The database stayed locked by another process: rc 3, retry later."""

    rc = RC.SERVER_TOO_BUSY


class StoreClosed(StoreError):
    """The store is not open (never opened, or closed)."""


class IncompatibleSchema(StoreError):
    """The store was written by a newer idnode, or is not an idnode store."""


@dataclass(frozen=True, slots=True)
class PutItem:
    """One record of a batch: create (``overwrite=False``) or create-or-replace."""

    key: str
    values: Sequence[HandleValue]
    overwrite: bool = True


@dataclass(frozen=True, slots=True)
class Account:
    """An application identity of the SNMS API: a login bound to one enterprise prefix.

    ``secret_hash`` is ``registry.credentials.hash_secret`` of the password;
    ``generation`` is bumped to revoke every token issued before.
    """

    username: str
    prefix: str
    role: str
    secret_hash: bytes
    generation: int = 0


APPLICATION_STATES = ("pending", "approved", "rejected")


@dataclass(frozen=True, slots=True)
class Application:
    """An enterprise's application for a prefix, and the auditor's decision on it.

    ``id`` is assigned by the store (0 before ``add_application``). Times are
    Unix seconds set by the caller. ``prefix`` is the prefix allocated on
    approval; ``requested_prefix`` what the applicant asked for, if anything.
    """

    id: int
    applicant: str
    enterprise: str
    requested_prefix: str | None
    detail: str
    created_at: int
    state: str = "pending"
    decided_by: str | None = None
    decided_at: int | None = None
    reason: str | None = None
    prefix: str | None = None


class ApplicationNotFound(HandleError):
    rc = RC.HANDLE_NOT_FOUND


class ApplicationConflict(HandleError):
    """The application is no longer pending, or the applicant has one pending already."""

    rc = RC.INVALID_VALUE


class PrefixTaken(HandleError):
    """The prefix is homed here already, or allocated to another application."""

    rc = RC.HANDLE_ALREADY_EXISTS


@dataclass(frozen=True, slots=True)
class StatsCount:
    """Registrations and resolutions one node counted for one prefix in one interval."""

    node: str
    prefix: str
    interval_start: int  # Unix seconds
    interval_seconds: int
    registrations: int
    resolutions: int


# Per item of a batch: True = created, False = replaced, or the error that
# left that item unchanged (e.g. HandleAlreadyExists).
PutResult = bool | HandleError


class Store(ABC):
    """Async registration store. Open before use; close to release files/pools."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # -- handles -----------------------------------------------------------

    @abstractmethod
    async def get(self, key: str) -> Record | None:
        """The record, or None when the handle does not exist."""

    def inline_reader(self) -> Callable[[str], RecordView | None] | None:
        """``get`` as a plain function, for a backend whose reads never wait on
        anything but the disk (SQLite reads inline on the event loop thread):
        a caller then skips the coroutine and task around each lookup. None
        (the default) where a read awaits a server."""
        return None

    def warming(self) -> bool:
        """Whether the store is still bringing its pages into memory after
        opening (an LMDB map being populated): it answers, but slowly, and a
        node says it is not ready yet. False (the default) for the others."""
        return False

    @abstractmethod
    async def create(self, key: str, values: Sequence[HandleValue]) -> None:
        """Create; raises HandleAlreadyExists if the key exists."""

    @abstractmethod
    async def put(self, key: str, values: Sequence[HandleValue]) -> bool:
        """Create or replace the whole record. Returns True if it was created."""

    @abstractmethod
    async def add_values(
        self, key: str, values: Sequence[HandleValue], *, overwrite: bool = True
    ) -> bool:
        """Add values to an existing record, replacing equal indexes when ``overwrite``.

        Raises HandleNotFound, or ValueAlreadyExists for a taken index when not
        ``overwrite``. Returns True if any index was new.
        """

    @abstractmethod
    async def remove_values(self, key: str, indexes: Sequence[int]) -> None:
        """Remove these indexes, all or nothing.

        Raises HandleNotFound, or ValuesNotFound if any index is absent.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete the whole record; raises HandleNotFound."""

    @abstractmethod
    async def put_many(self, items: Sequence[PutItem]) -> list[PutResult]:
        """Write a batch in as few transactions as the backend can; one result per item."""

    async def load_records(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Bulk load: create or replace each ``(key, record)``, the record already
        encoded by ``protocol.record_msgpack`` (``idnode import`` encodes in its
        parse processes). Sorted keys suit every backend's index best; a key
        repeated in ``records`` ends with its last record.

        Raises StoreError if the batch could not be written. This default goes
        through ``put_many``; a backend may write the bytes as they are, in one
        transaction per call.
        """
        items = []
        for key, blob in records:
            try:
                values = decode_record(blob)
            except MalformedMessage as exc:
                raise StoreError(f"record of {key!r} is not a stored record: {exc}") from exc
            items.append(PutItem(key, values))
        for item, result in zip(items, await self.put_many(items), strict=True):
            if isinstance(result, HandleError):
                raise StoreError(f"{item.key}: {result.message or result.rc!r}")

    @abstractmethod
    async def list_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        """Keys under ``prefix`` (``<PREFIX>/...``), sorted, paged."""

    @abstractmethod
    async def count_handles(self, prefix: str | None = None) -> int:
        """Number of handles under ``prefix``, or in the whole store."""

    @abstractmethod
    def iter_records(self, prefix: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Every (key, record), sorted by key, streamed (for export)."""

    # -- prefixes served by this node ---------------------------------------

    @abstractmethod
    async def home_prefix(self, prefix: str) -> bool:
        """Mark ``prefix`` (upper-cased) as served here. True if it was new."""

    @abstractmethod
    async def unhome_prefix(self, prefix: str) -> bool:
        """Stop serving ``prefix``. True if it was homed."""

    @abstractmethod
    async def homed_prefixes(self) -> list[str]:
        """All homed prefixes, sorted."""

    # -- SNMS application data: accounts and metadata templates ---------------
    # Separate from handle records; small tables, read rarely (accounts once
    # per token check, templates once per validated write).

    @abstractmethod
    async def get_account(self, username: str) -> Account | None:
        """The account, or None."""

    @abstractmethod
    async def put_account(self, account: Account) -> None:
        """Create or replace the account named ``account.username``."""

    @abstractmethod
    async def get_template(self, prefix: str, version: str) -> str | None:
        """The template document (JSON text) of ``prefix`` (upper-cased) and ``version``."""

    @abstractmethod
    async def put_template(self, prefix: str, version: str, document: str) -> bool:
        """Create or replace a template. True if it was created."""

    @abstractmethod
    async def delete_template(self, prefix: str, version: str) -> bool:
        """Delete a template. True if there was one."""

    # -- prefix applications (secondary node) --------------------------------
    # An enterprise applies, an auditor decides; approval homes the prefix,
    # writes its admin records and binds the applicant's account in ONE
    # transaction, so no crash leaves a half-allocated prefix behind.

    @abstractmethod
    async def add_application(self, application: Application) -> Application:
        """Store a new pending application; returns it with its ``id``.

        Raises ApplicationConflict if ``application.applicant`` has one pending.
        """

    @abstractmethod
    async def get_application(self, application_id: int) -> Application | None: ...

    @abstractmethod
    async def list_applications(
        self, *, state: str | None = None, applicant: str | None = None
    ) -> list[Application]:
        """Applications filtered by state and/or applicant, oldest first."""

    @abstractmethod
    async def approve_application(
        self,
        decided: Application,
        records: Sequence[PutItem],
        account: Account,
    ) -> Application:
        """Atomically: the application ``decided.id`` goes from pending to ``decided``
        (state "approved", ``prefix`` set), ``decided.prefix`` is homed, ``records``
        are written (created; an existing key fails the call) and ``account`` is stored.

        Raises ApplicationNotFound; ApplicationConflict if it is not pending;
        PrefixTaken if the prefix is homed or allocated already; nothing changes then.
        """

    @abstractmethod
    async def reject_application(self, decided: Application) -> Application:
        """Pending -> ``decided`` (state "rejected" with reason); errors as approve."""

    # -- statistics reported by other nodes (top-level node) --------------------

    @abstractmethod
    async def add_stats_report(
        self, node: str, report_id: str, received_at: int, counts: Sequence[StatsCount]
    ) -> bool:
        """Add a report's counts to the per node/prefix/interval sums, once per
        (node, report_id): False (and nothing added) if it was added before."""

    @abstractmethod
    async def stats_counts(
        self, *, node: str | None = None, prefix: str | None = None, since: int | None = None
    ) -> list[StatsCount]:
        """Summed counts per (node, prefix, interval), filtered, sorted by those."""

    # -- usage counters shared by every worker and node (resolver.quotas) -------

    @abstractmethod
    async def seed_usage(self, counter: str, value: int) -> int:
        """Create ``counter`` at ``value`` unless it exists; its stored value either way.

        Racing callers agree: the first one's value wins."""

    @abstractmethod
    async def add_usage(self, counter: str, delta: int, *, limit: int | None = None) -> int | None:
        """Atomically add ``delta`` to ``counter`` (an absent one starts at 0); the new value.

        None, and nothing changed, if the new value would exceed ``limit``."""

    # -- coherence (resolver.coherence) -----------------------------------------

    def refresh_reads(self) -> None:
        """Make later reads see every write committed before this call, by anyone.

        A no-op where every read looks afresh (the default). A backend that
        reads from a held snapshot (SQLite's ``read_snapshot_seconds``)
        renews it: nodes call this for each write a peer announces, before
        acknowledging it, and when they notice unannounced writes.
        """
        return None

    async def unannounced_writes(self) -> int | None:
        """A counter that grows with every write made without telling the nodes' caches.

        Writers that announce their writes themselves (a node, through
        ``resolver.coherence``) do not count; offline tools (``idnode import``,
        ``prefix add``, ...) do. Nodes poll it and drop their caches when it
        moves. None: this backend does not count (its nodes must be told
        another way).
        """
        return None
