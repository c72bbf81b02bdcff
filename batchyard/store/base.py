"""The store seam: the domain operations every store implements, and what they exchange.

A store is the single source of truth. Methods are blocking (the worker calls them from a
thread of its own), take the time as an argument where it matters, and apply every state
change with compare-and-set, so a race surfaces as a rejected change, never a corrupt row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeAlias

from batchyard.access import Session, Token
from batchyard.clock import Clock
from batchyard.clusters import ErrorCluster, Signature
from batchyard.codec import quote
from batchyard.deliveries import Attempt, Delivery, DeliveryState
from batchyard.errors import ConfigError, StoreError
from batchyard.models import (
    JSON,
    BatchOptions,
    BatchStatus,
    Counts,
    Event,
    Finishes,
    Item,
    LogLine,
    Page,
    Totals,
    Usage,
)
from batchyard.records import Dataset, FieldTally, LoadMode, RecordPage
from batchyard.selection import Selection, Sort
from batchyard.states import BatchState, ItemState
from batchyard.store.limits import Grant, Limits, LimitState, Wait, WaitRow
from batchyard.templates.values import NewVersion, Template, VersionUsage

#: How long an unfinished upload may go without a new chunk before its batch is removed.
UPLOAD_LEASE = 600.0


class NewItem(NamedTuple):
    """An item ready to be written: its key, 1-based position and JSON-encoded payload.
    (A named tuple: a submission makes one per item, and a tuple is the cheapest.)"""

    key: str
    position: int
    payload: str


#: How long an idempotency key is kept by default: a day.
IDEMPOTENCY_TTL = 86_400.0
#: The longest idempotency key taken (HTTP clients send UUIDs or request ids).
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A submission's idempotency key and when the key lapses (see ``create_batch``)."""

    key: str
    expires_at: float

    @classmethod
    def of(cls, key: str | None, ttl: float, now: float) -> Idempotency | None:
        """The key a caller gave (None: none), kept ``ttl`` seconds from ``now``. Raises
        ConfigError for a key too long, empty or with characters that do not print."""
        if key is None:
            return None
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise ConfigError(f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} characters long")
        if not key.isprintable():
            raise ConfigError(f"idempotency key {key!r} has characters that do not print")
        if not ttl > 0:
            raise ConfigError(f"idempotency_ttl must be more than 0 seconds, not {ttl}")
        return cls(key, now + ttl)


