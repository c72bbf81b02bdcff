-- batchyard schema: idempotency keys. A submission made with a key claims it in the
-- transaction that creates its batch; a later submission with the same key gets that batch
-- when its input has the same fingerprint (task, options and items, hashed), and is refused
-- when it does not. fingerprint is NULL while the first submission is still uploading. A key
-- lapses at expires_at (a day after its submission, by default) and goes with its batch.

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    fingerprint TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_batch ON idempotency_keys (batch_id);
