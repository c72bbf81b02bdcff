-- batchyard schema, version 8 (PostgreSQL): items a worker holds that wait for a rate
-- limiter's admission, so that any process reading a batch's status can tell them from
-- items really running. One row per worker, batch and limiter key, replaced as a whole by
-- its worker; a row whose worker stopped answering is ignored after expires_at.

CREATE TABLE limit_waits (
    worker TEXT NOT NULL,
    batch_pk BIGINT NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    items INTEGER NOT NULL,
    wait_until DOUBLE PRECISION NOT NULL,
    rate DOUBLE PRECISION,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, batch_pk, key)
);
CREATE INDEX limit_waits_batch ON limit_waits (batch_pk);
