# Sourced by the shell benches: starts target/release/workspaced on a free loopback port with a private base path,
# database and instance label, makes an admin key, and removes everything (service, containers, files, database) on
# exit. The database is a new SQLite file, or, when DATABASE_URL names a PostgreSQL server
# (DATABASE_URL=postgres://user@host:port/db bench/heartbeat.sh), a new database on that server (made and dropped
# with psql).
#   bench_serve <name> [VAR=value ...]   extra settings for the service
# Sets: tmp, port, svc (base URL), instance, key, auth (an Authorization header line), server (pid), store.
bench_serve() {
  local name=$1
  shift
  tmp=$(mktemp -d "/tmp/wsbench-$name.XXXXXX")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  svc="http://127.0.0.1:$port"
  instance="bench$name$$"
  mkdir -p "$tmp/base"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  if [[ "${DATABASE_URL:-}" == postgres://* || "${DATABASE_URL:-}" == postgresql://* ]]; then
    bench_pg_server=$DATABASE_URL
    bench_pg_db="wsbench_${name}_$$"
    psql -qX "$bench_pg_server" -c "CREATE DATABASE $bench_pg_db" >/dev/null
    export DATABASE_URL="${bench_pg_server%/*}/$bench_pg_db"
    store=postgres
  else
    export DATABASE_URL="sqlite://$tmp/bench.db"
    store=sqlite
  fi
  key=$(target/release/workspaced key create --role admin --label bench)
  auth="Authorization: Bearer $key"
  env WORKSPACE_BASE_PATH="$tmp/base" WORKSPACED_LISTEN="127.0.0.1:$port" WORKSPACED_INSTANCE="$instance" \
    RUST_LOG=warn "$@" target/release/workspaced serve 2>"$tmp/serve.log" &
  server=$!
  for _ in $(seq 1 100); do curl -fs "$svc/healthz" >/dev/null && return; sleep 0.1; done
  echo "workspaced did not come up; see $tmp/serve.log" >&2
  exit 1
}

bench_cleanup() {
  kill "${server:-}" 2>/dev/null || true
  wait "${server:-}" 2>/dev/null || true
  local ids
  ids=$(docker ps -aq --filter "label=workspaced.instance=$instance")
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  if [ -n "${bench_pg_db:-}" ]; then
    psql -qX "$bench_pg_server" -c "DROP DATABASE IF EXISTS $bench_pg_db WITH (FORCE)" >/dev/null || true
  fi
  rm -rf "$tmp"
}
