#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for the tests on this machine: Debian's postgresql (installed from apt when
# missing), `initdb` as the postgres user into a new temporary folder, listening on a free port on 127.0.0.1 only,
# with fsync off (test data) and TLS on (a certificate from a throwaway CA, `<dir>/ca.crt`). Prints the server's URL on stdout; `ensure-postgres.sh stop <url>` stops it and removes
# its folder. `pause <url>` stops the server and keeps its data, `resume <url>` starts it again on the same port (a
# database outage, for the tests). Nothing else on the machine is touched.
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

case "${1:-}" in
  stop | pause | resume)
    marker="/tmp/workspaced-pg-$(printf '%s' "${2:?url}" | sed 's/.*:\([0-9]*\)\/.*/\1/').dir"
    dir=$(cat "$marker" 2>/dev/null) || { [ "$1" = stop ] && exit 0; log "no cluster of ours at $2"; exit 1; }
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    case "$1" in
      stop)
        su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/data' -m immediate stop" >/dev/null 2>&1 || true
        rm -rf "$dir" "$marker" ;;
      # Fast, not immediate: every connection is cut all the same, but what was committed stays (with
      # synchronous_commit off, an immediate shutdown loses the last commits, which no real outage of a
      # durable server does).
      pause) su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/data' -m fast -w stop" >/dev/null ;;
      resume)
        su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/data' -o '$(cat "$dir/opts")' -l '$dir/server.log' -w -t 60 start" \
          >/dev/null || { cat "$dir/server.log" >&2; exit 1; } ;;
    esac
    exit 0 ;;
esac

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing postgresql from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
fi
if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl from apt (the test server's TLS certificate)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/workspaced-pg.XXXXXX)
chown postgres:postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
su postgres -s /bin/sh -c "$bin/initdb -D '$dir/data' -A trust -U postgres --no-sync" >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
# TLS with a certificate for 127.0.0.1 from a throwaway CA (`<dir>/ca.crt`, the root a client verifies it with), so
# the tests can connect the way a managed database (RDS) wants: sslmode=verify-full.
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=workspaced-test-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 7 \
  -extfile "$dir/server.ext" -out "$dir/server.crt" >/dev/null 2>&1
chown postgres:postgres "$dir/server.key" "$dir/server.crt"; chmod 600 "$dir/server.key" "$dir/ca.key"
opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=600 -c fsync=off -c synchronous_commit=off"
opts="$opts -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
echo "$opts" >"$dir/opts"
su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/data' -o '$opts' -l '$dir/server.log' -w -t 60 start" >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }
echo "$dir" >"/tmp/workspaced-pg-$port.dir"
log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
echo "postgres://postgres@127.0.0.1:$port/postgres"
