#!/usr/bin/env bash
# bench/instructions.sh — instructions paygate executes per call, counted by
# valgrind (callgrind), for comparing builds on a machine too noisy for
# req/s: instruction counts do not depend on what else the machine does.
#
#   bench/instructions.sh [BIN ...]     default: target/release/paygate
#
# For each binary: paygate serve (memory store, SQLite ledger, one route in
# front of a static nginx backend) runs under callgrind twice, once serving
# SMALL calls and once LARGE calls after the same start-up, seeding and
# warm-up; instructions per call = (Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL),
# every thread of the process included (gateway, usage writer, SQLite).
# Knobs: SMALL=500 LARGE=2500 WARM=200. Needs valgrind, nginx, curl, jq, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMALL="${SMALL:-500}"
LARGE="${LARGE:-2500}"
WARM="${WARM:-200}"
BINS=("$@")
(( ${#BINS[@]} > 0 )) || BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/paygate")
for tool in valgrind nginx curl jq python3; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool not found" >&2; exit 1; }
done

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url deadline_s [log file to show on failure]
  local end=$((SECONDS + $2))
  until curl -s -o /dev/null -m 2 "$1"; do
    if (( SECONDS >= end )); then
      echo "instructions.sh: $1 did not answer" >&2
      [[ -n "${3:-}" ]] && tail -n 20 "$3" >&2
      exit 1
    fi
    sleep 0.2
  done
}

BACKEND_PORT="$(free_port)"
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 '{"ok":true}'; } }
}
EOF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$BACKEND_PORT/" 10

# calls N URL KEY: N sequential calls on one keep-alive connection.
calls() {
  python3 - "$@" <<'EOF'
import http.client, sys, urllib.parse
n, url, key = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
for _ in range(n):
    c.request("GET", "/bench", headers={"X-API-Key": key})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")
EOF
}

# run BIN N: prints the instructions callgrind counted for one run serving N calls.
run() {
  local bin="$1" n="$2" dir gw admin token=benchtoken
  dir="$(mktemp -d "$TMP/run.XXXX")"
  gw="$(free_port)"; admin="$(free_port)"
  cat >"$dir/paygate.toml" <<EOF
[gateway]
listen = "127.0.0.1:$gw"
threads = 2
shutdown_grace_seconds = 0
[admin]
listen = "127.0.0.1:$admin"
[database]
url = "sqlite://$dir/ledger.db"
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$BACKEND_PORT"]
[[routes]]
id = "bench"
path_prefix = "/"
upstream = "backend"
EOF
  # In its own directory: anything it writes beside the ledger stays there.
  (cd "$dir" && exec env -i PATH="$PATH" HOME="$HOME" PAYGATE_ADMIN_TOKEN="$token" PAYGATE_KEY_SECRET=bench PAYGATE_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --log-file="$dir/vg.log" \
    "$bin" serve --config "$dir/paygate.toml" >"$dir/paygate.log" 2>&1) &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$admin/readyz" 120 "$dir/paygate.log"
  local a=(-s -f -m 60 -H "Authorization: Bearer $token" -H "Content-Type: application/json")
  curl "${a[@]}" -X POST "http://127.0.0.1:$admin/admin/v1/plans" \
    -d '{"id":"bench","name":"Bench","rate_limit":{"requests":10000000,"per":"second","burst":10000000},"routes":["*"]}' >/dev/null
  curl "${a[@]}" -X POST "http://127.0.0.1:$admin/admin/v1/customers" \
    -d '{"id":"bench","name":"Bench","email":"bench@example.com","plan_id":"bench"}' >/dev/null
  local key
  key="$(curl "${a[@]}" -X POST "http://127.0.0.1:$admin/admin/v1/customers/bench/keys" | jq -r .key)"
  wait_http "http://127.0.0.1:$gw/" 120
  calls "$WARM" "http://127.0.0.1:$gw" "$key"
  calls "$n" "http://127.0.0.1:$gw" "$key"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/Collected :/ { print $NF }' "$dir/vg.log" | tr -d ','
}

printf '| binary | instructions per call |\n|---|---:|\n'
for bin in "${BINS[@]}"; do
  [[ -x "$bin" ]] || { echo "instructions.sh: $bin not executable" >&2; exit 1; }
  small="$(run "$bin" "$SMALL")"
  large="$(run "$bin" "$LARGE")"
  [[ -n "$small" && -n "$large" ]] || { echo "instructions.sh: no count for $bin" >&2; exit 1; }
  printf '| %s | %s |\n' "$bin" "$(( (large - small) / (LARGE - SMALL) ))"
done
