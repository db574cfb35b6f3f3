#!/usr/bin/env bash
# bench/profile.sh — where a call's instructions go, bare Pingora and paygate
# side by side, counted by valgrind's callgrind (exact and repeatable on a
# noisy machine, unlike req/s).
#
#   bench/profile.sh [PAYGATE_BIN [BARE_BIN]]
#       defaults: target/release/paygate, target/release/bare-proxy
#
# Each proxy runs under callgrind in front of a static nginx. After start-up
# (and for paygate the admin calls that create its plan, customer and key) and
# WARM calls, the counters are zeroed (`callgrind_control -z`), N sequential
# keep-alive calls are made, and the counters are dumped (`callgrind_control
# -d`): the dump holds exactly those N calls, every thread of the process
# included (for paygate: gateway, usage writer, SQLite ledger).
#
# Prints, per proxy: instructions per call and heap allocations per call
# (see allocations() below), then paygate's TOP functions by inclusive
# instructions per call.
# Knobs: N=2000 WARM=300 TOP=60 KEEP=1 (keep the callgrind files; the path is
# printed). Needs valgrind (callgrind_control, callgrind_annotate), nginx,
# curl, jq, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-2000}"
WARM="${WARM:-300}"
TOP="${TOP:-60}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PAYGATE_BIN="$(realpath "${1:-$TARGET_DIR/release/paygate}")"
BARE_BIN="$(realpath "${2:-$TARGET_DIR/release/bare-proxy}")"
for tool in valgrind callgrind_control callgrind_annotate nginx curl jq python3; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool not found" >&2; exit 1; }
done
for bin in "$PAYGATE_BIN" "$BARE_BIN"; do
  [[ -x "$bin" ]] || { echo "profile.sh: $bin not executable (cargo build --release -p paygate -p bare-proxy)" >&2; exit 1; }
done

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "profile.sh: files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
start_backend

# measure NAME PID URL KEY: zero, N calls, dump; leaves $TMP/NAME.out.
measure() {
  local name="$1" pid="$2" url="$3" key="$4"
  calls "$WARM" "$url" "$key"
  callgrind_control -z "$pid" >/dev/null
  calls "$N" "$url" "$key"
  # Background work of the last calls (the usage writer's batch) lands in
  # this window too; give it the writer's flush interval and more.
  sleep 1
  callgrind_control -d "$pid" >/dev/null
  local dump
  dump="$(ls -t "$TMP/$name".cg.out.* 2>/dev/null | head -n 1)"
  [[ -n "$dump" ]] || { echo "profile.sh: no callgrind dump for $name" >&2; exit 1; }
  mv "$dump" "$TMP/$name.out"
  kill -TERM "$pid"
  wait "$pid" || true
}

# total FILE: instructions in a dump.
total() { awk '/^summary:|^totals:/ { print $2; exit }' "$1"; }

# allocations FILE: heap allocations, counted as calls into the allocator's
# entry points from anything that is not itself part of an allocator (so one
# allocation counts once however many layers it passes): Rust's
# (`__rust_alloc*`, `__rust_realloc`, which LTO often inlines away), mimalloc's
# (`mi_malloc*`, `mi_zalloc*`, `mi_calloc*`, `mi_realloc*`: paygate's global
# allocator) and the C library's (`malloc`, `calloc`, `realloc`: bare-proxy's
# global allocator, and SQLite's and OpenSSL's in both).
allocations() {
  python3 - "$1" <<'EOF'
import re, sys
entry = re.compile(r"^(__rust_alloc(_zeroed)?|__rust_realloc|mi_(malloc|zalloc|calloc|realloc)(_aligned)?|malloc|calloc|realloc)$")
inside = re.compile(r"^(__rust_|__rdl_|mi_|_mi_|malloc|calloc|realloc|<mimalloc::MiMalloc)")
# callgrind's compressed names: "(id) name" defines an id, "(id)" refers to
# it. Calls are listed inside the caller's "fn=" block: a "cfn=" line names
# the callee of the "calls=COUNT ..." line after it.
names, caller, callee, n = {}, "", None, 0
for line in open(sys.argv[1], errors="replace"):
    if line.startswith(("fn=", "cfn=")):
        key, _, rest = line.rstrip("\n").partition("=")
        m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
        name = rest
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            name = names.get(m.group(1), "")
        if key == "fn":
            caller = name
        else:
            callee = name
    elif line.startswith("calls=") and callee is not None:
        if entry.match(callee) and not inside.match(caller):
            n += int(line.split()[0][6:])
        callee = None
print(n)
EOF
}

