-- batchyard schema, version 6: attempts that ran, and why items ran again. `attempts` stays
-- the lease's fencing token (every claim adds one); `unrun` counts the leases given back
-- before the task was called (prefetched items, items of a batch a task paused), so an
-- item ran `attempts - unrun` times. `again` is why the item's next run would be a re-run
-- (worker_lost, released, error, retry); when a claim takes it, the batch's counter of that
-- reason goes up by one, and a lease given back unrun takes it down again.

ALTER TABLE items ADD COLUMN unrun INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN again TEXT;
ALTER TABLE batches ADD COLUMN again_worker_lost INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN again_released INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN again_error INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN again_retry INTEGER NOT NULL DEFAULT 0;
