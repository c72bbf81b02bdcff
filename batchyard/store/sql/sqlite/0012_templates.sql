-- batchyard schema, version 12: templates, named and versioned parameter sets of a task.
-- A version is never changed: an update writes a new row (version + 1) and archiving sets
-- a flag, so a batch that ran with a version can always read it again. A batch records the
-- version it ran with (template_name, template_version) and the batch it re-ran, if any
-- (rerun_of: that batch's id, kept when it is deleted).

CREATE TABLE templates (
    pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    description TEXT,
    author TEXT,
    archived INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    UNIQUE (name, version)
);
ALTER TABLE batches ADD COLUMN template_name TEXT;
ALTER TABLE batches ADD COLUMN template_version INTEGER;
ALTER TABLE batches ADD COLUMN rerun_of TEXT;
CREATE INDEX batches_template ON batches (template_name, template_version)
    WHERE template_name IS NOT NULL;
