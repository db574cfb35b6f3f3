#!/usr/bin/env bash
# bench/run.sh — throughput, latency and CPU per call of paygate against two
# reference proxies (nginx, bare Pingora) in front of the same fast backend.
# See bench/README.md. Everything listens on 127.0.0.1 only; every process this
# script starts is stopped on exit; every blocking step has a deadline.
#
# Knobs (environment):
#   TARGETS="nginx bare paygate paygate-redis"  which proxies to measure, in this order
#                                 (also: paygate-baseline, paygate-jwt-rs256, paygate-jwt-hs256,
#                                 paygate-x402: every call pays with a fresh x402 payment,
#                                 against a facilitator on loopback, bench/x402.lua;
#                                 nginx-tls, bare-tls, paygate-tls: nginx, bare, paygate
#                                 called over HTTPS with keep-alive, self-signed certificate)
#   ROUNDS=3 DURATION=10s WARMUP=3s CONNECTIONS=64 THREADS=1   wrk settings
#   PROXY_THREADS=2               worker threads/processes of every proxy
#   PIN=auto|0                    CPU pinning (auto: proxy on PROXY_CPUS, wrk+backend+redis on LOAD_CPUS)
#   PROXY_CPUS=1 LOAD_CPUS=0      taskset CPU lists used when PIN=auto and nproc >= 2
#   PAYGATE_STORE=memory|redis    store backend of the "paygate" target
#   PAYGATE_REDIS_URL=redis://... use this Redis instead of starting a redis-server
#   PAYGATE_RUST_LOG=warn         log filter for paygate (passed as PAYGATE_LOG)
#   PAYGATE_BASELINE_BIN=path     a second paygate binary (e.g. a build of main before a change)
#                                 for the "paygate-baseline" target, memory store
#   SKIP_BUILD=1                  use the binaries already in target/release
#   READY_TIMEOUT=60 BUILD_TIMEOUT=1800   deadlines in seconds
#   RESULTS_DIR=bench/results/<timestamp>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# access_log_off (run.sh defines its own free_port, wait_http and start_backend below).
source "$ROOT/bench/lib.sh"
BENCH="$ROOT/bench"

TARGETS="${TARGETS:-nginx bare paygate paygate-redis}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
PROXY_THREADS="${PROXY_THREADS:-2}"
PIN="${PIN:-auto}"
PAYGATE_STORE_MODE="${PAYGATE_STORE:-memory}"
PAYGATE_RUST_LOG="${PAYGATE_RUST_LOG:-warn}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1800}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)}"
ADMIN_TOKEN="benchtoken"

# ---------------------------------------------------------------- targets ---
# One line per target: "<name> <start function> [args...]". A start function
# starts the proxy (pinned to PROXY_CPUS), waits until it answers, and calls
#   register <name> <url> <pid> [wrk header]
# Adding a target = adding a line here (plus a start function if it is new).
# The last argument "https" of a start function adds an HTTPS listener (the
# self-signed certificate of tls_cert) and registers its https:// URL for wrk.
TARGET_DEFS=(
  "nginx          start_nginx_proxy"
  "bare           start_bare"
  "paygate        start_paygate $PAYGATE_STORE_MODE"
  "paygate-redis  start_paygate redis"
  "paygate-baseline start_paygate memory baseline"
  "paygate-jwt-rs256 start_paygate memory this RS256"
  "paygate-jwt-hs256 start_paygate memory this HS256"
  "paygate-x402 start_paygate memory this x402"
  "nginx-tls      start_nginx_proxy https"
  "bare-tls       start_bare https"
  "paygate-tls    start_paygate $PAYGATE_STORE_MODE this key https"
)

# ----------------------------------------------------------------- helpers ---
die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for tool in curl wrk nginx awk taskset; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

# seconds in a wrk duration (10, 10s, 2m, 1h)
dur_secs() {
  local d="$1"
  case "$d" in
    *h) echo $(( ${d%h} * 3600 )) ;;
    *m) echo $(( ${d%m} * 60 )) ;;
    *s) echo "${d%s}" ;;
    *)  echo "$d" ;;
  esac
}
DURATION_S="$(dur_secs "$DURATION")"; WARMUP_S="$(dur_secs "$WARMUP")"
[[ "$DURATION_S" =~ ^[1-9][0-9]*$ ]] || die "bad DURATION $DURATION"
[[ "$WARMUP_S" =~ ^[0-9]+$ ]] || die "bad WARMUP $WARMUP"

NCPU="$(nproc)"
PROXY_CPUS="${PROXY_CPUS:-1}"
LOAD_CPUS="${LOAD_CPUS:-0}"
if [[ "$PIN" == "auto" && "$NCPU" -ge 2 ]]; then
  PIN_PROXY=(taskset -c "$PROXY_CPUS")
  PIN_LOAD=(taskset -c "$LOAD_CPUS")
  PIN_DESC="proxy on CPU $PROXY_CPUS; wrk + backend + redis-server on CPU $LOAD_CPUS"
  PROXY_NCPU="$(awk -F, '{n=0; for(i=1;i<=NF;i++){split($i,r,"-"); n+= (r[2]==""?1:r[2]-r[1]+1)} print n}' <<<"$PROXY_CPUS")"
else
  PIN_PROXY=(); PIN_LOAD=()
  PIN_DESC="no pinning"
  PROXY_NCPU="$NCPU"
fi

CLK_TCK="$(getconf CLK_TCK)"
TMP="$(mktemp -d /tmp/paygate-bench.XXXXXX)"
mkdir -p "$RESULTS_DIR"
PIDS=()                    # every long-running process we started

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p kids
  # SIGINT is the fast shutdown of nginx, Pingora and redis alike
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  local deadline=$(( SECONDS + 10 ))
  for p in "${PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      kids="$(pgrep -P "$p" || true)"       # e.g. nginx workers
      kill -KILL "$p" $kids 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
