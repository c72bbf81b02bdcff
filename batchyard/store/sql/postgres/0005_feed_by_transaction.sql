-- batchyard schema, version 5 (PostgreSQL): the change feed without a lock that every
-- writer takes. A transaction's feed cursor is now its own transaction id plus the offset
-- kept in feed.seq (chosen here so that new cursors stay above every cursor written
-- before); readers stop below the oldest transaction of this database still in progress,
-- so they never skip a change that commits late. feed.seq is no longer bumped.
UPDATE feed SET seq = GREATEST(0, seq - pg_current_xact_id()::text::bigint + 1);
