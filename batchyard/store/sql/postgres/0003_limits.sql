-- batchyard schema, version 3 (PostgreSQL): rate limits shared by every worker of the store.
-- One row per limiter key holds its two token buckets (requests, tokens: the level at
-- updated_at, NULL while full and never used) and its pause; limit_leases holds its
-- concurrency slots in use, each with an expiry, so a dead worker's slots come back.

CREATE TABLE limits (
    key TEXT PRIMARY KEY,
    requests DOUBLE PRECISION,
    tokens DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    paused_until DOUBLE PRECISION,
    pause_reason TEXT
);
CREATE TABLE limit_leases (
    key TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, grant_id)
);
