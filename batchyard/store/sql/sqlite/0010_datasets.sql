-- batchyard schema: datasets, stored tables of records to pick a batch's items from.
-- A dataset's rows are one range of dataset_rows' rowid, (dataset pk << 32) | position,
-- in the order they were added, so paging, counting and copying them walk the primary key.
-- dataset_fields keeps the top-level field names seen in its rows, in first-seen order,
-- with the JSON types each held: filters are checked against it without reading any row.

CREATE TABLE datasets (
    pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_field TEXT,
    n_rows INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE dataset_rows (
    id INTEGER PRIMARY KEY,
    dataset_pk INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE UNIQUE INDEX dataset_rows_key ON dataset_rows (dataset_pk, key);

CREATE TABLE dataset_fields (
    dataset_pk INTEGER NOT NULL,
    name TEXT NOT NULL,
    ord INTEGER NOT NULL,
    types TEXT NOT NULL,
    PRIMARY KEY (dataset_pk, name)
);
