-- batchyard schema, version 4 (PostgreSQL): what LLM batches need. Usage beyond tokens and cost
-- (cached and reasoning tokens, provider calls, answers from the response cache and the cost
-- they saved) on items and batches; a batch's budget, rate limits and the reason batchyard
-- paused it;
-- budget holds (the worst-case cost of a call in flight, reserved before the call; a hold
-- counts only while its item is still running that attempt, so a finished, released or
-- reclaimed item's hold lapses by itself); and the response cache, keyed by content.

ALTER TABLE batches ADD COLUMN budget DOUBLE PRECISION;
ALTER TABLE batches ADD COLUMN pause_reason TEXT;
-- Rate limits the batch sets for its task's calls (JSON: rate_limit, tokens_per_minute).
ALTER TABLE batches ADD COLUMN limits TEXT;
ALTER TABLE batches ADD COLUMN tokens_cached BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN tokens_reasoning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN saved_cost DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN tokens_cached BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN tokens_reasoning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN saved_cost DOUBLE PRECISION NOT NULL DEFAULT 0;

CREATE TABLE budget_holds (
    item_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    batch_pk BIGINT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (item_id, attempt)
);
CREATE INDEX budget_holds_batch ON budget_holds (batch_pk);

CREATE TABLE response_cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
