-- batchyard schema, version 14: webhooks. A batch names URLs to call (batch_webhooks);
-- the transaction that ends or pauses it writes one delivery per URL (webhook_deliveries,
-- the body being the batch's status then), which processes lease and send, retried with
-- backoff for up to a day. store_settings holds values every process shares, such as the
-- secret deliveries are signed with.

CREATE TABLE store_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE batch_webhooks (
    batch_pk INTEGER NOT NULL,
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    PRIMARY KEY (batch_pk, position)
);
CREATE TABLE webhook_deliveries (
    pk INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    batch_pk INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at REAL,
    last_status INTEGER,
    last_error TEXT,
    last_duration REAL,
    delivered_at REAL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_batch ON webhook_deliveries (batch_pk, pk);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state);
