"""A Hypothesis state machine over each real store (SQLite, PostgreSQL): random submissions,
claims, outcomes (several per commit, duplicates and stale attempts among them), lease
expiries and control operations, checked after every step against the lifecycle.

Time is a number the machine moves by hand; no step sleeps.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from batchyard.clusters import signature
from batchyard.errors import Conflict, InvalidTransition
from batchyard.models import BatchOptions, BatchStatus
from batchyard.states import (
    BATCH_TRANSITIONS,
    ITEM_TRANSITIONS,
    BatchState,
    ItemState,
    ending_state,
)
from batchyard.store.base import Claim, LeaseUpdate, NewItem, Outcome, Standby, Store
from batchyard.store.rules import POSITION_BITS
from batchyard.store.sqlite import SqliteStore
from tests.procs.pgdb import Databases, require_server

B = BatchState
S = ItemState
#: The signature the store gives the machine's failures (error "x", no class, no frame).
RECORDED = signature("Error", "x")
T0 = 1_700_000_000.0
LEASE = 30.0
TASK = "t"


def _item_move_allowed(old: ItemState, new: ItemState) -> bool:
    # One claim promotes a due retry and leases it in the same transaction.
    return old is new or new in ITEM_TRANSITIONS[old] or (old, new) == (S.RETRY_WAIT, S.RUNNING)


def _outcomes_that_apply(outcomes: list[Outcome], live: set[tuple[int, int]]) -> list[int]:
    """Indexes of the outcomes a record call applies: the first for each attempt its item
    still runs; every other one is refused."""
    applied, seen = [], set()
    for n, o in enumerate(outcomes):
        attempt = (o.item_id, o.attempt)
        if attempt in live and attempt not in seen:
            applied.append(n)
        seen.add(attempt)
    return applied


class Lifecycle(RuleBasedStateMachine):
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.store = self.open_store()
        self.now = T0
        self.claims: list[Claim] = []  # every lease ever handed out, live or stale
        #: Leases held ready beyond their batch's cap, not started (item id, attempt).
        self.ready: set[tuple[int, int]] = set()
        #: Items held ready that started since the feed was last followed: they may move
        #: from pending as if from running (started and ended in one commit).
        self.started: set[tuple[str, str]] = set()
        self.leases: dict[int, tuple[int, float]] = {}  # item id -> (attempt, expiry)
        self.batch_state: dict[str, BatchState] = {}  # followed through the event feed
        self.item_state: dict[tuple[str, str], ItemState] = {}  # through item_changes
        self.item_cursor: dict[str, int] = {}
        #: Failed attempts recorded per batch, to check its error cluster against.
        self.failures: dict[str, int] = {}
        self.event_cursor = 0
        self.cursor = 0

    #: A file with the schema applied (see ``sqlite_template``), copied for each example as
    #: PostgreSQL clones a template: migrating a new file took a sixth of this machine's time.
    template: Path | None = None

    def open_store(self) -> Store:
        assert self.template is not None
        self.folder = tempfile.TemporaryDirectory()
        path = Path(self.folder.name) / "machine.db"
        shutil.copyfile(self.template, path)
        return SqliteStore(path)

    def teardown(self) -> None:
        self.store.close()
        self.folder.cleanup()

    # -- helpers -----------------------------------------------------------------------

    def _known_items(self, batch_id: str, start: int, n: int) -> list[NewItem]:
        items = [NewItem(str(p), p, json.dumps({"p": p})) for p in range(start, start + n)]
        for it in items:
            self.item_state[(batch_id, it.key)] = S.PENDING
        return items

    def _is_live(self, claim: Claim) -> bool:
        item = self.store.item(claim.batch.id, claim.key)
        # One held ready beyond its cap reads as pending until it starts (shown_state).
        leased_as = S.PENDING if (claim.item_id, claim.attempt) in self.ready else S.RUNNING
        return item.state is leased_as and item.attempts == claim.attempt

    def _may_record(self, claim: Claim) -> bool:
        """Whether an outcome of this lease applies: live, and started if held ready."""
        return self._is_live(claim) and (claim.item_id, claim.attempt) not in self.ready

    def _let_go(self, item_id: int) -> None:
        """The item's lease ended (an outcome, a release, an expiry)."""
        self.leases.pop(item_id, None)
        self.ready = {lease for lease in self.ready if lease[0] != item_id}

    def _holding(self) -> dict[int, int]:
        """Per batch pk, the live leases that count against its cap (``leases`` holds the
        live ones: each goes with its outcome, release or expiry)."""
        holding: dict[int, int] = {}
        for item_id, (attempt, _) in self.leases.items():
            if (item_id, attempt) not in self.ready:
                pk = item_id >> POSITION_BITS
                holding[pk] = holding.get(pk, 0) + 1
        return holding

    def _ready_of(self, batch_pk: int) -> list[Claim]:
        return [
            c
            for c in self.claims
            if (c.item_id, c.attempt) in self.ready and c.batch.pk == batch_pk
        ]

    def _refused_and_unchanged(self, batch_id: str, operation: Callable[[], object]) -> None:
        before = self.store.get_batch(batch_id)
        items = self.store.items(batch_id)
        cursor = self.store.cursor()
        with pytest.raises((Conflict, InvalidTransition)):
            operation()
        assert self.store.get_batch(batch_id) == before
        assert self.store.items(batch_id) == items
        assert self.store.cursor() == cursor

    def _distinct(self, data: st.DataObject, most: int) -> list[Claim]:
        """Up to ``most`` claims, at most one per item (one outcome per item per commit;
        test_store covers a stale and a fresh outcome of one item in one commit). Mostly
        live leases, sometimes any lease ever handed out, stale ones included."""
        live = [c for c in self.claims if self._is_live(c)]
        mostly_live = bool(live) and data.draw(st.integers(0, 5)) != 0  # 5 times in 6
        pool = live if mostly_live else self.claims
        picked = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=most))
        return list({c.item_id: c for c in picked}.values())

    def _clusters_agree(self, batch_ids: set[str]) -> None:
        """Clusters count the failed items by signature exactly, and the recorded
        failures ("x"; an expired lease is a cluster of its own) attempt by attempt.
        Checked after the steps that change them (an invariant would be too slow)."""
        for batch_id in batch_ids:
            clusters = self.store.error_clusters(batch_id)
            failed = {c.id: c.items for c in clusters if c.items}
            assert failed == self.store.recount_clusters(batch_id)
            recorded = [c.attempts for c in clusters if c.text == RECORDED.text]
            assert sum(recorded) == self.failures.get(batch_id, 0)
            assert all(c.attempts >= c.items for c in clusters)

    # -- rules -------------------------------------------------------------------------

    @initialize(target=batches)
    def first_batch(self) -> str:
        return self._submit(2, 0, 2, None, 0, True)

    @initialize(target=batches)
    def capped_batch(self) -> str:
        """A batch capped at 2 with more items than that: claims may hold items ready
        beyond its cap (``Standby``)."""
        return self._submit(4, 0, 2, 2, 0, True)

    @rule(
        target=batches,
        n=st.integers(0, 3),
        chunk=st.integers(0, 3),
        max_attempts=st.integers(1, 3),
        concurrency=st.none() | st.integers(1, 2),
        priority=st.integers(0, 2),
        sealed=st.booleans(),
    )
    def submit(
        self,
        n: int,
        chunk: int,
        max_attempts: int,
        concurrency: int | None,
        priority: int,
        sealed: bool,
    ) -> str:
        return self._submit(n, chunk, max_attempts, concurrency, priority, sealed)

    def _submit(
        self,
        n: int,
        chunk: int,
        max_attempts: int,
        concurrency: int | None,
        priority: int,
        sealed: bool,
    ) -> str:
        batch_id = f"b{len(self.item_cursor)}"
        items = self._known_items(batch_id, 1, n)
        if chunk:
            chunks = [items[i : i + chunk] for i in range(0, n, chunk)]
        else:
            chunks = [items] if items else []
        options = BatchOptions(
            task=TASK,
            max_attempts=max_attempts,
            concurrency=concurrency,
            priority=priority,
            sealed=sealed,
        )
        status = self.store.create_batch(batch_id, options, chunks, self.now)
        assert status.counts.total == n
        self.item_cursor[batch_id] = 0
        return batch_id

    @rule(batch_id=batches, n=st.integers(1, 3))
    def append(self, batch_id: str, n: int) -> None:
        status = self.store.get_batch(batch_id)
        if status.sealed or status.state.is_terminal:
            self._refused_and_unchanged(
                batch_id,
                lambda: self.store.append_items(
                    batch_id, lambda start: [[NewItem("x", start, "{}")]], self.now
                ),
            )
            return
        starts: list[int] = []

        def chunks(start: int) -> list[list[NewItem]]:
            starts.append(start)
            return [self._known_items(batch_id, start, n)]

        assert self.store.append_items(batch_id, chunks, self.now) == n
        assert starts == [status.counts.total + 1]

    @rule(batch_id=batches)
    def seal(self, batch_id: str) -> None:
        assert self.store.seal(batch_id, self.now).sealed

    # NOTE: Hypothesis favours rules with fewer arguments, so the rules that move work
    # forward (claim, record) take one argument each.
    @rule(ask=st.tuples(st.integers(1, 4), st.sampled_from([1, 4]), st.sampled_from([0, 3])))
    def claim(self, ask: tuple[int, int, int]) -> None:
        """A claim, sometimes asking for items held ready beyond batch caps."""
        limit, capacity, want = ask
        holding = self._holding() if want else {}
        _, got = self.store.record_and_claim(
            [], "w", {TASK: capacity}, limit, self.now, LEASE, standby=Standby(want, holding)
        )
        assert len(got) <= min(limit, capacity)
        assert sum(c.standby for c in got) <= want
        for c in got:
            assert self.store.get_batch(c.batch.id).state.is_active
            assert self.store.item(c.batch.id, c.key).attempts == c.attempt
            self.leases[c.item_id] = (c.attempt, self.now + LEASE)
            if c.standby:
                assert c.batch.pk in holding or any(
                    not o.standby and o.batch.pk == c.batch.pk for o in got
                ), "held ready in a batch with nothing of ours counting against its cap"
                self.ready.add((c.item_id, c.attempt))
        self.claims.extend(got)
        for pk in {c.batch.pk for c in got if c.standby}:
            status = self.store.get_batch(next(c.batch.id for c in got if c.batch.pk == pk))
            assert status.concurrency is not None
            assert len(self._ready_of(pk)) <= status.concurrency

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def start_ready(self, data: st.DataObject) -> None:
        """Start items held ready where their batch has room under its cap (a worker
        starts one in place of one of its own that ended: see ``_record``)."""
        c = data.draw(
            st.sampled_from([c for c in self.claims if (c.item_id, c.attempt) in self.ready])
        )
        status = self.store.get_batch(c.batch.id)
        assert status.concurrency is not None
        if status.counts.running >= status.concurrency:
            return
        self.store.record_and_claim(
            [], "w", {}, 0, self.now, LEASE, standby=Standby(started=[(c.item_id, c.attempt)])
        )
        self.ready.discard((c.item_id, c.attempt))
        self.started.add((c.batch.id, c.key))
        assert self.store.item(c.batch.id, c.key).state is S.RUNNING
        after = self.store.get_batch(c.batch.id).counts
        assert (after.running, after.pending) == (
            status.counts.running + 1,
            status.counts.pending - 1,
        )

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        """Several outcomes in one commit: an item may appear twice (two outcomes for one
        attempt, or a stale attempt beside its live one)."""
        live = [c for c in self.claims if self._is_live(c)]
        pool = live + self.claims[-6:] if live else self.claims
        picked = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
        self._record(data, picked)

    @rule(data=st.data())
    def claim_and_record(self, data: st.DataObject) -> None:
        """A worker's whole round trip in one step, so batches get to their ends."""
        standby = Standby(2, self._holding())  # as a worker whose items are short asks
        _, got = self.store.record_and_claim(
            [], "w", {TASK: 4}, data.draw(st.integers(1, 3)), self.now, LEASE, standby=standby
        )
        for c in got:
            self.leases[c.item_id] = (c.attempt, self.now + LEASE)
            if c.standby:
                self.ready.add((c.item_id, c.attempt))
        self.claims.extend(got)
        self.item_moves_follow_the_table()  # see the items running before they finish
        if got:
            self._record(data, got)

    def _record(self, data: st.DataObject, picked: list[Claim]) -> None:
        kinds = [S.SUCCEEDED, S.FAILED, S.RETRY_WAIT, S.CANCELLED]
        delay = data.draw(st.integers(0, 20))
        before = {c.item_id: self.store.item(c.batch.id, c.key) for c in picked}
        live = {(c.item_id, c.attempt) for c in picked if self._may_record(c)}
        outcomes = []
        for c in picked:
            kind = data.draw(st.sampled_from(kinds))
            state = S.FAILED if kind is S.RETRY_WAIT and c.attempt >= c.max_attempt else kind
            outcomes.append(
                Outcome(
                    item_id=c.item_id,
                    batch_pk=c.batch.pk,
                    key=c.key,
                    attempt=c.attempt,
                    state=state,
                    started_at=self.now,
                    finished_at=self.now,
                    result=json.dumps(c.key) if state is S.SUCCEEDED else None,
                    error=None if state is S.SUCCEEDED else "x",
                    run_after=self.now + delay if state is S.RETRY_WAIT else None,
                )
            )
        cancelled = {
            c.item_id for c in picked if self.store.get_batch(c.batch.id).state is B.CANCELLED
        }
        # A worker starts an item held ready in place of each of its own of that batch that
        # ends, and says so in the commit of the outcome; one started and ended since is
        # started first, so its own outcome applies too.
        started: list[tuple[int, int]] = []
        if data.draw(st.booleans()):
            for n in _outcomes_that_apply(outcomes, live):
                spare = [
                    (c.item_id, c.attempt)
                    for c in self._ready_of(outcomes[n].batch_pk)
                    if (c.item_id, c.attempt) not in started
                ]
                started += spare[:1]
        live |= {(c.item_id, c.attempt) for c in picked if (c.item_id, c.attempt) in started}
        applied = _outcomes_that_apply(outcomes, live)
        done, _ = self.store.record_and_claim(
            outcomes, "w", {}, 0, self.now, LEASE, standby=Standby(started=started)
        )
        self.ready -= set(started)
        promoted = {c.item_id for c in self.claims if (c.item_id, c.attempt) in started}
        self.started |= {(c.batch.id, c.key) for c in self.claims if c.item_id in promoted}
        refused = [n for n in range(len(outcomes)) if n not in applied]
        assert [(o.item_id, o.attempt) for o in done.rejected] == [
            (outcomes[n].item_id, outcomes[n].attempt) for n in refused
        ]
        for n in applied:
            o = outcomes[n]
            after = self.store.item(before[o.item_id].batch_id, o.key)
            # A retry in a cancelled batch would never run: the item ends cancelled.
            waits = o.state is S.RETRY_WAIT and o.item_id in cancelled
            expected = S.CANCELLED if waits else o.state
            assert (after.state, after.attempts) == (expected, o.attempt)
            if expected in (S.FAILED, S.RETRY_WAIT):
                batch_id = before[o.item_id].batch_id
                self.failures[batch_id] = self.failures.get(batch_id, 0) + 1
            self._let_go(o.item_id)
        for item_id in set(before) - {outcomes[n].item_id for n in applied}:
            # A refused outcome changes nothing (the start of one held ready still counts).
            now = self.store.item(before[item_id].batch_id, before[item_id].key)
            assert now.state is S.RUNNING if item_id in promoted else now == before[item_id]
        self._clusters_agree({c.batch.id for c in picked})

    @rule(seconds=st.sampled_from([1, 3, 10, LEASE + 1]))
    def wait_and_reclaim(self, seconds: float) -> None:
        self.now += seconds
        expired = {i for i, (_, until) in self.leases.items() if until < self.now}
        assert self.store.reclaim_expired(self.now) == len(expired)
        for item_id in expired:
            self._let_go(item_id)
        self._clusters_agree({c.batch.id for c in self.claims if c.item_id in expired})

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        picked = self._distinct(data, 4)
        live = {c.item_id for c in picked if self._is_live(c)}
        updates = [LeaseUpdate(c.item_id, c.attempt, progress=0.5, changed=True) for c in picked]
        lost = self.store.heartbeat(updates, self.now, LEASE)
        assert lost == {c.item_id for c in picked} - live
        for c in picked:
            if c.item_id in live:
                self.leases[c.item_id] = (c.attempt, self.now + LEASE)

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        (c,) = self._distinct(data, 1)
        live = self._is_live(c)
        assert self.store.release([(c.item_id, c.attempt)], self.now) == int(live)
        if live:
            self._let_go(c.item_id)
            cancelled = self.store.get_batch(c.batch.id).state is B.CANCELLED
            expected = S.CANCELLED if cancelled else S.PENDING
            assert self.store.item(c.batch.id, c.key).state is expected

    @rule(batch_id=batches)
    def pause(self, batch_id: str) -> None:
        state = self.store.get_batch(batch_id).state
        if state in (B.QUEUED, B.PROCESSING, B.RETRYING, B.PAUSED):
            assert self.store.pause(batch_id, self.now).state is B.PAUSED
        else:
            self._refused_and_unchanged(batch_id, lambda: self.store.pause(batch_id, self.now))

    @rule(batch_id=batches)
    def resume(self, batch_id: str) -> None:
        state = self.store.get_batch(batch_id).state
        if state is B.PAUSED or state.is_active:
            assert self.store.resume(batch_id, self.now).state is not B.PAUSED
        else:
            self._refused_and_unchanged(batch_id, lambda: self.store.resume(batch_id, self.now))

    @rule(batch_id=batches, roll=st.integers(0, 3))
    def cancel(self, batch_id: str, roll: int) -> None:
        if roll:
            return  # cancel ends a batch for good: try it less often than the other moves
        state = self.store.get_batch(batch_id).state
        if state.is_terminal and state is not B.CANCELLED:
            self._refused_and_unchanged(batch_id, lambda: self.store.cancel(batch_id, self.now))
            return
        ready = [c for c in self.claims if (c.item_id, c.attempt) in self.ready]
        status = self.store.cancel(batch_id, self.now)
        assert status.state is B.CANCELLED
        assert (status.counts.pending, status.counts.retry_wait) == (0, 0)
        for c in ready:  # never started: cancelled with the batch's waiting items
            if c.batch.id == batch_id:
                assert self.store.item(batch_id, c.key).state is S.CANCELLED
                self._let_go(c.item_id)

    @rule(batch_id=batches)
    def retry_failed(self, batch_id: str) -> None:
        status = self.store.get_batch(batch_id)
        if status.state in (B.FAILED, B.PARTIALLY_COMPLETED) and status.counts.failed:
            assert self.store.retry_failed(batch_id, self.now) == status.counts.failed
            after = self.store.get_batch(batch_id)
            assert (after.state, after.round) == (B.RETRYING, status.round + 1)
            self._clusters_agree({batch_id})
        else:
            self._refused_and_unchanged(
                batch_id, lambda: self.store.retry_failed(batch_id, self.now)
            )

    # -- invariants --------------------------------------------------------------------

    # NOTE: one invariant reads the cursor and each batch's status once for all the checks
    # (nothing writes between them): on PostgreSQL a cursor is two round trips and a status
    # one or two, after every step of every example.
    @invariant()
    def the_store_agrees_with_the_machine(self) -> None:
        cursor = self.store.cursor()
        self._cursor_never_goes_back(cursor)
        statuses = {batch_id: self.store.get_batch(batch_id) for batch_id in self.item_cursor}
        self._batch_moves_follow_the_table(cursor, statuses)
        self.item_moves_follow_the_table(cursor)
        self._counters_agree_and_batches_end(statuses)

    def _cursor_never_goes_back(self, cursor: int) -> None:
        assert cursor >= self.cursor
        self.cursor = cursor

    def _batch_moves_follow_the_table(self, cursor: int, statuses: dict[str, BatchStatus]) -> None:
        for event in self.store.events(since=self.event_cursor, limit=100_000):
            assert self.event_cursor < event.seq <= cursor
            if event.kind == "item.outcome_rejected":
                assert event.batch_id in self.item_cursor, event  # batch.events() shows it
            if event.kind != "batch.state":
                continue
            assert event.batch_id is not None
            old, new = event.data["from"], B(event.data["to"])
            if event.batch_id not in self.batch_state:
                # A batch enters the feed queued (in one chunk) or leaving its upload.
                assert old in (None, B.UPLOADING.value), event
            else:
                assert old == self.batch_state[event.batch_id].value, event
                assert new in BATCH_TRANSITIONS[B(old)], event
            self.batch_state[event.batch_id] = new
        self.event_cursor = cursor
        for batch_id, status in statuses.items():
            assert self.batch_state[batch_id] is status.state

    def item_moves_follow_the_table(self, cursor: int | None = None) -> None:
        """Every item change in the feed (up to ``cursor``, or now) is a move of the table,
        and the followed states are the stored ones."""
        if cursor is None:
            cursor = self.store.cursor()
        for batch_id, since in self.item_cursor.items():
            for item in self.store.item_changes(batch_id, since=since, limit=100_000):
                assert since < item.seq <= cursor
                old = self.item_state[(batch_id, item.key)]
                if (batch_id, item.key) in self.started and old is S.PENDING:
                    old = S.RUNNING  # held ready, then started and maybe ended in one commit
                assert _item_move_allowed(old, item.state), (batch_id, item.key, old, item.state)
                self.item_state[(batch_id, item.key)] = item.state
            self.item_cursor[batch_id] = cursor
            # Every change showed up in the feed: the followed states are the real ones.
            for item in self.store.items(batch_id):
                assert self.item_state[(batch_id, item.key)] is item.state, item
        self.started = set()

    def _counters_agree_and_batches_end(self, statuses: dict[str, BatchStatus]) -> None:
        for batch_id, status in statuses.items():
            assert status.counts == self.store.recount(batch_id)
            self._check_ending(status)

    @staticmethod
    def _check_ending(status: BatchStatus) -> None:
        counts = status.counts
        if status.concurrency is not None:
            assert counts.running <= status.concurrency
        if status.sealed and counts.remaining == 0 and status.state is not B.PAUSED:
            assert status.state.is_terminal, status
        if status.state in (B.COMPLETED, B.PARTIALLY_COMPLETED, B.FAILED):
            assert counts.remaining == 0, status
            assert status.state is ending_state(counts.succeeded, counts.failed, counts.cancelled)
            assert status.finished_at is not None
        if status.state is B.CANCELLED:
            # Only attempts already running may still finish; nothing waits to run.
            assert (counts.pending, counts.retry_wait) == (0, 0), status
        if status.state.is_active or status.state is B.PAUSED:
            assert status.finished_at is None


