#!/usr/bin/env bash
# bench/scale.sh — paygate with a large catalog: start-up time, memory,
# how fast a revocation and a plan change reach a gateway, and admin paging.
#
#   bench/scale.sh                 # 100,000 customers, 1,000,000 keys
#   CUSTOMERS=10000 KEYS_PER_CUSTOMER=10 bench/scale.sh
#   CUSTOMERS=10000 KEYS_PER_CUSTOMER=1 LOSS=1 bench/scale.sh
#
# With LOSS=1 it also restarts Redis without persistence under load (wrk,
# every customer's key in turn, LOSS_SECONDS long, the restart a third of
# the way in) and reports the answers by status, how many were 503, and how
# long after the restart until every customer's counters were back (the
# store's epoch marker set again after the bulk rebuild). Needs wrk.
#
# The production layout on loopback: Postgres (PG, default
# postgres://postgres@127.0.0.1:5432; a database of its own, dropped at the
# end unless KEEP=1), a redis-server of its own, one `paygate admin` and one
# `paygate gateway` process, a static nginx as the upstream.
#
# The catalog is written straight into Postgres with COPY (customers, their
# plan history, one credit grant each, KEYS_PER_CUSTOMER keys each, hashed
# with HMAC-SHA-256 under the configured key secret exactly as paygate hashes
# them): creating a million keys through the admin API would take longer than
# the measurement. The two plans are created through the admin API.
#
# Reports: seconds from spawn until /readyz answers 200 and until the first
# proxied call with a generated key answers 200, and VmRSS then (admin and
# gateway; the gateway's VmHWM too, the start-up's peak); revocation and
# plan-change propagation (admin API call until the gateway answers
# accordingly, polled every 5 ms; REPEAT times, median and max); the median time of the first and of a late page of
# GET /admin/v1/customers and of a customer's keys (REPEAT each).
# Needs cargo (unless SKIP_BUILD=1), psql, redis-server, redis-cli, nginx,
# curl, jq, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUSTOMERS="${CUSTOMERS:-100000}"
KEYS_PER_CUSTOMER="${KEYS_PER_CUSTOMER:-10}"
REPEAT="${REPEAT:-10}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
READY_TIMEOUT="${READY_TIMEOUT:-300}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/paygate"
for tool in psql redis-server redis-cli nginx curl jq python3; do
  command -v "$tool" >/dev/null || { echo "scale.sh: $tool not found" >&2; exit 1; }
done
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p paygate) >&2
fi
[[ -x "$BIN" ]] || { echo "scale.sh: $BIN not executable" >&2; exit 1; }

TMP="$(mktemp -d)"
DB="paygate_scale_$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "scale.sh: kept $TMP and database $DB" >&2
  else
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
max() { sort -g | tail -n 1; }

wait_ok() { # url pid deadline_s log [curl args...]: until the url answers 2xx
  local url="$1" pid="$2" end=$((SECONDS + $3)) log="$4"
  shift 4
  until curl -sf -o /dev/null -m 2 "$@" "$url"; do
    if ! kill -0 "$pid" 2>/dev/null || (( SECONDS >= end )); then
      echo "scale.sh: $url did not answer" >&2; tail -n 20 "$log" >&2; exit 1
    fi
    sleep 0.05
  done
}

