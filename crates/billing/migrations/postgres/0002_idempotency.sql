-- Admin POSTs with an Idempotency-Key: the first response is kept and replayed.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,      -- SHA-256 of method, path and body
    status       BIGINT NOT NULL,   -- 0 while the first request is in progress
    body         BYTEA,
    created_at   TEXT NOT NULL
);
