-- batchyard schema, version 6 (PostgreSQL): leave 30% of each items page free. An item is
-- updated at least twice (claimed, recorded) and never in place (its indexed columns
-- change), so each update writes a new row version; with room on its own page the version
-- stays there, instead of every writer of every batch queuing on the table's one extension
-- lock to add pages (bench/postgres.py: 8 writers waited on it 4-7% of the time; 1.4% now).
-- Pages written before this keep their fill.
ALTER TABLE items SET (fillfactor = 70);