class Chunk:
    """Items of one insert: their keys, the position of the first, and ``json``, one JSON
    object with a member ``"key": payload`` per item in position order. A store inserts a
    chunk in one statement over that object, the database numbering its members, so no
    row is bound one by one.

    A payload is the item's own JSON object (``items.chunks``: nothing is encoded twice)
    or a JSON string holding its text (``Chunk.of``: the text kept exactly as given);
    either way the store writes that text. Two items may share a key: the insert then
    fails, and the store reports them from ``keys``."""

    __slots__ = ("json", "keys", "start")

    def __init__(self, keys: list[str], start: int, json: str) -> None:
        self.keys = keys
        self.start = start
        self.json = json

    @classmethod
    def of(cls, items: Sequence[NewItem]) -> Chunk:
        """A chunk of items given one by one, each payload kept as its text."""
        if not items:
            return cls([], 1, "{}")
        start = items[0].position
        if items[-1].position - start != len(items) - 1:
            raise StoreError("a chunk's positions must follow each other")
        members = ",".join(f"{quote(key)}:{quote(payload)}" for key, _, payload in items)
        return cls([it.key for it in items], start, f"{{{members}}}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def end(self) -> int:
        """The position of the last item."""
        return self.start + len(self.keys) - 1


#: Items as a store takes them: a Chunk, or a plain list of NewItem (tests, tools).
NewItems: TypeAlias = Chunk | list[NewItem]


def as_chunk(items: NewItems) -> Chunk:
    """``items`` as a Chunk."""
    return items if isinstance(items, Chunk) else Chunk.of(items)


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """What a worker needs to know about the batch of an item it claimed."""

    pk: int
    id: str
    task: str
    timeout: float | None
    params: dict[str, JSON]
    #: Rate limits the batch set for its calls (``BatchOptions.limits``), if any.
    limits: dict[str, JSON] | None = None
    #: Attempts an item gets per round (``BatchOptions.max_attempts``).
    max_attempts: int | None = None
    #: The batch's own cap on items running at once (``BatchOptions.concurrency``), if any.
    concurrency: int | None = None


class Claim(NamedTuple):
    """An item leased to a worker. ``attempt`` is the lease's fencing token.

    A named tuple, not a frozen dataclass: a worker gets one per item, and a named tuple
    is made several times faster (the store makes them on the worker's critical path)."""

    item_id: int
    batch: ClaimedBatch
    key: str
    payload: str
    attempt: int
    max_attempt: int
    #: Run this item alone: its lease expired before while its worker held others.
    alone: bool = False
    #: Held ready beyond its batch's cap: start it only in place of an item of the same
    #: batch that ended, and say so (``Standby.started``) in the next round.
    standby: bool = False

    @property
    def tries(self) -> int:
        """The attempts of this round that ran, this one included: a round gives an item
        ``max_attempts`` of them, and an attempt given back unspent (a release, a lease
        lost beside others) raised ``max_attempt`` without being one."""
        if self.batch.max_attempts is None:
            return self.attempt
        return max(1, self.attempt - (self.max_attempt - self.batch.max_attempts))


@dataclass(slots=True)
class Outcome:
    """The end of one attempt, as a worker reports it."""

    item_id: int
    batch_pk: int
    key: str
    attempt: int
    state: ItemState
    started_at: float
    finished_at: float
    result: str | None = None
    error: str | None = None
    error_type: str | None = None
    run_after: float | None = None
    usage: Usage = field(default_factory=Usage)
    metrics: str | None = None
    progress: float | None = None
    message: str | None = None
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    #: The worker that ran the attempt ("" when not known): logged with a failed attempt.
    worker: str = ""
    #: What the failure is (``batchyard.clusters``), for a failed or retry-waiting outcome;
    #: without one the store makes it from ``error_type`` and ``error`` alone.
    signature: Signature | None = None


@dataclass(frozen=True, slots=True)
class Standby:
    """What a worker's round says about items held ready beyond their batches' caps.

    A batch capped at N runs at most N items at once. A worker running some of them may
    hold more, leased but not counted against the cap (standby), and start one the moment
    one of its own items of that batch ends: the next commit records the ending and the
    start together, so the cap holds at every commit without a round trip between them."""

    #: How many more items the worker may hold ready (0: none).
    want: int = 0
    #: Per batch pk, how many items the worker holds that count against the batch's cap:
    #: it is given no more items held ready in a batch than that (each waits for one).
    holding: Mapping[int, int] = field(default_factory=dict)
    #: Items held ready that the worker started (item id, attempt): they count against the
    #: cap from this commit on, before its outcomes apply.
    started: Sequence[tuple[int, int]] = ()


#: A round that holds nothing ready and asks for nothing.
NO_STANDBY = Standby()


@dataclass(frozen=True, slots=True)
class LeaseUpdate:
    """A running item a worker still holds, with its latest progress."""

    item_id: int
    attempt: int
    progress: float | None = None
    message: str | None = None
    changed: bool = False
    logs: list[tuple[float, str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record`` did: outcomes it refused (their lease was taken over) and batches
    that ended with this commit."""

    rejected: list[Outcome]
    ended: list[str]


@dataclass(frozen=True, slots=True)
class Outlook:
    """Work left for a set of tasks: items not finished in claimable batches, and when the
    earliest item waiting for a retry comes due (None if none waits)."""

    remaining: int
    next_due: float | None
    callbacks_due: int


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """What ``hold_budget`` found: whether the hold was granted, and the figures it weighed
    (``spent``: the batch's recorded cost; ``held``: the other holds still in flight)."""

    granted: bool
    budget: float | None
    spent: float
    held: float


class DatasetStore(Protocol):
    """The store's datasets: stored tables of records to pick a batch's items from."""

    def load_dataset(
        self,
        name: str,
        mode: LoadMode,
        key_field: str | None,
        chunks: Callable[[int, str | None], Iterable[NewItems]],
        tally: FieldTally,
        now: float,
    ) -> Dataset:
        """Load rows into a dataset in one transaction, all or nothing: ``create`` a new one
        (ConfigError if the name is taken), ``append`` to one (DatasetNotFound if none; its
        own key field is used), or ``replace`` its rows (creating it if need be).
        ``chunks(start, key_field)`` yields the rows encoded, with positions from ``start``;
        ``tally`` holds the fields they had once read. A duplicate key raises DuplicateKey
        (positions as the rows were given), no row at all InputError."""
        ...

    def get_dataset(self, name: str) -> Dataset:
        """The dataset with its fields; raises DatasetNotFound."""
        ...

    def list_datasets(self) -> list[Dataset]:
        """Every dataset, by name."""
        ...

    def dataset_rows(
        self,
        name: str,
        selection: Selection | None = None,
        *,
        sort: Sort | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RecordPage:
        """A page of the rows the selection picks, in the order of ``sort`` (rows without
        its field last) or as they were added, with how many match in all; ``cursor`` is
        a page's ``next``. Filters and counts run in the database: only the page's rows
        are read. Raises InputError for a field no row has or a value that does not read
        as its field's type, ConfigError for a bad cursor or limit."""
        ...

    def delete_dataset(self, name: str) -> int:
        """Delete a dataset and its rows (batches made from it keep their items); returns
        how many rows. Raises DatasetNotFound."""
        ...

    def create_batch_from_dataset(
        self,
        batch_id: str,
        options: BatchOptions,
        name: str,
        selection: Selection,
        now: float,
        idempotency: Idempotency | None = None,
    ) -> BatchStatus:
        """A queued batch of the rows the selection picks, in dataset order, each item
        keyed by its row's key, copied inside the database in one transaction. Its
        metadata records the dataset, the conditions, the keys and the number of rows
        taken. Raises InputError when nothing matches, when a key names no row, or for a
        condition ``dataset_rows`` would refuse; nothing is written then. With
        ``idempotency``, as ``create_batch``: the same key with the same options and
        selection gives the batch made first, other ones raise IdempotencyConflict."""
        ...


class WebhookStore(Protocol):
    """Webhook deliveries (``batchyard.deliveries``; docs/webhooks.md) and shared settings.
    The deliveries are written in the transaction that ends or pauses a batch, one per URL
    it names."""

    def claim_deliveries(self, now: float, lease: float, limit: int = 20) -> list[Delivery]:
        """Lease up to ``limit`` pending deliveries due at ``now``, oldest due first: each
        gets one more attempt and is due again at ``now + lease`` (so a process that dies
        while sending lets another try it then). Of processes claiming at once, each
        delivery goes to one."""
        ...

    def finish_delivery(
        self, delivery: Delivery, attempt: Attempt, now: float, retry_at: float | None
    ) -> bool:
        """Record how the try of a claimed delivery went: delivered on a 2xx, else pending
        again, due at ``retry_at``, or failed when that is None. Only while the delivery
        still holds that lease (same attempts, still pending); returns whether it did."""
        ...

    def webhook_deliveries(self, batch_id: str) -> list[Delivery]:
        """A batch's deliveries, oldest first. Raises BatchNotFound."""
        ...

    def webhook_urls(self, batch_id: str) -> list[str]:
        """The URLs a batch names, in order. Raises BatchNotFound."""
        ...

    def delivery_counts(self) -> dict[DeliveryState, int]:
        """How many deliveries there are in each state (every state named), over the
        store: one indexed count."""
        ...

    def setting(self, name: str, make: Callable[[], str]) -> str:
        """The store's value of setting ``name``, saving ``make()`` first when it has none.
        Of processes racing to save one, the first wins and all get its value."""
        ...


class Store(DatasetStore, WebhookStore, Protocol):
    """The operations batchyard needs from a database."""

    url: str

    # -- submitting -------------------------------------------------------------------
    def create_batch(
        self,
        batch_id: str,
        options: BatchOptions,
        chunks: Iterable[NewItems],
        now: float,
        idempotency: Idempotency | None = None,
    ) -> BatchStatus:
        """Create a batch with all its items, or nothing at all if anything fails
        (a bad chunk, a duplicate key, an exception from ``chunks``).

        With ``idempotency``, the key is claimed with the batch. When a live submission
        claimed it first, none is created: this waits for that one to finish uploading,
        reads all of ``chunks`` and returns that batch when the task, options and items are
        the same, or raises ``IdempotencyConflict`` when they are not."""
        ...

    def append_items(
        self, batch_id: str, chunks: Callable[[int], Iterable[NewItems]], now: float
    ) -> int:
        """Add items to an open batch in one transaction; returns how many were added.
        ``chunks(start)`` yields them with positions from ``start``, which the store picks
        while it holds the batch, so concurrent appends never take the same positions."""
        ...

    def seal(self, batch_id: str, now: float) -> BatchStatus:
        """Stop an open batch accepting items; it ends once its items are done."""
        ...

    # -- reading ----------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status; items its workers hold that wait for a rate limiter count
        as ``waiting``, not ``running`` (see ``publish_waits``). Raises BatchNotFound."""
        ...

    def list_batches(
        self,
        *,
        state: BatchState | None = None,
        task: str | None = None,
        limit: int = 50,
        after: str | None = None,
        owner: str | None = None,
        template: str | None = None,
        text: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> Page[BatchStatus]:
        """Batches newest first; ``after`` is the ``next`` of the previous page (an opaque
        cursor that stays valid when batches are deleted). Filters: ``owner``, ``template``
        (a name), ``text`` (in the name or id, case-blind), created in
        [``created_after``, ``created_before``)."""
        ...

    def totals(self, now: float) -> Totals:
        """Batches by state and sums of their kept counters and usage, and the items that
        wait for a rate limiter: O(batches), no item row read."""
        ...

    def items(
        self,
        batch_id: str,
        *,
        state: ItemState | None = None,
        after: int = 0,
        limit: int = 1000,
        payloads: bool = True,
        results: bool = True,
        cluster: str | None = None,
    ) -> list[Item]:
        """Items in submission order with position greater than ``after``. Without
        ``payloads`` or ``results`` those are not read (None): a listing of big results
        costs no more than one of small ones. ``cluster`` (an error cluster's id or a
        unique start of it) keeps the items whose last failure is in it (ClusterNotFound
        otherwise)."""
        ...

    def item(self, batch_id: str, key: str) -> Item: ...

    def item_logs(self, batch_id: str, key: str) -> list[LogLine]: ...

    def events(self, batch_id: str | None = None, since: int = 0, limit: int = 1000) -> list[Event]:
        """Feed events with a cursor greater than ``since``, oldest first. A page holds
        whole transactions (rows sharing one cursor), so it may exceed ``limit``."""
        ...

    def item_changes(
        self,
        batch_id: str,
        since: int = 0,
        limit: int = 1000,
        *,
        payloads: bool = True,
        results: bool = True,
    ) -> list[Item]:
        """Items of a batch changed after cursor ``since``, in cursor order; whole
        transactions per page, as with ``events``."""
        ...

    def cursor(self) -> int:
        """The newest cursor of the change feed."""
        ...

    def finishes(self, batch_id: str, sample: int = 1000, recent: int = 100) -> Finishes:
        """When the batch's items finished, read in one bounded pass: the finish times of
        at most ``sample`` evenly spaced items (by primary key), and the times of the
        ``recent`` items changed last (by the feed's index). Raises BatchNotFound."""
        ...

    def recount(self, batch_id: str) -> Counts:
        """Count the item rows of a batch by state (a check on the kept counters)."""
        ...

    def outcome_matrix(
        self, first_id: str, second_id: str
    ) -> dict[tuple[ItemState, ItemState], int]:
        """Items whose key is in both batches, counted by their state in ``first_id`` and
        their state in ``second_id`` (only pairs that occur). Raises BatchNotFound."""
        ...

    # -- controlling ------------------------------------------------------------------
    def pause(self, batch_id: str, now: float, reason: str | None = None) -> BatchStatus:
        """Pause a batch; ``reason`` says why when batchyard pauses it (shown in its status,
        cleared by ``resume``)."""
        ...

    def resume(self, batch_id: str, now: float) -> BatchStatus: ...

    def cancel(self, batch_id: str, now: float) -> BatchStatus: ...

    def retry_failed(
        self,
        batch_id: str,
        now: float,
        *,
        keys: Collection[str] | None = None,
        states: Collection[ItemState] = (ItemState.FAILED,),
        cluster: str | None = None,
    ) -> int:
        """Send a finished batch's failed items (or those of ``states``: failed and/or
        cancelled; or only the items ``keys`` names; or only the failed items whose failure
        is in error cluster ``cluster``, an id or a unique start of one) back, ahead of
        fresh work, each with a fresh ``max_attempts``; returns how many. All or nothing:
        an unknown key raises ItemNotFound, a key in another state Conflict, an unknown or
        ambiguous cluster ClusterNotFound, ``cluster`` with ``keys`` or other states than
        failed ConfigError, and nothing is sent back."""
        ...

    # -- error clusters -----------------------------------------------------------------
    def error_clusters(self, batch_id: str, limit: int | None = None) -> list[ErrorCluster]:
        """The batch's error clusters, most failed items first (then most attempts), at
        most ``limit``; counts as kept, read in one statement. Raises BatchNotFound."""
        ...

    def recount_clusters(self, batch_id: str) -> dict[str, int]:
        """Count the batch's failed items per signature id from the item rows (a check on
        the kept ``items`` counts; items failed before clusters existed are left out)."""
        ...

    def delete_batch(self, batch_id: str, now: float) -> None: ...

    def prune(self, finished_before: float, now: float) -> int:
        """Delete finished batches that ended before the given time, and idempotency keys
        that have lapsed; returns how many batches."""
        ...

    # -- working ----------------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
        only: Collection[str] | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` runnable items of the tasks in ``capacity`` (task name to
        free slots), highest priority first, within each batch's concurrency.

        ``alone`` says the worker holds nothing else: it may then get one suspect item
        (see ``reclaim_expired``) to run by itself, and nothing with it. ``only`` limits
        the claim to the batches with these ids."""
        ...

    def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
        only: Collection[str] | None = None,
        standby: Standby = NO_STANDBY,
    ) -> tuple[Recorded, list[Claim]]:
        """``record`` then ``claim`` in one transaction: a worker's one round trip.

        ``standby``: the items held ready it started count against their caps first (one
        no longer held so is left alone); then the claim may also lease, in a batch with a
        cap, up to ``standby.want`` items beyond it (``Claim.standby``), no more in a batch
        than the worker holds there counting against the cap, and in all no more than the
        cap. Items held ready count as pending in a batch's counts."""
        ...

    def heartbeat(self, leases: Sequence[LeaseUpdate], now: float, lease: float) -> set[int]:
        """Extend leases and save progress; returns the item ids whose lease is lost. Give
        at most one lease per item."""
        ...

    def record(self, outcomes: Sequence[Outcome], now: float) -> Recorded:
        """Save outcomes in one transaction, refusing any whose lease was taken over."""
        ...

    def release(
        self, leases: Sequence[tuple[int, int]], now: float, ran: Collection[int] = ()
    ) -> int:
        """Give back leased items (item id, attempt) unfinished, without spending the
        attempt, so another worker can take them at once. ``ran``: the ids of those whose
        task was called; their attempt counts as a run and the next one as a re-run
        (``Again.RELEASED``). The others never ran: their attempt is not counted at all."""
        ...

    def reclaim_expired(self, now: float, steady: float | None = None) -> int:
        """Return items whose lease expired to the queue (or fail them when their attempts
        are spent), and remove uploads abandoned mid-way. Retries that began to wait after
        ``now`` (a clock went back) wait their delay from ``now``.

        With ``steady`` (the caller's monotonic time), a lease is taken back only once
        this store object's sweeps have seen it lapse, unrenewed, for its whole length
        (``rules.LeaseWatch``): no clock step or disagreement takes a live lease. Without,
        a lease whose end is before ``now`` is taken back at once.

        An expiry counts as an attempt only when it is surely the item's own: it was the
        only item its worker held, or it already ran alone. Items that died in a crowd are
        not charged; they become suspects and each runs alone next, so a poison item that
        kills its worker is found and fails without taking its neighbours with it."""
        ...

    def active_tasks(self) -> set[str]:
        """The task names of batches workers may claim from now."""
        ...

    def batch_states(self, batch_pks: Collection[int]) -> dict[int, BatchState]: ...

    def outlook(
        self, tasks: Collection[str], now: float, only: Collection[str] | None = None
    ) -> Outlook: ...

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) whenever items may have become claimable through
        another process (a new batch, a resume, a retry); returns a function that stops it.
        A store without notifications returns a no-op: workers poll anyway."""
        ...

    def on_feed(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` (from any thread) after every commit, in any process, that changed
        the change feed; returns a function that stops it. None when the store sends no
        such notifications: a follower of the feed then polls ``cursor()``. A wake is a
        hint (one may be lost in an outage), never the change itself."""
        ...

    def claim_callbacks(
        self,
        tasks: Collection[str],
        now: float,
        lease: float,
        only: Collection[str] | None = None,
    ) -> list[tuple[BatchStatus, int]]:
        """Lease batch endings whose callbacks have not run: (status, round) pairs."""
        ...

    def finish_callbacks(self, batch_id: str, round_: int) -> None: ...

    # -- rate limits ------------------------------------------------------------------
    # Shared by every worker of the store, per limiter key; ``batchyard.ratelimit`` is the
    # limiter built on them. None of them touches batches, items or the change feed.
    def limit_acquire(self, key: str, limits: Limits, tokens: float, now: float) -> Grant | Wait:
        """Atomically take one request, ``tokens`` and a concurrency slot of ``key`` within
        ``limits``, or say how long to wait (taking nothing)."""
        ...

    def limit_settle(self, grant: Grant, actual_tokens: float, now: float) -> None:
        """Correct a grant's token reservation with the real usage: refund what was
        reserved and not used, charge what was used beyond it (the bucket may go into debt,
        and later calls wait it off). Settling twice corrects from the last settled value."""
        ...

    def limit_release(self, grant: Grant, now: float) -> bool:
        """End a grant's concurrency slot; False if its lease had ended already."""
        ...

    def limit_pause(self, key: str, until: float, reason: str, now: float) -> float:
        """Admit nothing on ``key`` before ``until`` (a pause never shortens one already
        set); returns the time the key is paused until."""
        ...

    def limit_state(self, key: str, now: float) -> LimitState | None:
        """The key as stored (levels not refilled to ``now``), None if never used."""
        ...

    def publish_waits(
        self, worker: str, waits: Sequence[WaitRow], now: float, expires_at: float
    ) -> None:
        """Replace what ``worker`` said before about its items that wait for a limiter with
        ``waits`` (none: it holds no waiting item), each row trusted until ``expires_at``.
        ``get_batch`` counts those items as ``waiting``, not ``running``, and names the key
        in ``waiting_on``. Rows past their expiry (a worker that died) are dropped."""
        ...

    # -- budgets and the response cache ----------------------------------------------
    def set_budget(self, batch_id: str, budget: float | None, now: float) -> BatchStatus:
        """Set (or with None remove) the cap on a batch's cost."""
        ...

    def hold_budget(
        self, batch_pk: int, item_id: int, attempt: int, amount: float, now: float
    ) -> BudgetCheck:
        """Atomically reserve ``amount`` of the batch's budget for a call of this attempt, if
        recorded cost + holds in flight + ``amount`` stays within it; else take nothing.
        A hold lapses by itself once the item leaves this attempt (recorded, released,
        reclaimed), when its real cost is in the batch's recorded cost. Holds of one attempt
        add up. Without a budget it always grants, writing nothing."""
        ...

    def cache_get(self, key: str) -> str | None:
        """A cached response by its content key."""
        ...

    def cache_put(self, key: str, value: str, now: float) -> None:
        """Keep a response under its content key (the first one kept wins)."""
        ...

    def cache_prune(self, kept_before: float) -> int:
        """Delete responses kept before this time; returns how many."""
        ...

    def clock(self) -> Clock:
        """The clock this store's times are read from: the machine's on SQLite (every
        process shares it), the database server's on PostgreSQL (``DatabaseClock``), so
        workers on machines whose clocks disagree agree on leases and retry times. One
        clock per store object: a Yard and its workers take it as their default."""
        ...

    # -- templates and re-runs (store/templating.py) ------------------------------------

    def add_template_version(self, new: NewVersion, now: float) -> Template:
        """Write version ``new.base + 1`` of template ``new.name``. Raises TemplateExists
        when ``base`` is 0 and the name has versions, StoreError when the newest version
        is no longer ``base`` (another writer added one meanwhile)."""

    def template_versions(self, name: str) -> list[Template]:
        """Every version of a template, archived ones too, oldest first ([] if none)."""

    def list_templates(self) -> list[Template]:
        """Every version of every template, by name then version."""

    def archive_template(self, name: str, version: int, now: float) -> Template:
        """Mark a version archived (again is a no-op); raises TemplateNotFound."""

    def template_usage(self, name: str) -> list[VersionUsage]:
        """What the batches of each version of a template did, by version (versions no
        batch ran with are left out). Sums of batch rows: O(batches), no item is read."""

    def template_batches(self, name: str, version: int, limit: int = 100) -> list[str]:
        """Ids of the batches that ran with a template version, newest first."""

    def rerun_batch(
        self,
        source_id: str,
        batch_id: str,
        options: BatchOptions,
        states: Collection[ItemState] | None,
        now: float,
    ) -> BatchStatus:
        """Create batch ``batch_id`` with ``options`` whose items are copies (key and
        payload, fresh and pending, in their old order) of the items of ``source_id`` in
        ``states`` (None: all), copied inside the database in transactions of at most
        COMMIT_ITEMS source items; a failure leaves no batch. Raises BatchNotFound,
        Conflict when the source is still uploading or has no item in ``states``."""

    # -- tokens and sessions of `batchyard serve` (store/access.py) --------------------

    def add_token(self, token: Token, digest: str) -> Token:
        """Keep a new token by the digest of its secret; raises Conflict when its name is
        taken (by a revoked token too: a name is never reused)."""

    def list_tokens(self) -> list[Token]:
        """Every token, revoked ones too, by name."""

    def token_by_digest(self, digest: str) -> Token | None:
        """The token (revoked or not) whose secret has this digest, or None."""

    def touch_token(self, name: str, now: float) -> None:
        """Record that a token was used at ``now``."""

    def revoke_token(self, name: str, now: float) -> Token:
        """Revoke a token (again is a no-op) and end its sessions; raises ConfigError when
        no token has this name."""

    def add_session(self, digest: str, session: Session, now: float) -> None:
        """Keep a new session by the digest of its cookie value (ended ones are dropped)."""

    def session_by_digest(self, digest: str, now: float) -> Session | None:
        """The session with this digest that has not expired and whose token is not
        revoked, or None."""

    def drop_session(self, digest: str) -> None:
        """End a session (logging out); no-op when there is none."""

    def close(self) -> None: ...