# Upstream and Redis.
start_backend
REDIS_PORT="$(free_port)"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
until [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; do sleep 0.05; done

psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
GW_PORT="$(free_port)"; GW_ADMIN_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
SECRET="scale-bench-secret"
TOKEN="scaletoken"
config() { # admin listen port
  paygate_config "$PG/$DB" "$GW_PORT" "$1" "[store]
backend = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT/0\"
key_prefix = \"scale\""
}
config "$ADMIN_PORT" >"$TMP/admin.toml"
config "$GW_ADMIN_PORT" >"$TMP/gateway.toml"
ENV=(env -i PATH="$PATH" HOME="$HOME" PAYGATE_ADMIN_TOKEN="$TOKEN" PAYGATE_KEY_SECRET="$SECRET" PAYGATE_LOG=warn)
"${ENV[@]}" "$BIN" migrate --config "$TMP/admin.toml" >"$TMP/migrate.log" 2>&1 ||
  { echo "scale.sh: migrate failed" >&2; cat "$TMP/migrate.log" >&2; exit 1; }

A=(-s -f -m 30 -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
start_admin() {
  "${ENV[@]}" "$BIN" admin --config "$TMP/admin.toml" >>"$TMP/admin.log" 2>&1 &
  ADMIN_PID=$!
  PIDS+=("$ADMIN_PID")
}

# The plans, through the admin API of an admin started on the empty catalog.
start_admin
wait_ok "http://127.0.0.1:$ADMIN_PORT/readyz" "$ADMIN_PID" "$READY_TIMEOUT" "$TMP/admin.log"
for p in a:1000 b:2000; do
  curl "${A[@]}" -X POST "http://127.0.0.1:$ADMIN_PORT/admin/v1/plans" \
    -d "{\"id\":\"scale-${p%%:*}\",\"name\":\"Scale ${p%%:*}\",\"rate_limit\":{\"requests\":${p##*:},\"per\":\"second\"},\"quota\":{\"calls\":100000,\"period\":\"month\"},\"routes\":[\"*\"]}" >/dev/null
done
kill "$ADMIN_PID"; wait "$ADMIN_PID" 2>/dev/null || true

echo "scale.sh: writing $CUSTOMERS customers and $((CUSTOMERS * KEYS_PER_CUSTOMER)) keys" >&2
t0="$(now)"
python3 - "$TMP" "$CUSTOMERS" "$KEYS_PER_CUSTOMER" "$SECRET" "$REPEAT" <<'EOF'
import hashlib, hmac, os, random, sys
tmp, customers, per, secret = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
repeat = int(sys.argv[5])
base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
rng = random.Random(42)
created = "2026-11-01T00:00:00.000000Z"
mac = hmac.new(secret, digestmod=hashlib.sha256)
with open(f"{tmp}/customers.tsv", "w") as c, open(f"{tmp}/plans.tsv", "w") as cp, \
     open(f"{tmp}/grants.tsv", "w") as g, open(f"{tmp}/keys.tsv", "w") as k, \
     open(f"{tmp}/sample.tsv", "w") as s, open(f"{tmp}/all_keys.txt", "w") as a:
    for i in range(customers):
        cid = f"c{i:07d}"
        c.write(f"{cid}\tCustomer {i}\t{cid}@example.com\tscale-a\t{1 + i % 28}\t{created}\n")
        cp.write(f"cp_{cid}\t{cid}\tscale-a\t0\t1761955200000000\n")
        g.write(f"g_{cid}\t{cid}\t1000000\tinitial\t{created}\n")
        for j in range(per):
            key = "pg_live_" + "".join(rng.choice(base62) for _ in range(32))
            m = mac.copy(); m.update(key.encode())
            kid = f"k{i:07d}_{j:02d}"
            k.write(f"{kid}\t{cid}\t{key[:12]}\t\\\\x{m.hexdigest()}\t{created}\n")
            if j == 0 and (i == 0 or i >= customers - repeat):
                s.write(f"{cid}\t{kid}\t{key}\n")
            if j == 0 and 0 < i < customers - repeat:
                a.write(f"{key}\n")
EOF
for t in "customers (id, name, email, plan_id, anchor_day, created_at):customers" \
         "customer_plans (id, customer_id, plan_id, monthly_fee_micros, effective_us):plans" \
         "credit_grants (id, customer_id, amount_micros, reference, created_at):grants" \
         "api_keys (id, customer_id, prefix, hash, created_at):keys"; do
  psql -q "$PG/$DB" -c "\\copy ${t%%:*} FROM '$TMP/${t##*:}.tsv'"
done
psql -q "$PG/$DB" -c "ANALYZE" >/dev/null
echo "scale.sh: catalog written in $(since "$t0") s" >&2

# Admin, then gateway, each timed from spawn.
t0="$(now)"
start_admin
wait_ok "http://127.0.0.1:$ADMIN_PORT/readyz" "$ADMIN_PID" "$READY_TIMEOUT" "$TMP/admin.log"
ADMIN_READY="$(since "$t0")"
ADMIN_RSS="$(rss_mb "$ADMIN_PID")"

mapfile -t SAMPLE <"$TMP/sample.tsv"
first_key="$(cut -f3 <<<"${SAMPLE[0]}")"
t0="$(now)"
"${ENV[@]}" "$BIN" gateway --config "$TMP/gateway.toml" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_ok "http://127.0.0.1:$GW_ADMIN_PORT/readyz" "$GW_PID" "$READY_TIMEOUT" "$TMP/gateway.log"
GW_READY="$(since "$t0")"
wait_ok "http://127.0.0.1:$GW_PORT/x" "$GW_PID" "$READY_TIMEOUT" "$TMP/gateway.log" -H "X-API-Key: $first_key"
GW_SERVING="$(since "$t0")"
GW_RSS="$(rss_mb "$GW_PID")"
GW_HWM="$(hwm_mb "$GW_PID")"

status_with() { curl -s -o /dev/null -w '%{http_code}' -m 5 -H "X-API-Key: $1" "http://127.0.0.1:$GW_PORT/x"; }
limit_with() { curl -s -D - -o /dev/null -m 5 -H "X-API-Key: $1" "http://127.0.0.1:$GW_PORT/x" | tr -d '\r' | awk -F': ' 'tolower($1) == "ratelimit-limit" { print $2 }'; }

# until_ms CMD EXPECTED: milliseconds until CMD prints EXPECTED (10 s at most).
until_ms() {
  local start end
  start="$(now)"
  end=$((SECONDS + 10))
  until [[ "$("${@:1:$#-1}")" == "${*: -1}" ]]; do
    (( SECONDS < end )) || { echo "scale.sh: no change within 10 s" >&2; echo 10000; return; }
    sleep 0.005
  done
  awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}

: >"$TMP/revoke.ms"; : >"$TMP/plan.ms"
for line in "${SAMPLE[@]:1:$REPEAT}"; do
  IFS=$'\t' read -r cid kid key <<<"$line"
  [[ "$(status_with "$key")" == 200 ]] || { echo "scale.sh: key of $cid refused before the test" >&2; exit 1; }
  # A plan change: the rate limit in the answer's headers moves to plan b's.
  curl "${A[@]}" -X PATCH "http://127.0.0.1:$ADMIN_PORT/admin/v1/customers/$cid" -d '{"plan_id":"scale-b"}' >/dev/null &
  req=$!
  until_ms limit_with "$key" 2000 >>"$TMP/plan.ms"; echo >>"$TMP/plan.ms"
  wait "$req"
  curl "${A[@]}" -X DELETE "http://127.0.0.1:$ADMIN_PORT/admin/v1/keys/$kid" >/dev/null &
  req=$!
  until_ms status_with "$key" 401 >>"$TMP/revoke.ms"; echo >>"$TMP/revoke.ms"
  wait "$req"
done

# page_ms URL: median milliseconds of REPEAT GETs.
page_ms() {
  for _ in $(seq "$REPEAT"); do
    curl "${A[@]}" -o /dev/null -w '%{time_total}\n' "$1"
  done | awk '{ print $1 * 1000 }' | median
}
last="c$(printf '%07d' $((CUSTOMERS - 101)))"
ADM="http://127.0.0.1:$ADMIN_PORT/admin/v1"
P_FIRST="$(page_ms "$ADM/customers?limit=100")"
P_LAST="$(page_ms "$ADM/customers?limit=100&starting_after=$last")"
K_FIRST="$(page_ms "$ADM/customers/c0000000/keys")"
K_LAST="$(page_ms "$ADM/customers/c$(printf '%07d' $((CUSTOMERS - 1)))/keys")"

# Redis restarted without persistence under load (LOSS=1).
loss_report=""
if [[ "${LOSS:-0}" == 1 ]]; then
  LOSS_SECONDS="${LOSS_SECONDS:-12}"
  cat >"$TMP/loss.lua" <<'LUA'
local keys, i, threads = {}, 0, {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
function setup(thread) threads[#threads + 1] = thread end
function init(args) counts = {} end
function request()
  i = i % #keys + 1
  return wrk.format("GET", "/x", { ["X-API-Key"] = keys[i] })
end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\n", status, n)) end
end
LUA
  KEYS_FILE="$TMP/all_keys.txt" wrk -t1 -c32 -d"${LOSS_SECONDS}s" -s "$TMP/loss.lua" \
    "http://127.0.0.1:$GW_PORT/" >"$TMP/loss.wrk" 2>&1 &
  wrk_pid=$!
  sleep "$(awk -v d="$LOSS_SECONDS" 'BEGIN { print d / 3 }')"
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  t_restart="$(now)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$TMP" >>"$TMP/redis.log" 2>&1 &
  PIDS+=("$!")
  until [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; do sleep 0.01; done
  REDIS_BACK="$(since "$t_restart")"
  until [[ -n "$(redis-cli -p "$REDIS_PORT" get scale:epoch 2>/dev/null)" ]]; do
    (( $(awk -v a="$t_restart" -v b="$(now)" 'BEGIN { print (b - a > 60) }') )) && break
    sleep 0.01
  done
  COUNTERS_BACK="$(since "$t_restart")"
  wait "$wrk_pid" || true
  count() { awk -v s="$1" '$1 == "status" && $2 == s { print $3 }' "$TMP/loss.wrk"; }
  total="$(awk '$1 == "status" { n += $3 } END { print n + 0 }' "$TMP/loss.wrk")"
  others="$(awk '$1 == "status" && $2 != 200 && $2 != 503 { n += $3 } END { print n + 0 }' "$TMP/loss.wrk")"
  rebuild_ms="$(grep -ho 'counters rebuilt from the ledger.*' "$TMP/gateway.log" "$TMP/admin.log" | grep -o 'ms=[0-9]*' | head -n 1)"
  loss_report="| Redis restarted without persistence under load: calls in ${LOSS_SECONDS} s / answered 200 / 503 / other | $total / $(count 200) / $(count 503) / $others |
| the same: Redis answering again / every customer's counters back (s after the restart) | $REDIS_BACK / $COUNTERS_BACK |
| the same: the bulk rebuild itself (gateway log) | ${rebuild_ms:-n/a} |"
fi

cat <<EOF
| catalog | $CUSTOMERS customers, $((CUSTOMERS * KEYS_PER_CUSTOMER)) keys |
|---|---:|
| admin: ready (s from spawn) | $ADMIN_READY |
| admin: RSS when ready (MB) | $ADMIN_RSS |
| gateway: ready (s from spawn) | $GW_READY |
| gateway: first call served (s from spawn) | $GW_SERVING |
| gateway: RSS when serving (MB) | $GW_RSS |
| gateway: peak RSS so far (VmHWM, MB) | $GW_HWM |
| revocation reaches the gateway, median / max (ms, $(grep -c . "$TMP/revoke.ms") runs) | $(grep . "$TMP/revoke.ms" | median) / $(grep . "$TMP/revoke.ms" | max) |
| plan change reaches the gateway, median / max (ms) | $(grep . "$TMP/plan.ms" | median) / $(grep . "$TMP/plan.ms" | max) |
| GET /admin/v1/customers, first page of 100 (ms, median) | $P_FIRST |
| the same, the last page (ms, median) | $P_LAST |
| a customer's keys, first customer / last customer (ms, median) | $K_FIRST / $K_LAST |
$loss_report
EOF
