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

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
start_backend

# run BIN N: prints the instructions callgrind counted for one run serving N calls.
run() {
  local bin="$1" n="$2" dir gw admin token=benchtoken
  dir="$(mktemp -d "$TMP/run.XXXX")"
  gw="$(free_port)"; admin="$(free_port)"
  paygate_config "sqlite://$dir/ledger.db" "$gw" "$admin" "$(access_log_off "$bin")" >"$dir/paygate.toml"
  # In its own directory: anything it writes beside the ledger stays there.
  (cd "$dir" && exec env -i PATH="$PATH" HOME="$HOME" PAYGATE_ADMIN_TOKEN="$token" PAYGATE_KEY_SECRET=bench PAYGATE_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --log-file="$dir/vg.log" \
    "$bin" serve --config "$dir/paygate.toml" >"$dir/paygate.log" 2>&1) &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$admin/readyz" 120 "$dir/paygate.log"
  local key
  key="$(seed_bench "http://127.0.0.1:$admin" "$token")"
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
