-- batchyard schema, version 9: error clusters. Each failed attempt's signature (its error
-- class, its message with what varies blanked, the task's top frame) is kept on its item
-- (error_sig, the signature's short id) and counted per batch in error_clusters, in the
-- transaction that records the failure: attempts with it, and items failed with it now.
-- Failures recorded before this version are in no cluster.

ALTER TABLE items ADD COLUMN error_sig TEXT;

CREATE TABLE error_clusters (
    batch_pk INTEGER NOT NULL,
    sig TEXT NOT NULL,
    text TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    items INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    sample TEXT,
    sample_key TEXT,
    PRIMARY KEY (batch_pk, sig)
);