# Ports come from below the kernel's ephemeral range when there is room, so that
# an outgoing connection or a test binding port 0 next door cannot take a port
# between the check here and the server's bind().
read -r EPH_LO _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPH_LO=32768
if (( EPH_LO > 21000 )); then PORT_BASE=20000 PORT_SPAN=$(( EPH_LO - 20000 ))
else PORT_BASE=20000 PORT_SPAN=30000; fi
# free_port VAR: a loopback port nothing accepts on and not handed out before
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( PORT_BASE + RANDOM % PORT_SPAN ))
    [[ "$USED_PORTS" == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "; printf -v "$1" '%s' "$p"; return 0
    fi
  done
  die "no free port found"
}

# wait_http <pid> <logfile> <url> [curl args...]: poll until 2xx or deadline
wait_http() {
  local pid="$1" logf="$2" url="$3"; shift 3
  local deadline=$(( SECONDS + READY_TIMEOUT )) code
  while (( SECONDS < deadline )); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2 || true; die "process for $url exited (log: $logf)"; }
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" "$url" || true)"
    [[ "$code" == 2* ]] && return 0
    sleep 0.1
  done
  tail -n 30 "$logf" >&2 || true
  die "$url not ready after ${READY_TIMEOUT}s (last status $code, log: $logf)"
}

# HTTPS targets: one self-signed certificate (EC P-256, SAN localhost and
# 127.0.0.1) in RESULTS_DIR, made by the first HTTPS target and shared by all.
# Readiness checks verify it (--cacert); wrk does not verify certificates.
TLS_CERT="" TLS_KEY=""
tls_cert() {
  [[ -n "$TLS_CERT" ]] && return 0
  command -v openssl >/dev/null || die "openssl not found (needed for the HTTPS targets)"
  local dir
  dir="$(cd "$RESULTS_DIR" && pwd)"    # absolute: nginx resolves relative paths against its prefix
  timeout 60 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$dir/tls-key.pem" -out "$dir/tls-cert.pem" >"$dir/tls-cert.log" 2>&1 \
    || { cat "$dir/tls-cert.log" >&2; die "openssl could not make the certificate"; }
  TLS_CERT="$dir/tls-cert.pem"; TLS_KEY="$dir/tls-key.pem"
  log "self-signed certificate (EC P-256, localhost, 127.0.0.1): $TLS_CERT"
}
# tls_session <name> <url>: remember the protocol and cipher curl negotiates
# with the target over HTTP/1.1 (curl links the same OpenSSL as wrk and sends
# the same defaults), e.g. "TLSv1.3 / TLS_AES_256_GCM_SHA384", for the summary.
declare -A T_TLS
tls_session() {
  local s
  s="$(curl -sv --http1.1 -m 5 --cacert "$TLS_CERT" -o /dev/null "$2" 2>&1 \
        | sed -n 's/^\* SSL connection using //p' | head -n 1 || true)"
  T_TLS[$1]="${s:-unknown}"
  log "$1: ${T_TLS[$1]}"
}

# user+system CPU ticks of a process, all its threads and its child processes
cpu_ticks() {
  local root="$1" total=0 p line rest
  local pids=("$root")
  mapfile -t -O 1 pids < <(pgrep -P "$root" || true)
  for p in "${pids[@]}"; do
    line="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    rest="${line##*) }"               # fields from 3 (state) on; comm may contain spaces
    read -r -a f <<<"$rest"
    total=$(( total + f[11] + f[12] ))  # utime (14), stime (15)
  done
  echo "$total"
}

declare -A T_URL T_PID T_HDR T_SCRIPT
register() { T_URL[$1]="$2"; T_PID[$1]="$3"; T_HDR[$1]="${4:-}"; T_SCRIPT[$1]="${5:-}"; }
# Targets that use Redis: T_REDIS_URL[name] is the URL redis-cli reads the
# counters from (empty: not countable, e.g. a cluster URL), T_REDIS_PID[name]
# the redis-server pid (empty when PAYGATE_REDIS_URL points to a server we did
# not start: no CPU figure then).
declare -A T_REDIS T_REDIS_URL T_REDIS_PID

# ---------------------------------------------------------------- processes ---
# nginx_conf <dir> <workers> <http-block body>
nginx_conf() {
  local dir="$1" workers="$2" body="$3"
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
$body
}
EOF
}

start_nginx() {  # start_nginx <dir> <pin...>: prints pid
  local dir="$1"; shift
  "$@" nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" \
    >"$RESULTS_DIR/$(basename "$dir").log" 2>&1 &
  PIDS+=("$!")
  LAST_PID=$!
}

start_backend() {
  free_port BACKEND_PORT
  local dir="$TMP/backend"
  nginx_conf "$dir" 1 "
    server {
        listen 127.0.0.1:$BACKEND_PORT reuseport backlog=4096;
        location / { default_type application/json; return 200 '{\"ok\":true}'; }
    }"
  start_nginx "$dir" "${PIN_LOAD[@]}"
  BACKEND_PID=$LAST_PID
  wait_http "$BACKEND_PID" "$dir/logs/error.log" "http://127.0.0.1:$BACKEND_PORT/"
  log "backend nginx on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"
}

# The x402 facilitator of the paygate-x402 target: nginx answering every
# verify and settle with success, on LOAD_CPUS like the backend (it stands for
# a service outside paygate, so it must not take CPU from the proxy's core).
FACILITATOR_URL=""
start_facilitator() {
  [[ -n "$FACILITATOR_URL" ]] && return
  local port dir="$TMP/facilitator"
  free_port port
  nginx_conf "$dir" 1 "
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        default_type application/json;
        location = /verify { return 200 '{\"isValid\":true,\"payer\":\"0x857b06519e91e3a54538791bdbb0e22373e36b66\"}'; }
        location = /settle { return 200 '{\"success\":true,\"transaction\":\"0x5a1f00000000000000000000000000000000000000000000000000000000beef\",\"network\":\"base-sepolia\",\"payer\":\"0x857b06519e91e3a54538791bdbb0e22373e36b66\"}'; }
    }"
  start_nginx "$dir" "${PIN_LOAD[@]}"
  FACILITATOR_URL="http://127.0.0.1:$port"
  log "x402 facilitator (nginx, always yes) on $FACILITATOR_URL"
}

