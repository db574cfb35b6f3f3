-- Rating, invoices, reports and the audit log (issue 4).
-- Column for column as migrations/sqlite/0003_billing.sql; comments there.

ALTER TABLE usage_events ADD COLUMN overage_units BIGINT NOT NULL DEFAULT 0;

CREATE TABLE usage_daily (
    customer_id          TEXT NOT NULL,
    period               TEXT NOT NULL,
    day                  TEXT NOT NULL,
    route                TEXT NOT NULL,
    key_id               TEXT NOT NULL,
    overage_price_micros BIGINT NOT NULL,
    unit_price_micros    BIGINT NOT NULL,
    calls                BIGINT NOT NULL,
    billable_calls       BIGINT NOT NULL,
    units                BIGINT NOT NULL,
    overage_units        BIGINT NOT NULL,
    amount_micros        BIGINT NOT NULL,
    credits_micros       BIGINT NOT NULL,
    PRIMARY KEY (customer_id, period, day, route, key_id, overage_price_micros, unit_price_micros)
);
CREATE INDEX usage_daily_day ON usage_daily(day, customer_id);

UPDATE usage_events SET overage_units = units
WHERE billable = 1 AND units > 0 AND amount_micros > credits_micros;

INSERT INTO usage_daily
SELECT customer_id, period, to_char(to_timestamp(ts_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
       route, key_id,
       CASE WHEN overage_units > 0 THEN (amount_micros - credits_micros) / units ELSE 0 END,
       CASE WHEN billable = 1 AND units > 0 THEN credits_micros / units ELSE 0 END,
       COUNT(*), SUM(billable), SUM(units), SUM(overage_units), SUM(amount_micros), SUM(credits_micros)
FROM usage_events
GROUP BY 1, 2, 3, 4, 5, 6, 7;

CREATE TABLE customer_plans (
    id                 TEXT PRIMARY KEY,
    customer_id        TEXT NOT NULL REFERENCES customers(id),
    plan_id            TEXT NOT NULL,
    monthly_fee_micros BIGINT NOT NULL,
    effective_us       BIGINT NOT NULL
);
CREATE INDEX customer_plans_customer ON customer_plans(customer_id, effective_us);

INSERT INTO customer_plans (id, customer_id, plan_id, monthly_fee_micros, effective_us)
SELECT 'cp_' || c.id, c.id, c.plan_id,
       COALESCE((p.body::json ->> 'monthly_fee_micros')::BIGINT, 0),
       (EXTRACT(EPOCH FROM c.created_at::timestamptz) * 1000000)::BIGINT
FROM customers c JOIN plans p ON p.id = c.plan_id;

CREATE TABLE sequences (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO sequences (name, value) VALUES ('invoice_number', 0);

CREATE TABLE closed_periods (
    period    TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL
);

CREATE TABLE invoices (
    id                     TEXT PRIMARY KEY,
    number                 BIGINT NOT NULL UNIQUE,
    customer_id            TEXT NOT NULL REFERENCES customers(id),
    period                 TEXT NOT NULL,
    currency               TEXT NOT NULL,
    total_micros           BIGINT NOT NULL,
    credits_applied_micros BIGINT NOT NULL,
    finalized_at           TEXT NOT NULL,
    line_count             BIGINT NOT NULL,
    UNIQUE (customer_id, period)
);

CREATE TABLE invoice_lines (
    invoice_id        TEXT NOT NULL REFERENCES invoices(id),
    line_no           BIGINT NOT NULL,
    kind              TEXT NOT NULL,
    charge            TEXT NOT NULL,
    source_period     TEXT NOT NULL,
    description       TEXT NOT NULL,
    route             TEXT,
    quantity          BIGINT NOT NULL,
    unit_price_micros BIGINT NOT NULL,
    amount_micros     BIGINT NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
CREATE INDEX invoice_lines_source ON invoice_lines(source_period, invoice_id);

CREATE FUNCTION refuse_invoice_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'finalized invoices are immutable';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoice_lines_no_truncate BEFORE TRUNCATE ON invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_invoice_change();

CREATE FUNCTION refuse_extra_invoice_line() RETURNS trigger AS $$
BEGIN
    IF NEW.line_no < 1 OR NEW.line_no >
        COALESCE((SELECT line_count FROM invoices WHERE id = NEW.invoice_id), 0) THEN
        RAISE EXCEPTION 'finalized invoices are immutable';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoice_lines_fixed BEFORE INSERT ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_extra_invoice_line();

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    before      TEXT,
    after       TEXT
);