class PostgresLifecycle(Lifecycle):
    """The same machine over PostgreSQL: a fresh database per example."""

    databases: Databases | None = None

    def open_store(self) -> Store:
        from batchyard.store.postgres import PostgresStore

        assert self.databases is not None
        self.url = self.databases.create()
        return PostgresStore(self.url)

    def teardown(self) -> None:
        self.store.close()
        assert self.databases is not None
        self.databases.drop(self.url)


@pytest.fixture(scope="module")
def pg_machine() -> Iterator[None]:
    require_server()
    PostgresLifecycle.databases = Databases()
    try:
        yield
    finally:
        PostgresLifecycle.databases.close()
        PostgresLifecycle.databases = None


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path = tmp_path_factory.mktemp("lifecycle") / "template.db"
    SqliteStore(path).close()
    Lifecycle.template = path
    try:
        yield
    finally:
        Lifecycle.template = None


Lifecycle.TestCase.settings = _settings(80)
PostgresLifecycle.TestCase.settings = _settings(40)


@pytest.mark.usefixtures("sqlite_template")
class TestLifecycle(Lifecycle.TestCase):  # type: ignore[misc, valid-type]
    pass


# Some 60,000 short round trips to the server: 25 s on a quiet machine, several times that on
# a busy one (beside the suite's other process), which is no hang.
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("pg_machine")
class TestPostgresLifecycle(PostgresLifecycle.TestCase):  # type: ignore[misc, valid-type]
    pass
