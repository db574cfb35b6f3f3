-- x402 payments (issue 10): one row per paid call, beside its usage event.

CREATE TABLE payments (
    request_id    TEXT PRIMARY KEY,          -- the usage event this payment paid for
    ts_us         INTEGER NOT NULL,
    customer_id   TEXT NOT NULL,             -- the customer, or x402:<payer> for an anonymous payer
    key_id        TEXT NOT NULL,
    route         TEXT NOT NULL,
    period        TEXT NOT NULL,             -- the usage event's period (YYYY-MM)
    payer         TEXT NOT NULL,             -- lower-case address
    amount_micros INTEGER NOT NULL,          -- the route's price
    amount_units  TEXT NOT NULL,             -- atomic units signed (may exceed 64 bits)
    asset         TEXT NOT NULL,
    network       TEXT NOT NULL,             -- CAIP-2 id
    nonce         TEXT NOT NULL,
    valid_before  INTEGER NOT NULL,          -- Unix seconds
    tx_hash       TEXT,                      -- the settlement's transaction
    state         TEXT NOT NULL CHECK (state IN ('settled', 'failed', 'settlement_unknown')),
    reason        TEXT
);
-- A payment pays for one call: the ledger's last word, after a restart too.
-- A failed settlement moved no money, so the same authorization may come back.
CREATE UNIQUE INDEX payments_identity ON payments(network, payer, nonce)
    WHERE state <> 'failed';
CREATE INDEX payments_ts ON payments(ts_us);
CREATE INDEX payments_customer ON payments(customer_id, period);

-- Settled x402 payments in the daily rollup, beside the calls they paid for:
-- reports and invoices read them from the same rows as the rest of the usage.
ALTER TABLE usage_daily ADD COLUMN x402_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN x402_amount_micros INTEGER NOT NULL DEFAULT 0;
