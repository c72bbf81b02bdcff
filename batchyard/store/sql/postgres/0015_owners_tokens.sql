-- batchyard schema, version 15 (PostgreSQL): owners and tokens, for `batchyard serve`. A batch records
-- its owner (the owner of the token that submitted it; NULL for one made from the CLI or
-- Python, which only an admin token sees through the server). A token is kept as the
-- SHA-256 of its secret, never the secret; a session (the dashboard's cookie) likewise,
-- with the CSRF token that unsafe requests made with the cookie must carry.

ALTER TABLE batches ADD COLUMN owner TEXT;
CREATE INDEX batches_owner ON batches (owner, pk) WHERE owner IS NOT NULL;

CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
);

CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token_name TEXT NOT NULL REFERENCES tokens (name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