# x402_payment: one x402 v1 payment (base64) with a nonce of its own
x402_payment() {
  printf '{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{"signature":"0x00","authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66","to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","value":"17000","validAfter":"0","validBefore":"%s","nonce":"0x%s"}}}' \
    "$(( $(date +%s) + 3600 ))" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" | base64 -w0
}

# start_nginx_proxy <name> [http|https]: with https, the same nginx plus a
# "listen ssl" on a second port (TLS 1.2 and 1.3, h2 and http/1.1 offered
# through ALPN, nginx's defaults otherwise), and wrk calls that port.
start_nginx_proxy() {
  local name="$1" scheme="${2:-http}" port tls_port="" dir="$TMP/nginx-proxy" tls_conf=""
  free_port port
  local url="http://127.0.0.1:$port/" ready=()
  if [[ "$scheme" == https ]]; then
    tls_cert; free_port tls_port
    dir="$TMP/nginx-proxy-tls"
    tls_conf="
        listen 127.0.0.1:$tls_port ssl http2 reuseport backlog=4096;
        ssl_certificate $TLS_CERT;
        ssl_certificate_key $TLS_KEY;
        ssl_protocols TLSv1.2 TLSv1.3;"
    url="https://127.0.0.1:$tls_port/"; ready=(--cacert "$TLS_CERT")
  fi
  nginx_conf "$dir" "$PROXY_THREADS" "
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;$tls_conf
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
  start_nginx "$dir" "${PIN_PROXY[@]}"
  wait_http "$LAST_PID" "$dir/logs/error.log" "$url" "${ready[@]}"
  [[ "$scheme" == https ]] && tls_session "$name" "$url"
  register "$name" "$url" "$LAST_PID"
}

# start_bare <name> [http|https]: with https, bare-proxy also listens with TLS
# (BARE_PROXY_TLS_*: TlsSettings::intermediate, h2 offered) and wrk calls that.
start_bare() {
  local name="$1" scheme="${2:-http}" port tls_port logf="$RESULTS_DIR/bare-proxy.log"
  free_port port
  local url="http://127.0.0.1:$port/" ready=() tls_env=()
  if [[ "$scheme" == https ]]; then
    tls_cert; free_port tls_port
    logf="$RESULTS_DIR/bare-proxy-tls.log"
    tls_env=(BARE_PROXY_TLS_LISTEN="127.0.0.1:$tls_port" BARE_PROXY_TLS_CERT="$TLS_CERT"
             BARE_PROXY_TLS_KEY="$TLS_KEY")
    url="https://127.0.0.1:$tls_port/"; ready=(--cacert "$TLS_CERT")
  fi
  env BARE_PROXY_LISTEN="127.0.0.1:$port" BARE_PROXY_UPSTREAM="127.0.0.1:$BACKEND_PORT" \
    BARE_PROXY_THREADS="$PROXY_THREADS" "${tls_env[@]}" \
    "${PIN_PROXY[@]}" "$TARGET_DIR/release/bare-proxy" >"$logf" 2>&1 &
  PIDS+=("$!")
  local pid=$!
  wait_http "$pid" "$logf" "$url" "${ready[@]}"
  [[ "$scheme" == https ]] && tls_session "$name" "$url"
  register "$name" "$url" "$pid"
}

