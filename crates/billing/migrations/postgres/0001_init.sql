-- Records (the truth the admin API writes) and the usage ledger.
-- Money is integer micro-units; event times are integer microseconds since the epoch.
-- Kept column for column with migrations/sqlite: the same queries run on both.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE plans (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,          -- the plan as JSON (SPEC §5 shape)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL,
    plan_id    TEXT NOT NULL REFERENCES plans(id),
    anchor_day BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    prefix      TEXT NOT NULL,
    hash        BYTEA NOT NULL,         -- HMAC-SHA-256(server secret, key)
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_customer ON api_keys(customer_id, id);

CREATE TABLE credit_grants (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    amount_micros BIGINT NOT NULL,
    reference     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (customer_id, reference)
);

CREATE TABLE usage_events (
    request_id     TEXT PRIMARY KEY,
    ts_us          BIGINT NOT NULL,
    customer_id    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    plan_id        TEXT NOT NULL,
    route          TEXT NOT NULL,
    method         TEXT NOT NULL,
    status         BIGINT NOT NULL,
    billable       BIGINT NOT NULL,    -- 0 or 1, as on SQLite
    units          BIGINT NOT NULL,
    amount_micros  BIGINT NOT NULL,
    credits_micros BIGINT NOT NULL,
    period         TEXT NOT NULL,
    latency_us     BIGINT NOT NULL
);
CREATE INDEX usage_events_customer_ts ON usage_events(customer_id, ts_us);
