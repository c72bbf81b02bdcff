-- batchyard schema, version 6: calls whose model had no price, on items and batches, so a
-- cost that leaves them out is shown as unknown (or a lower bound), never as $0.
ALTER TABLE batches ADD COLUMN unpriced_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN unpriced_calls INTEGER NOT NULL DEFAULT 0;