REDIS_URL_STARTED=""
REDIS_PID=""
# redis-server runs on LOAD_CPUS, like the backend: it is not part of the proxy
# under test, so it must not take CPU from the proxy's core (see README).
start_redis() {
  command -v redis-cli >/dev/null || die "redis-cli not found (needed for readiness and Redis counters)"
  if [[ -n "${PAYGATE_REDIS_URL:-}" ]]; then REDIS_URL_STARTED="$PAYGATE_REDIS_URL"; return; fi
  [[ -n "$REDIS_URL_STARTED" ]] && return
  command -v redis-server >/dev/null || die "redis-server not found (or set PAYGATE_REDIS_URL)"
  local port; free_port port
  "${PIN_LOAD[@]}" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$TMP" >"$RESULTS_DIR/redis.log" 2>&1 &
  PIDS+=("$!")
  local pid=$! deadline=$(( SECONDS + READY_TIMEOUT ))
  until [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; do
    kill -0 "$pid" 2>/dev/null || die "redis-server exited (log: $RESULTS_DIR/redis.log)"
    (( SECONDS < deadline )) || die "redis-server not ready after ${READY_TIMEOUT}s"
    sleep 0.1
  done
  REDIS_URL_STARTED="redis://127.0.0.1:$port/0"
  REDIS_PID="$pid"      # taskset execs redis-server: same pid
  log "redis-server on 127.0.0.1:$port (pid $pid)"
}

# redis_snap <url> <pid> <file>: counters of one Redis into <file>, one
# "<name> <value>" a line: _total (total_commands_processed), one line per
# command from INFO commandstats (calls), _ticks (utime+stime of redis-server,
# only when <pid> is given). One INFO call, so it adds one "info" command.
# Writes nothing when <url> is empty or Redis does not answer.
redis_snap() {
  local url="$1" pid="$2" out="$3"
  : >"$out"
  [[ -n "$url" ]] || return 0
  # INFO all = every section, including stats and commandstats (one command)
  timeout 5 redis-cli -u "$url" INFO all 2>/dev/null | tr -d '\r' | awk -F'[:,=]' '
      /^total_commands_processed:/ { print "_total", $2 }
      /^cmdstat_/                  { sub(/^cmdstat_/, "", $1); print $1, $3 }' >"$out" || : >"$out"
  grep -q '^_total ' "$out" || { : >"$out"; return 0; }
  if [[ -n "$pid" ]]; then echo "_ticks $(cpu_ticks "$pid")" >>"$out"; fi
}

# Commands that run a script (each one round trip that a call waits for).
SCRIPT_CMDS="eval evalsha eval_ro evalsha_ro fcall fcall_ro"

# redis_delta <before> <after>: "executed ticks cmdstats" over the window, "-"
# for what is not known. executed = total_commands_processed delta minus
# redis_snap's own INFO calls; cmdstats = "evalsha=N,hmget=M,..." from
# commandstats (without info). Redis counts the commands a script runs
# (redis.call) in both like commands a client sent; redis_probe tells them apart.
redis_delta() {
  awk 'FNR == NR { a[$1] = $2; next } { b[$1] = $2 }
    END {
      if (!("_total" in a) || !("_total" in b)) { print "- - -"; exit }
      own = b["info"] - a["info"]
      executed = b["_total"] - a["_total"] - own
      ticks = ("_ticks" in a && "_ticks" in b) ? b["_ticks"] - a["_ticks"] : "-"
      list = ""
      for (k in b) {
        if (k == "_total" || k == "_ticks" || k == "info") continue
        d = b[k] - a[k]
        if (d > 0) list = list (list == "" ? "" : ",") k "=" d
      }
      print executed, ticks, (list == "" ? "none" : list)
    }' "$1" "$2"
}

# redis_probe <target>: who sends which Redis command. After the measured runs,
# with MONITOR on (it slows Redis down, so never during a measured run): one
# connection of load for 1 s, then 1 s idle so background work (usage-stream
# batches, the billing consumer) shows too. MONITOR marks commands a script ran
# as "[db lua]". Writes "<command> <sent by a client> <run by a script>" lines
# to $RESULTS_DIR/redis-sources-<target>.txt (lower case, without subcommand);
# the summary splits the window counts with them. A command of the windows that
# the probe did not see gets "1 0" if Redis does not allow it in scripts
# (COMMAND INFO flag noscript, e.g. SCRIPT LOAD) and "0 0" (unknown) otherwise.
redis_probe() {
  local t="$1" url="${T_REDIS_URL[$t]}" mon="$TMP/monitor.txt" mp i n info
  local out="$RESULTS_DIR/redis-sources-$t.txt"
  : >"$out"
  [[ -n "$url" ]] || return 0
  timeout 30 redis-cli -u "$url" MONITOR >"$mon" 2>/dev/null &
  mp=$!
  for i in $(seq 1 50); do [[ -s "$mon" ]] && break; sleep 0.05; done
  local args=(-t 1 -c 1 -d 1s --timeout 5s)
  [[ -n "${T_HDR[$t]}" ]] && args+=(-H "${T_HDR[$t]}")
  timeout 31 "${PIN_LOAD[@]}" wrk "${args[@]}" "${T_URL[$t]}" >"$RESULTS_DIR/probe-$t.txt" 2>&1 || true
  sleep 1
  kill -INT "$mp" 2>/dev/null || true
  wait "$mp" 2>/dev/null || true
  awk 'match($0, /\] "[^"]*"/) {
         cmd = tolower(substr($0, RSTART + 3, RLENGTH - 4))
         if ($0 ~ /^[0-9.]+ \[[0-9]+ lua\]/) lua[cmd]++; else cli[cmd]++
         seen[cmd] = 1 }
       END { for (c in seen) print c, cli[c] + 0, lua[c] + 0 }' "$mon" >"$out" || : >"$out"
  rm -f "$mon"
  local unseen=()
  mapfile -t unseen < <(awk -F'\t' -v t="$t" -v probed="$(awk '{ printf "%s ", $1 }' "$out")" '
    BEGIN { n = split(probed, P, " "); for (i = 1; i <= n; i++) seen[P[i]] = 1 }
    $2 == t && $13 != "-" { n = split($13, kv, ","); for (i = 1; i <= n; i++) {
      split(kv[i], p, "="); b = p[1]; sub(/\|.*/, "", b)
      if (b != "" && b != "none" && !(b in seen)) { seen[b] = 1; print p[1] } } }' "$RAW")
  for n in "${unseen[@]}"; do
    info="$(timeout 5 redis-cli -u "$url" COMMAND INFO "$n" 2>/dev/null || true)"
    if grep -qx noscript <<<"$info"; then echo "${n%%|*} 1 0"; else echo "${n%%|*} 0 0"; fi
  done >>"$out"
}

# admin <method> <path> [json]: prints body, fails unless 2xx
admin() {
  local method="$1" path="$2" data="${3:-}" out="$TMP/admin.out" code
  local args=(-s -m 10 -o "$out" -w '%{http_code}' -X "$method"
              -H "Authorization: Bearer $ADMIN_TOKEN" -H "Content-Type: application/json")
  [[ -n "$data" ]] && args+=(--data "$data")
  code="$(curl "${args[@]}" "$ADMIN_URL$path" || true)"
  [[ "$code" == 2* ]] || die "admin $method $path -> $code: $(cat "$out" 2>/dev/null)"
  cat "$out"
}

# JWT targets: tokens signed here with openssl, checked by paygate on every
# call (an RSA key of the test kit, test-only; an HMAC secret made up here).
JWT_ISS="https://bench.invalid/"
JWT_RSA_KEY="$ROOT/crates/testkit/keys/rsa1.pem"
JWT_RSA_PUB="$ROOT/crates/testkit/keys/rsa1.pub.pem"
JWT_HMAC_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# make_jwt <alg>: a token for customer "bench", valid for a day
make_jwt() {
  local alg="$1" now header payload input sig
  now="$(date +%s)"
  header="$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url)"
  payload="$(printf '{"iss":"%s","aud":"bench","sub":"bench","iat":%d,"exp":%d}' \
    "$JWT_ISS" "$now" "$(( now + 86400 ))" | b64url)"
  input="$header.$payload"
  case "$alg" in
    RS256) sig="$(printf '%s' "$input" | openssl dgst -sha256 -sign "$JWT_RSA_KEY" -binary | b64url)" ;;
    HS256) sig="$(printf '%s' "$input" | openssl dgst -sha256 -hmac "$JWT_HMAC_SECRET" -binary | b64url)" ;;
    *) die "make_jwt: unknown algorithm $alg" ;;
  esac
  echo "$input.$sig"
}
# jwt_issuer_toml <alg>: the [[auth.jwt]] section of a JWT target
jwt_issuer_toml() {
  local alg="$1"
  printf '[[auth.jwt]]\nissuer = "%s"\naudience = ["bench"]\nalgorithms = ["%s"]\n' "$JWT_ISS" "$alg"
  case "$alg" in
    RS256) printf 'public_key_pem = """\n%s\n"""\n' "$(cat "$JWT_RSA_PUB")" ;;
    HS256) printf 'secret_env = "BENCH_JWT_SECRET"\n' ;;
  esac
}

