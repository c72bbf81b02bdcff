-- batchyard schema, version 1: batches with their counters, items, the change feed.

-- One row: the change-feed cursor. Every write transaction that changes something bumps
-- it once and stamps what it changed with the new value.
CREATE TABLE feed (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO feed (id, seq) VALUES (1, 0);

CREATE TABLE batches (
    pk INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    task TEXT NOT NULL,
    state TEXT NOT NULL,
    resume_state TEXT,
    sealed INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER,
    max_attempts INTEGER NOT NULL,
    timeout REAL,
    params TEXT NOT NULL DEFAULT '{}',
    metadata TEXT NOT NULL DEFAULT '{}',
    n_pending INTEGER NOT NULL DEFAULT 0,
    n_running INTEGER NOT NULL DEFAULT 0,
    n_retry_wait INTEGER NOT NULL DEFAULT 0,
    n_succeeded INTEGER NOT NULL DEFAULT 0,
    n_failed INTEGER NOT NULL DEFAULT 0,
    n_cancelled INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    round INTEGER NOT NULL DEFAULT 0,
    ended_round INTEGER NOT NULL DEFAULT 0,
    callbacks_round INTEGER NOT NULL DEFAULT 0,
    callback_lease REAL,
    -- Every fresh (never claimed) pending item of the batch has a rowid at or above this.
    claim_cursor INTEGER NOT NULL DEFAULT 0,
    upload_expires REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX batches_state ON batches (state, priority);
CREATE INDEX batches_callbacks ON batches (pk) WHERE ended_round > callbacks_round;

-- An item's rowid is (batch pk << 32) | position: the items of a batch are one range of
-- the table in submission order, so paging, counting and deleting them need no index.
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    batch_pk INTEGER NOT NULL,
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_type TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempt INTEGER NOT NULL,
    -- 1 when a lease of this item expired while its worker held other items too: it may
    -- be what killed that worker, so it next runs alone (see reclaim_expired).
    suspect INTEGER NOT NULL DEFAULT 0,
    run_after REAL,
    lease_expires REAL,
    worker TEXT,
    progress REAL,
    message TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    metrics TEXT,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    seq INTEGER NOT NULL
);
CREATE UNIQUE INDEX items_key ON items (batch_pk, key);
-- Partial indexes, so that inserting a fresh item touches none of them: fresh items are
-- claimed by walking the batch's rowid range from claim_cursor; items that come back
-- (a retry, a lease taken back) are found here and claimed first.
CREATE INDEX items_requeued ON items (batch_pk, priority DESC, id)
    WHERE state = 'pending' AND attempts > 0;
CREATE INDEX items_waiting ON items (batch_pk, run_after) WHERE state = 'retry_wait';
CREATE INDEX items_running ON items (batch_pk, lease_expires) WHERE state = 'running';
-- The item side of the change feed: "what changed in batch B since cursor C". An item
-- enters it with its first change after it was added (seq 0 = never changed).
CREATE INDEX items_seq ON items (batch_pk, seq) WHERE seq > 0;

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    batch_id TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX events_seq ON events (seq);
CREATE INDEX events_batch ON events (batch_id, seq);
