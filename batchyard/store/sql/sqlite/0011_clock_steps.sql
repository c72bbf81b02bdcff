-- batchyard schema, version 9: what the lease sweep and the retry wait need to judge time
-- by lengths rather than by absolute times of one clock, so that a step of the machine's
-- clock (NTP, a suspend) neither takes every live lease at once nor strands retries.
-- lease_for: the length of an item's lease (its end minus its last renewal);
-- waiting_since: when it began to wait for its retry (run_after minus its delay).

ALTER TABLE items ADD COLUMN lease_for REAL;
ALTER TABLE items ADD COLUMN waiting_since REAL;