# start_paygate <name> <store> [this|baseline] [key|RS256|HS256|x402] [http|https]:
# calls carry an API key (key, the default), a JWT signed with RS256/HS256, or
# an x402 payment. With https, paygate also gets a [gateway.tls] listener (the
# self-signed certificate, TLS 1.2 and 1.3, h2 offered) and wrk calls that.
start_paygate() {
  local name="$1" store="$2" build="${3:-this}" jwt_alg="${4:-}" scheme="${5:-http}"
  local gw_port admin_port tls_port dir="$TMP/$1" logf="$RESULTS_DIR/$1.log"
  [[ "$jwt_alg" == key ]] && jwt_alg=""
  local bin="$TARGET_DIR/release/paygate"
  if [[ "$build" == baseline ]]; then
    bin="${PAYGATE_BASELINE_BIN:-}"
    [[ -n "$bin" ]] || die "target $name needs PAYGATE_BASELINE_BIN (a paygate binary to compare with)"
  fi
  [[ -x "$bin" ]] || die "$bin not built"
  command -v jq >/dev/null || die "jq not found (needed to read the API key)"
  free_port gw_port; free_port admin_port
  mkdir -p "$dir"
  local url="http://127.0.0.1:$gw_port/" ready=() gateway_tls=""
  if [[ "$scheme" == https ]]; then
    tls_cert; free_port tls_port
    gateway_tls="
[gateway.tls]
listen = \"127.0.0.1:$tls_port\"
cert_path = \"$TLS_CERT\"
key_path = \"$TLS_KEY\"
min_version = \"1.2\"
http2 = true"
    url="https://127.0.0.1:$tls_port/"; ready=(--cacert "$TLS_CERT")
  fi
  local store_extra=""
  if [[ "$store" == redis ]]; then
    start_redis
    store_extra="redis_url = \"$REDIS_URL_STARTED\"
key_prefix = \"bench-$name-$$\""
    T_REDIS[$name]=1
    T_REDIS_URL[$name]=""
    [[ "$REDIS_URL_STARTED" =~ ^rediss?:// ]] && T_REDIS_URL[$name]="$REDIS_URL_STARTED"
    T_REDIS_PID[$name]="$REDIS_PID"
  fi
  cat >"$dir/paygate.toml" <<EOF
$(access_log_off "$bin")
[gateway]
listen = "127.0.0.1:$gw_port"
threads = $PROXY_THREADS
$gateway_tls

[admin]
listen = "127.0.0.1:$admin_port"

[store]
backend = "$store"
$store_extra

[database]
url = "sqlite://$dir/bench.db"

[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$BACKEND_PORT"]

[[routes]]
id = "bench"
path_prefix = "/"
upstream = "backend"
EOF
  if [[ "$jwt_alg" == x402 ]]; then
    start_facilitator
    # Every call pays; one payer sends them all, so its rate limit is lifted.
    cat >>"$dir/paygate.toml" <<EOF
x402_price_micros = 17000
x402_rate_limit = { requests = 10000000, per = "second", burst = 10000000 }

[x402]
facilitator_url = "$FACILITATOR_URL"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
EOF
  elif [[ -n "$jwt_alg" ]]; then
    jwt_issuer_toml "$jwt_alg" >>"$dir/paygate.toml"
  fi
  cp "$dir/paygate.toml" "$RESULTS_DIR/$name.toml"
  # Drop any PAYGATE_* from the caller's environment: they would override the config.
  local unset_env=() v
  for v in $(compgen -e | grep '^PAYGATE_' || true); do unset_env+=(-u "$v"); done
  env "${unset_env[@]}" PAYGATE_ADMIN_TOKEN="$ADMIN_TOKEN" BENCH_JWT_SECRET="$JWT_HMAC_SECRET" \
    PAYGATE_KEY_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
    PAYGATE_LOG="$PAYGATE_RUST_LOG" \
    "${PIN_PROXY[@]}" "$bin" serve --config "$dir/paygate.toml" >"$logf" 2>&1 &
  PIDS+=("$!")
  local pid=$!
  ADMIN_URL="http://127.0.0.1:$admin_port"
  wait_http "$pid" "$logf" "$ADMIN_URL/readyz"

  admin POST /admin/v1/plans '{"id":"bench","name":"Bench",
    "rate_limit":{"requests":10000000,"per":"second","burst":10000000},
    "overage":"block","routes":["*"],"max_websockets":0,"monthly_fee_micros":0}' >/dev/null
  admin POST /admin/v1/customers \
    '{"id":"bench","name":"Bench","email":"bench@example.com","plan_id":"bench"}' >/dev/null
  local key
  key="$(admin POST /admin/v1/customers/bench/keys '{}' | jq -r '.key // empty')"
  [[ "$key" == pg_live_* ]] || die "no API key in the admin answer"
  local header="X-API-Key: $key"
  if [[ "$jwt_alg" == x402 ]]; then
    # A paid call goes through; the load itself pays call by call (bench/x402.lua).
    wait_http "$pid" "$logf" "$url" "${ready[@]}" -H "X-PAYMENT: $(x402_payment)"
    [[ "$scheme" == https ]] && tls_session "$name" "$url"
    register "$name" "$url" "$pid" "" "$BENCH/x402.lua"
    return
  fi
  [[ -n "$jwt_alg" ]] && header="Authorization: Bearer $(make_jwt "$jwt_alg")"
  # the credential must be usable at the gateway (keys propagate within 1 s per SPEC)
  wait_http "$pid" "$logf" "$url" "${ready[@]}" -H "$header"
  [[ "$scheme" == https ]] && tls_session "$name" "$url"
  register "$name" "$url" "$pid" "$header"
}

# ----------------------------------------------------------------- measure ---
# run_wrk <target> <duration> <outfile>: prints
#   "cpu_ticks wall_ms redis_cmds redis_ticks redis_cmdstats"
# The redis_* fields are "-" for a target without Redis. The Redis counters are
# read right before and right after the wrk run, outside the proxy's window.
run_wrk() {
  local t="$1" d="$2" out="$3" pid="${T_PID[$t]}"
  local args=(-t "$THREADS" -c "$CONNECTIONS" -d "$d" --timeout 5s --latency)
  [[ -n "${T_HDR[$t]}" ]] && args+=(-H "${T_HDR[$t]}")
  [[ -n "${T_SCRIPT[$t]}" ]] && args+=(-s "${T_SCRIPT[$t]}")
  local c0 c1 w0 w1 redis="- - -"
  local r0="$TMP/redis-before" r1="$TMP/redis-after"
  kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) is no longer running"
  [[ -n "${T_REDIS[$t]:-}" ]] && redis_snap "${T_REDIS_URL[$t]}" "${T_REDIS_PID[$t]}" "$r0"
  c0="$(cpu_ticks "$pid")"; w0="$(date +%s%N)"
  timeout $(( $(dur_secs "$d") + 30 )) "${PIN_LOAD[@]}" wrk "${args[@]}" "${T_URL[$t]}" >"$out" 2>&1 \
    || die "wrk against $t failed (see $out)"
  c1="$(cpu_ticks "$pid")"; w1="$(date +%s%N)"
  if [[ -n "${T_REDIS[$t]:-}" ]]; then
    redis_snap "${T_REDIS_URL[$t]}" "${T_REDIS_PID[$t]}" "$r1"
    redis="$(redis_delta "$r0" "$r1")"
  fi
  echo "$(( c1 - c0 )) $(( (w1 - w0) / 1000000 )) $redis"
}

# parse a wrk --latency output: "rps requests p50_us p99_us non2xx sockerr"
parse_wrk() {
  awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000;
                     if (v ~ /m$/) return (v+0)*60e6; if (v ~ /s$/) return (v+0)*1e6; return v+0 }
    /requests in/            { req = $1 }
    /^Requests\/sec:/        { rps = $2 }
    /^ +50%/                 { p50 = us($2) }
    /^ +99%/                 { p99 = us($2) }
    /Non-2xx or 3xx/         { non2xx = $NF }
    /Socket errors:/         { gsub(",", ""); se = $4 + $6 + $8 + $10 }
    END { printf "%s %d %.1f %.1f %d %d\n", rps, req, p50, p99, non2xx, se }' "$1"
}

