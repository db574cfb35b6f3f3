-- Rating, invoices, reports and the audit log (issue 4).

-- Units of a call billed past the quota, so an invoice can say how many at what price.
ALTER TABLE usage_events ADD COLUMN overage_units INTEGER NOT NULL DEFAULT 0;

-- Daily rollup of the ledger, kept in the same transaction as the events it
-- counts (only events that were new). Reports and invoices read this table,
-- never usage_events, so a month costs days x routes x keys rows, not calls.
-- The prices are part of the key so an invoice line is one (route, price).
CREATE TABLE usage_daily (
    customer_id          TEXT NOT NULL,
    period               TEXT NOT NULL,     -- the customer's billing period, YYYY-MM
    day                  TEXT NOT NULL,     -- UTC day of the call, YYYY-MM-DD
    route                TEXT NOT NULL,
    key_id               TEXT NOT NULL,
    overage_price_micros INTEGER NOT NULL,  -- per unit past the quota; 0 if none
    unit_price_micros    INTEGER NOT NULL,  -- pay-per-call price per unit; 0 if none
    calls                INTEGER NOT NULL,
    billable_calls       INTEGER NOT NULL,
    units                INTEGER NOT NULL,
    overage_units        INTEGER NOT NULL,
    amount_micros        INTEGER NOT NULL,
    credits_micros       INTEGER NOT NULL,
    PRIMARY KEY (customer_id, period, day, route, key_id, overage_price_micros, unit_price_micros)
) WITHOUT ROWID;
CREATE INDEX usage_daily_day ON usage_daily(day, customer_id);

-- Before this migration a call's amount_micros was its pay-per-call price
-- (also in credits_micros) or its overage price: what is above the credits
-- spent was overage, for every unit of the call.
UPDATE usage_events SET overage_units = units
WHERE billable = 1 AND units > 0 AND amount_micros > credits_micros;

INSERT INTO usage_daily
SELECT customer_id, period, strftime('%Y-%m-%d', ts_us / 1000000, 'unixepoch'),
       route, key_id,
       CASE WHEN overage_units > 0 THEN (amount_micros - credits_micros) / units ELSE 0 END,
       CASE WHEN billable = 1 AND units > 0 THEN credits_micros / units ELSE 0 END,
       COUNT(*), SUM(billable), SUM(units), SUM(overage_units), SUM(amount_micros), SUM(credits_micros)
FROM usage_events
GROUP BY 1, 2, 3, 4, 5, 6, 7;

-- Which plan a customer was on since when, with the fee as it was when the
-- customer moved to it: a later price change of the plan does not rewrite
-- the past.
CREATE TABLE customer_plans (
    id                 TEXT PRIMARY KEY,
    customer_id        TEXT NOT NULL REFERENCES customers(id),
    plan_id            TEXT NOT NULL,
    monthly_fee_micros INTEGER NOT NULL,
    effective_us       INTEGER NOT NULL
);
CREATE INDEX customer_plans_customer ON customer_plans(customer_id, effective_us);

INSERT INTO customer_plans (id, customer_id, plan_id, monthly_fee_micros, effective_us)
SELECT 'cp_' || c.id, c.id, c.plan_id,
       COALESCE(json_extract(p.body, '$.monthly_fee_micros'), 0),
       CAST(ROUND((julianday(c.created_at) - 2440587.5) * 86400000000) AS INTEGER)
FROM customers c JOIN plans p ON p.id = c.plan_id;

-- Gapless invoice numbers: taken under the row lock of this counter.
CREATE TABLE sequences (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO sequences (name, value) VALUES ('invoice_number', 0);

CREATE TABLE closed_periods (
    period    TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL
);

-- Finalized invoices only; drafts are computed from the ledger when read.
CREATE TABLE invoices (
    id                     TEXT PRIMARY KEY,
    number                 INTEGER NOT NULL UNIQUE,
    customer_id            TEXT NOT NULL REFERENCES customers(id),
    period                 TEXT NOT NULL,
    currency               TEXT NOT NULL,
    total_micros           INTEGER NOT NULL,
    credits_applied_micros INTEGER NOT NULL,
    finalized_at           TEXT NOT NULL,
    line_count             INTEGER NOT NULL,
    UNIQUE (customer_id, period)
);

CREATE TABLE invoice_lines (
    invoice_id        TEXT NOT NULL REFERENCES invoices(id),
    line_no           INTEGER NOT NULL,
    kind              TEXT NOT NULL,     -- fee | proration | usage | overage | payg | adjustment
    charge            TEXT NOT NULL,     -- what is billed: fee | usage | overage | payg
    source_period     TEXT NOT NULL,     -- the period whose fee or usage this line bills
    description       TEXT NOT NULL,
    route             TEXT,
    quantity          INTEGER NOT NULL,
    unit_price_micros INTEGER NOT NULL,
    amount_micros     INTEGER NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
CREATE INDEX invoice_lines_source ON invoice_lines(source_period, invoice_id);

-- A finalized invoice never changes.
CREATE TRIGGER invoices_immutable_update BEFORE UPDATE ON invoices
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
CREATE TRIGGER invoices_immutable_delete BEFORE DELETE ON invoices
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
CREATE TRIGGER invoice_lines_immutable_update BEFORE UPDATE ON invoice_lines
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
CREATE TRIGGER invoice_lines_immutable_delete BEFORE DELETE ON invoice_lines
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
-- Nor can lines be added: an invoice keeps the lines it was closed with,
-- numbered 1..line_count, and (invoice_id, line_no) is unique.
CREATE TRIGGER invoice_lines_fixed_insert BEFORE INSERT ON invoice_lines
WHEN NEW.line_no < 1
  OR NEW.line_no > COALESCE((SELECT line_count FROM invoices WHERE id = NEW.invoice_id), 0)
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
-- INSERT OR REPLACE would delete an invoice without its delete trigger
-- (unless recursive_triggers is on): an insert that collides is refused first.
CREATE TRIGGER invoices_no_replace BEFORE INSERT ON invoices
WHEN EXISTS (SELECT 1 FROM invoices WHERE id = NEW.id OR number = NEW.number
             OR (customer_id = NEW.customer_id AND period = NEW.period))
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;
CREATE TRIGGER invoice_lines_no_replace BEFORE INSERT ON invoice_lines
WHEN EXISTS (SELECT 1 FROM invoice_lines WHERE invoice_id = NEW.invoice_id AND line_no = NEW.line_no)
BEGIN SELECT RAISE(ABORT, 'finalized invoices are immutable'); END;

-- Every admin change: who, what, before and after (JSON), when.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,      -- UUIDv7: sorts by time
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,         -- e.g. plan.update
    resource    TEXT NOT NULL,         -- plan | customer | key | credits | invoice
    resource_id TEXT NOT NULL,
    before      TEXT,
    after       TEXT
);
