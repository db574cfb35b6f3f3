#!/usr/bin/env bash
# bench/report.sh — how fast finance's month report answers over a large
# ledger on Postgres (issue 4: "a month's report over 10 million ledger rows
# answers in under 2 s"). Measured, not asserted.
#
# 1. creates a scratch database and applies paygate's migrations (`paygate migrate`);
# 2. fills usage_events with ROWS calls of one month (October 2026) by
#    generate_series, spread over CUSTOMERS customers, 2 keys each and 10
#    routes, and builds usage_daily from them with the same grouping the
#    ledger writer applies on ingest (one row per customer, period, UTC day,
#    route, key and price);
# 3. starts `paygate serve` (release build) on that database and times, over
#    RUNS runs each, the admin API answers finance pulls: the whole month by
#    day, route and key (JSON and CSV), one customer's month, and one
#    customer's invoice; and, for comparison, the same month summed straight
#    from usage_events as a report without rollups would have to.
#
# Knobs: ROWS=10000000 CUSTOMERS=1000 RUNS=5 PG=postgres://postgres@127.0.0.1:5432
#        KEEP=1 (keep the database for another run: skips the fill when it has ROWS rows)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-10000000}"
CUSTOMERS="${CUSTOMERS:-1000}"
RUNS="${RUNS:-5}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
DB="paygate_bench_report"
URL="$PG/$DB"
BIN="$ROOT/target/release/paygate"
TOKEN="benchtoken"
WORK="$(mktemp -d)"
PID=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
  [ "${KEEP:-0}" = 1 ] || psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ ! -x "$BIN" ]; then
  log "building release binary"
  (cd "$ROOT" && timeout 1800 cargo build --release -p paygate)
fi

ADMIN_PORT="$(free_port)"
cat > "$WORK/paygate.toml" <<EOF
[gateway]
listen = "127.0.0.1:$(free_port)"
shutdown_grace_seconds = 0
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[database]
url = "$URL"
[[upstreams]]
name = "none"
targets = ["127.0.0.1:9"]
[[routes]]
id = "r"
path_prefix = "/"
upstream = "none"
EOF

have="$(psql "$URL" -qAtc "SELECT COUNT(*) FROM usage_events" 2>/dev/null || echo 0)"
if [ "$have" != "$ROWS" ]; then
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  "$BIN" migrate --config "$WORK/paygate.toml"
  log "filling usage_events with $ROWS rows for $CUSTOMERS customers"
  t0=$(date +%s.%N)
  psql "$URL" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO plans (id, body, created_at, updated_at) VALUES ('premium',
  '{"id":"premium","name":"Premium","rate_limit":{"requests":50,"per":"second","burst":100},"quota":{"calls":100000,"period":"month"},"overage":{"price_micros":200},"routes":["*"],"max_websockets":10,"monthly_fee_micros":166665833}',
  '2026-09-01T00:00:00.000000Z', '2026-09-01T00:00:00.000000Z');
INSERT INTO customers (id, name, email, plan_id, anchor_day, created_at)
  SELECT 'c' || lpad(i::text, 5, '0'), 'Customer ' || i, 'c' || i || '@example.test', 'premium', 1, '2026-09-01T00:00:00.000000Z'
  FROM generate_series(1, $CUSTOMERS) i;
INSERT INTO customer_plans (id, customer_id, plan_id, monthly_fee_micros, effective_us)
  SELECT 'cp_' || id, id, plan_id, 166665833, 1788220800000000 FROM customers;
-- One month of calls: every 50th is past the quota at 200 micros, every 40th an upstream 5xx.
INSERT INTO usage_events (request_id, ts_us, customer_id, key_id, plan_id, route, method, status,
                          billable, units, overage_units, amount_micros, credits_micros, period, latency_us)
  SELECT 'r' || i,
         1790812800000000 + (i::bigint - 1) * (2678400000000 / $ROWS),
         'c' || lpad((i % $CUSTOMERS + 1)::text, 5, '0'),
         'k' || (i % ($CUSTOMERS * 2)),
         'premium',
         'route' || (i % 10),
         'GET',
         CASE WHEN i % 40 = 0 THEN 502 ELSE 200 END,
         CASE WHEN i % 40 = 0 THEN 0 ELSE 1 END,
         CASE WHEN i % 40 = 0 THEN 0 ELSE 1 END,
         CASE WHEN i % 40 <> 0 AND i % 50 = 0 THEN 1 ELSE 0 END,
         CASE WHEN i % 40 <> 0 AND i % 50 = 0 THEN 200 ELSE 0 END,
         0, '2026-10', 900
  FROM generate_series(1, $ROWS) i;