# ------------------------------------------------------------------- main ---
declare -A DEF
for line in "${TARGET_DEFS[@]}"; do
  read -r n rest <<<"$line"; DEF[$n]="$rest"
done
read -r -a SEL <<<"$TARGETS"
(( ${#SEL[@]} > 0 )) || die "TARGETS is empty"
for t in "${SEL[@]}"; do [[ -n "${DEF[$t]:-}" ]] || die "unknown target $t (known: ${!DEF[*]})"; done

declare -A NEED
for t in "${SEL[@]}"; do
  case "${DEF[$t]}" in
    start_bare*)    NEED[bare-proxy]=1 ;;
    start_paygate*) NEED[paygate]=1 ;;
  esac
done
PKGS=()
for p in "${!NEED[@]}"; do PKGS+=(-p "$p"); done
if (( ${#PKGS[@]} > 0 )) && [[ "$SKIP_BUILD" != 1 ]]; then
  log "cargo build --release ${PKGS[*]} (up to ${BUILD_TIMEOUT}s)"
  (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release "${PKGS[@]}") >"$RESULTS_DIR/build.log" 2>&1 \
    || { tail -n 30 "$RESULTS_DIR/build.log" >&2; die "build failed (log: $RESULTS_DIR/build.log)"; }
fi

log "results in $RESULTS_DIR; $PIN_DESC"
start_backend
for t in "${SEL[@]}"; do
  read -r -a cmd <<<"${DEF[$t]}"
  "${cmd[0]}" "$t" "${cmd[@]:1}"
  log "$t on ${T_URL[$t]} (pid ${T_PID[$t]})"
done

if (( WARMUP_S > 0 )); then
  for t in "${SEL[@]}"; do
    log "warm-up $t ($WARMUP)"
    run_wrk "$t" "$WARMUP" "$RESULTS_DIR/warmup-$t.txt" >/dev/null
  done
fi

RAW="$RESULTS_DIR/raw.tsv"
printf 'round\ttarget\trps\trequests\tp50_us\tp99_us\tnon2xx\tsocket_errors\tcpu_ticks\twall_ms\tredis_cmds\tredis_cpu_ticks\tredis_cmdstats\n' >"$RAW"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${SEL[@]}"; do
    out="$RESULTS_DIR/wrk-$t-r$r.txt"
    # not "read < <(run_wrk)": a die inside a process substitution would not stop the script
    res="$(run_wrk "$t" "$DURATION" "$out")"
    read -r ticks wall rcmds rticks rstats <<<"$res"
    read -r rps req p50 p99 non2xx se < <(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
      "$r" "$t" "$rps" "$req" "$p50" "$p99" "$non2xx" "$se" "$ticks" "$wall" \
      "$rcmds" "$rticks" "$rstats" >>"$RAW"
    rinfo=""
    if [[ "$rcmds" != - ]] && (( req > 0 )); then
      rinfo="$(awk -v c="$rcmds" -v k="$rticks" -v n="$req" -v tck="$CLK_TCK" 'BEGIN {
        printf "; Redis ran %.2f cmds/call (scripts included)", c / n
        if (k != "-") printf ", %.1f µs CPU/call", k * 1e6 / tck / n }')"
    fi
    log "round $r/$ROUNDS $t: $rps req/s, p50 ${p50}us, p99 ${p99}us, non-2xx $non2xx, socket errors $se$rinfo"
  done
done

for t in "${SEL[@]}"; do
  if [[ -n "${T_REDIS[$t]:-}" ]]; then
    log "Redis command sources of $t (MONITOR, 2 s, not measured)"
    redis_probe "$t"
  fi
done

SUMMARY="$RESULTS_DIR/summary.md"
{
  echo "## paygate bench — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "rev $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none); $NCPU CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)); $PIN_DESC"
  warm="a $WARMUP warm-up"; (( WARMUP_S > 0 )) || warm="no warm-up"
  echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS alternating rounds after $warm; proxies run $PROXY_THREADS workers; paygate store: $PAYGATE_STORE_MODE"
  echo
  for t in "${SEL[@]}"; do
    [[ -f "$RESULTS_DIR/redis-sources-$t.txt" ]] && sed "s/^/$t /" "$RESULTS_DIR/redis-sources-$t.txt"
  done >"$TMP/sources.txt"
  for t in "${!T_TLS[@]}"; do printf '%s\t%s\n' "$t" "${T_TLS[$t]}"; done >"$TMP/tls.txt"
  awk -F'\t' -v order="$TARGETS" -v tck="$CLK_TCK" -v ncpu="$PROXY_NCPU" -v srcfile="$TMP/sources.txt" -v scmds="$SCRIPT_CMDS" -v tlsfile="$TMP/tls.txt" '
    function median(s,   a, n, i, j, x) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
      return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    function ms(u) { return sprintf("%.2f ms", u / 1000) }
    BEGIN { while ((getline line < srcfile) > 0) { split(line, f, " "); scli[f[1], f[2]] = f[3]; slua[f[1], f[2]] = f[4] }
            while ((getline line < tlsfile) > 0) { split(line, f, "\t"); tlsinfo[f[1]] = f[2] } }
    NR == 1 { next }
    { rr[$1, $2] = $3; rounds[$1] = 1
      rps[$2] = rps[$2] " " $3; p50[$2] = p50[$2] " " $5; p99[$2] = p99[$2] " " $6
      req[$2] += $4; bad[$2] += $7; se[$2] += $8; ticks[$2] += $9; wall[$2] += $10
      # Redis columns: "-" = not known for this run; a target has a Redis figure
      # only when every one of its runs has one
      runs[$2]++
      if ($11 != "" && $11 != "-") { rruns[$2]++; rreq[$2] += $4; rexe[$2] += $11
        nk = split($13, kv, ",")
        for (j = 1; j <= nk; j++) if (split(kv[j], p, "=") == 2) {
          if (!(($2, p[1]) in cs)) names[$2] = names[$2] " " p[1]
          cs[$2, p[1]] += p[2] } }
      if ($12 != "" && $12 != "-") { kruns[$2]++; rtick[$2] += $12 } }
    END {
      n = split(order, T, " ")
      for (i = 1; i <= n; i++) m[T[i]] = median(rps[T[i]])
      # Ratios: the median over rounds of (this target / the reference in the
      # same round), so drift of the machine between rounds cancels out.
      for (i = 1; i <= n; i++) sel[T[i]] = 1
      for (i = 1; i <= n; i++) {
        # an HTTPS target (<x>-tls) is also set against bare-tls and against <x>
        plain = T[i]; istls = sub(/-tls$/, "", plain); if (istls) ntls++
        for (r in rounds) {
          if (rr[r, "bare"] > 0) qb[T[i]] = qb[T[i]] " " rr[r, T[i]] / rr[r, "bare"]
          if (rr[r, "nginx"] > 0) qn[T[i]] = qn[T[i]] " " rr[r, T[i]] / rr[r, "nginx"]
          if (istls && rr[r, "bare-tls"] > 0) qt[T[i]] = qt[T[i]] " " rr[r, T[i]] / rr[r, "bare-tls"]
          if (istls && (plain in sel) && rr[r, plain] > 0) qp[T[i]] = qp[T[i]] " " rr[r, T[i]] / rr[r, plain]
        }
      }
      print "| target | req/s (median) | p50 | p99 | CPU µs/call | vs bare pingora | vs nginx | proxy CPU use | errors |"
      print "|---|---:|---:|---:|---:|---:|---:|---:|---|"
      flagged = 0
      for (i = 1; i <= n; i++) {
        t = T[i]
        cpu = req[t] > 0 ? ticks[t] * 1e6 / tck / req[t] : 0
        cpus[t] = cpu
        util = wall[t] > 0 ? 100 * (ticks[t] * 1000 / tck) / wall[t] / ncpu : 0
        vb = (t in qb) ? sprintf("%.2f", median(qb[t])) : "n/a"
        vn = (t in qn) ? sprintf("%.2f", median(qn[t])) : "n/a"
        err = "none"
        if (bad[t] + se[t] > 0) { err = sprintf("**FLAG: %d non-2xx, %d socket errors**", bad[t], se[t]); flagged = 1 }
        printf "| %s | %.0f | %s | %s | %.1f | %s | %s | %.0f%% | %s |\n", t, m[t], ms(median(p50[t])), ms(median(p99[t])), cpu, vb, vn, util, err
      }
      if (flagged) print "\nA flagged target answered errors: its numbers do not measure proxying; see the wrk-*.txt files."

      if (ntls) {
        print ""
        print "| HTTPS target | vs bare-tls | vs the same proxy over HTTP | CPU µs/call added by HTTPS | TLS session (curl) |"
        print "|---|---:|---:|---:|---|"
        for (i = 1; i <= n; i++) {
          t = T[i]; plain = t
          if (!sub(/-tls$/, "", plain)) continue
          vt = (t in qt) ? sprintf("%.2f", median(qt[t])) : "n/a"
          vp = (t in qp) ? sprintf("%.2f", median(qp[t])) : "n/a"
          dc = (plain in sel) ? sprintf("%+.1f", cpus[t] - cpus[plain]) : "n/a"
          printf "| %s | %s | %s | %s | %s |\n", t, vt, vp, dc, (t in tlsinfo) ? tlsinfo[t] : "n/a"
        }
        print ""
        print "HTTPS: one self-signed EC P-256 certificate for all HTTPS targets, TLS 1.2 and 1.3 accepted, h2 and http/1.1 offered through ALPN (wrk speaks HTTP/1.1), session resumption at each server'"'"'s defaults. wrk keeps its connections alive, so each connection makes one handshake per run: these rows measure the per-request cost of TLS records, not handshakes. Ratios are medians of per-round ratios; CPU is the difference of the two rows'"'"' CPU µs/call."
      }

      split(scmds, S, " "); for (j in S) isscript[S[j]] = 1
      print ""
      print "| target | Redis cmds/call sent¹ | Redis round trips/call² | Redis cmds/call run³ | per command (per call)¹ | Redis CPU µs/call⁴ |"
      print "|---|---:|---:|---:|---|---:|"
      for (i = 1; i <= n; i++) {
        t = T[i]
        if (!(t in rruns) || rruns[t] < runs[t] || rreq[t] <= 0) {
          printf "| %s | n/a | n/a | n/a | n/a | n/a |\n", t; continue }
        # split each command count into sent / run inside scripts with the
        # MONITOR probe; a command it did not see ("0 0"): inside scripts if
        # the windows had script calls, else sent
        nn = split(names[t], N, " "); scripts = 0
        for (j = 1; j <= nn; j++) if (N[j] in isscript) scripts += cs[t, N[j]]
        split("", snt); split("", ins); inner = 0; calls = 0
        for (j = 1; j <= nn; j++) {
          c = cs[t, N[j]]; b = N[j]; sub(/\|.*/, "", b)
          k = scli[t, b] + slua[t, b]
          fl = k > 0 ? slua[t, b] / k : (scripts > 0 && !(N[j] in isscript) ? 1 : 0)
          ins[N[j]] = c * fl; snt[N[j]] = c - c * fl; inner += c * fl
          if (N[j] in isscript) calls += c - c * fl
        }
        sent = sprintf("%.2f", (rexe[t] - inner) / rreq[t]); run = sprintf("%.2f", rexe[t] / rreq[t])
        rt = sprintf("%.2f", calls / rreq[t])
        list = fmt("evalsha", snt["evalsha"] + 0, rreq[t]) ", " fmt("eval", snt["eval"] + 0, rreq[t])
        split("", done); done["evalsha"] = done["eval"] = 1
        list = list order_by(snt, done, rreq[t])
        split("", done); il = order_by(ins, done, rreq[t])
        if (il != "") list = list "; inside scripts: " substr(il, 3)
        cpu = (t in kruns && kruns[t] == runs[t]) ? sprintf("%.1f", rtick[t] * 1e6 / tck / rreq[t]) : "n/a"
        printf "| %s | %s | %s | %s | %s | %s |\n", t, sent, rt, run, list, cpu
      }
      print ""
      print "Redis counters are the difference of `INFO stats` (total_commands_processed) and `INFO commandstats` read right before and right after each measured wrk run (warm-up, readiness checks and seeding fall outside; the bench'"'"'s own INFO calls are left out), summed over the rounds and divided by the requests wrk completed."
      print "¹ Commands paygate sent, in all its tasks. Redis counts the commands a Lua script runs (`redis.call`) like commands a client sent; which is which comes from a 2 s MONITOR probe after the measured runs (`redis-sources-<target>.txt`). A command the probe did not see counts as run inside scripts when the windows held script calls, unless Redis does not allow it in scripts (`noscript`)."
      print "² Script calls (EVAL/EVALSHA/FCALL) sent per call. In this build a call waits for one script call (the admission decision) and for nothing else in Redis: usage events go out as XADDs pipelined in batches (one round trip per batch) by the background usage writer, and the billing consumer reads the stream on its own connection. Those commands count as sent but are no round trip of the call."
      print "³ Every command Redis executed, inside scripts included (total_commands_processed)."
      print "⁴ utime + stime of redis-server (`/proc/PID/stat`) over the same windows, divided by the same requests; not part of CPU µs/call above. n/a when the script did not start redis-server (`PAYGATE_REDIS_URL`)."
    }
    # ", name x.xx" for every name of cnt[] not in done[] with a count > 0, largest first
    function order_by(cnt, done, reqs,   out, best, bc, k) {
      out = ""
      while (1) {
        best = ""; bc = 0
        for (k in cnt) if (!(k in done) && cnt[k] > bc) { best = k; bc = cnt[k] }
        if (best == "") return out
        done[best] = 1; out = out ", " fmt(best, bc, reqs)
      }
    }
    function fmt(name, cnt, reqs,   v) {
      gsub(/\|/, "\\|", name)         # subcommands (script|load) inside a Markdown cell
      v = sprintf("%.2f", cnt / reqs)
      if (cnt > 0 && v == "0.00") return sprintf("%s %s (%.0f in total)", name, v, cnt)
      return name " " v
    }' "$RAW"
} >"$SUMMARY"

echo
cat "$SUMMARY"
echo
echo "raw outputs: $RESULTS_DIR"
grep -q 'FLAG:' "$SUMMARY" && exit 3
exit 0
