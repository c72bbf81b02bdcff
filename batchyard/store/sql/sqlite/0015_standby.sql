-- batchyard schema, version 15: standby items. A worker may hold items of a batch capped
-- by its concurrency beyond the cap, leased but not counted against it (items.standby = 1,
-- batches.n_standby counts them); it starts one the moment one of its own items of that
-- batch ends, and the next commit records both, so the cap holds at every commit.
ALTER TABLE items ADD COLUMN standby INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN n_standby INTEGER NOT NULL DEFAULT 0;