INSERT INTO usage_daily
  SELECT customer_id, period, to_char(to_timestamp(ts_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
         route, key_id,
         CASE WHEN overage_units > 0 THEN (amount_micros - credits_micros) / overage_units ELSE 0 END,
         CASE WHEN billable = 1 AND units > 0 THEN credits_micros / units ELSE 0 END,
         COUNT(*), SUM(billable), SUM(units), SUM(overage_units), SUM(amount_micros), SUM(credits_micros)
  FROM usage_events GROUP BY 1, 2, 3, 4, 5, 6, 7;
ANALYZE;
SQL
  log "filled in $(echo "$(date +%s.%N) - $t0" | bc) s"
fi
log "usage_events: $(psql "$URL" -qAtc 'SELECT COUNT(*) FROM usage_events') rows; usage_daily: $(psql "$URL" -qAtc 'SELECT COUNT(*) FROM usage_daily') rows"

PAYGATE_ADMIN_TOKEN="$TOKEN" PAYGATE_LOG=warn "$BIN" serve --config "$WORK/paygate.toml" >"$WORK/paygate.log" 2>&1 &
PID=$!
for _ in $(seq 1200); do
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

ADMIN="http://127.0.0.1:$ADMIN_PORT/admin/v1"
# Median of RUNS timings of one URL; also checks the answer is 200.
time_url() {
  local url="$1" out=()
  for _ in $(seq "$RUNS"); do
    out+=("$(curl -sS -o "$WORK/body" -w '%{http_code} %{time_total}' -H "Authorization: Bearer $TOKEN" "$url")")
  done
  local code="${out[0]%% *}"
  [ "$code" = 200 ] || { echo "$url answered $code: $(head -c 300 "$WORK/body")" >&2; exit 1; }
  printf '%s\n' "${out[@]}" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
time_sql() {
  local best=""
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(date +%s.%N); psql "$URL" -qAtc "$1" >/dev/null; t1=$(date +%s.%N)
    best="$best $(echo "$t1 - $t0" | bc)"
  done
  echo $best | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

month="from=2026-10-01&to=2026-11-01"
printf '\n| what (median of %s runs, %s ledger rows, %s customers) | seconds | rows/lines |\n|---|---:|---:|\n' "$RUNS" "$ROWS" "$CUSTOMERS"
t=$(time_url "$ADMIN/usage?$month&group_by=day,route,key")
printf '| month report by day, route, key (JSON) | %s | %s |\n' "$t" "$(python3 -c "import json;print(len(json.load(open('$WORK/body'))['data']))")"
t=$(time_url "$ADMIN/usage?$month&group_by=day,route,key&format=csv")
printf '| month report by day, route, key (CSV) | %s | %s |\n' "$t" "$(($(wc -l < "$WORK/body") - 1))"
t=$(time_url "$ADMIN/usage?$month&group_by=route")
printf '| month report by route (JSON) | %s | %s |\n' "$t" "$(python3 -c "import json;print(len(json.load(open('$WORK/body'))['data']))")"
t=$(time_url "$ADMIN/usage?customer_id=c00042&$month&group_by=day,route,key")
printf '| one customer, month by day, route, key | %s | %s |\n' "$t" "$(python3 -c "import json;print(len(json.load(open('$WORK/body'))['data']))")"
t=$(time_url "$ADMIN/invoices/inv_2026-10_c00042")
printf '| one customer invoice (draft, from the ledger) | %s | %s |\n' "$t" "$(python3 -c "import json;print(len(json.load(open('$WORK/body'))['lines']))")"
t=$(time_sql "SELECT to_char(to_timestamp(ts_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), route, key_id, COUNT(*), SUM(billable), SUM(units), SUM(amount_micros) FROM usage_events WHERE ts_us >= 1790812800000000 AND ts_us < 1793491200000000 GROUP BY 1, 2, 3")
printf '| for comparison: the month by day, route, key from usage_events (no rollup, psql) | %s | |\n' "$t"
