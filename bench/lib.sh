# bench/lib.sh — pieces the measuring scripts share (instructions.sh,
# profile.sh, scale.sh). Source it after setting TMP (a scratch directory)
# and PIDS (an array of processes to stop on exit).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL DEADLINE_S [LOG]: until URL answers at all; on timeout shows
# the end of LOG and exits.
wait_http() {
  local end=$((SECONDS + $2))
  until curl -s -o /dev/null -m 2 "$1"; do
    if (( SECONDS >= end )); then
      echo "$(basename "$0"): $1 did not answer" >&2
      [[ -n "${3:-}" ]] && tail -n 20 "$3" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# start_backend: a static nginx answering every request with 200
# {"ok":true}, no access log; sets BACKEND_PORT.
start_backend() {
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
}

# calls N URL KEY: N sequential calls on one keep-alive connection, each 200.
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

# access_log_off BIN: a [log] section that switches the access log off (no
# logging on the hot path in a benchmark), if BIN knows the section: builds
# from before it refuse it, and log nothing per call anyway.
access_log_off() {
  local probe
  probe="$(mktemp)"
  printf '[log]\naccess = false\n' >"$probe"
  if "$1" check-config --config "$probe" >/dev/null 2>&1; then
    printf '[log]\naccess = false\n'
  fi
  rm -f "$probe"
}

# paygate_config DATABASE_URL GATEWAY_PORT ADMIN_PORT [MORE_TOML]: one route
# `bench` on `/` to the backend, 2 gateway threads, no shutdown grace; the
# memory store unless MORE_TOML says otherwise (e.g. a [store] section). On
# stdout.
paygate_config() {
  cat <<EOF
[gateway]
listen = "127.0.0.1:$2"
threads = 2
shutdown_grace_seconds = 0
[admin]
listen = "127.0.0.1:$3"
[database]
url = "$1"
${4:-}
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$BACKEND_PORT"]
[[routes]]
id = "bench"
path_prefix = "/"
upstream = "backend"
EOF
}

# seed_bench ADMIN_URL TOKEN: the bench plan (rate limit out of the way), a
# customer on it and one API key, which it prints.
seed_bench() {
  local a=(-s -f -m 60 -H "Authorization: Bearer $2" -H "Content-Type: application/json")
  curl "${a[@]}" -X POST "$1/admin/v1/plans" \
    -d '{"id":"bench","name":"Bench","rate_limit":{"requests":10000000,"per":"second","burst":10000000},"routes":["*"]}' >/dev/null
  curl "${a[@]}" -X POST "$1/admin/v1/customers" \
    -d '{"id":"bench","name":"Bench","email":"bench@example.com","plan_id":"bench"}' >/dev/null
  curl "${a[@]}" -X POST "$1/admin/v1/customers/bench/keys" | jq -r .key
}
