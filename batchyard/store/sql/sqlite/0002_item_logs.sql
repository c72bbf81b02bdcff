-- batchyard schema, version 2: per-item logs (progress messages, task log lines, every
-- attempt's error) and an index for the failed items of a batch (retry, reports).

CREATE TABLE item_logs (
    item_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX item_logs_item ON item_logs (item_id, at);
CREATE INDEX items_failed ON items (batch_pk) WHERE state = 'failed';