# bare-proxy
port="$(free_port)"
(cd "$TMP" && exec env BARE_PROXY_LISTEN="127.0.0.1:$port" BARE_PROXY_UPSTREAM="127.0.0.1:$BACKEND_PORT" BARE_PROXY_THREADS=2 \
  valgrind --tool=callgrind --callgrind-out-file="$TMP/bare.cg.out.%p" --log-file="$TMP/bare.vg.log" \
  "$BARE_BIN" >"$TMP/bare.log" 2>&1) &
bare_pid=$!
PIDS+=("$bare_pid")
wait_http "http://127.0.0.1:$port/" 120 "$TMP/bare.log"
measure bare "$bare_pid" "http://127.0.0.1:$port" none

# paygate: memory store, SQLite ledger, one route on the backend.
dir="$TMP/paygate"
mkdir -p "$dir"
gw="$(free_port)"; admin="$(free_port)"; token=benchtoken
paygate_config "sqlite://$dir/ledger.db" "$gw" "$admin" "$(access_log_off "$PAYGATE_BIN")" >"$dir/paygate.toml"
(cd "$dir" && exec env -i PATH="$PATH" HOME="$HOME" PAYGATE_ADMIN_TOKEN="$token" PAYGATE_KEY_SECRET=bench PAYGATE_LOG=warn \
  valgrind --tool=callgrind --callgrind-out-file="$TMP/paygate.cg.out.%p" --log-file="$TMP/paygate.vg.log" \
  "$PAYGATE_BIN" serve --config "$dir/paygate.toml" >"$dir/paygate.log" 2>&1) &
pg_pid=$!
PIDS+=("$pg_pid")
wait_http "http://127.0.0.1:$admin/readyz" 120 "$dir/paygate.log"
key="$(seed_bench "http://127.0.0.1:$admin" "$token")"
wait_http "http://127.0.0.1:$gw/" 120
measure paygate "$pg_pid" "http://127.0.0.1:$gw" "$key"

bare_total="$(total "$TMP/bare.out")"
pg_total="$(total "$TMP/paygate.out")"
bare_alloc="$(allocations "$TMP/bare.out")"
pg_alloc="$(allocations "$TMP/paygate.out")"
printf '| proxy | instructions per call | heap allocations per call |\n|---|---:|---:|\n'
awk -v n="$N" -v bt="$bare_total" -v pt="$pg_total" -v ba="$bare_alloc" -v pa="$pg_alloc" 'BEGIN {
  printf "| bare Pingora | %d | %.1f |\n", bt / n, ba / n
  printf "| paygate (memory store, SQLite) | %d | %.1f |\n", pt / n, pa / n
  printf "| paygate − bare | %d | %.1f |\n", (pt - bt) / n, (pa - ba) / n
}'
echo
echo "paygate, top $TOP functions by inclusive instructions per call:"
callgrind_annotate --inclusive=yes --threshold=100 "$TMP/paygate.out" 2>/dev/null |
  awk -v n="$N" -v top="$TOP" '
    /^-+$/ { sep++; next }
    sep >= 3 && $1 ~ /^[0-9,]+$/ {
      ir = $1; gsub(",", "", ir)
      $1 = ""; sub(/^ +/, "")
      sub(/\([0-9.]+%\) */, "")
      printf "%10.0f  %s\n", ir / n, substr($0, 1, 160)
      if (++shown >= top) exit
    }'
