#!/usr/bin/env bash
# Heartbeat throughput and latency: wrk, 20 connections for 20 s (2 threads), POST /api/workspaces/heartbeat on
# loopback against a release build, store included (activity is batched to the store once a second).
# Usage: [DATABASE_URL=postgres://user@host:port/db] bench/heartbeat.sh [students=20] [seconds=20]
#   SQLite (a new file) by default; with DATABASE_URL naming a PostgreSQL server, a new database on it (see serve.sh).
# Needs: wrk (apt-get install wrk), the tiny image (scripts/build-image.sh tiny), target/release/workspaced, and psql
# for PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
students=${1:-20}
secs=${2:-20}
source bench/serve.sh
bench_serve hb WORKSPACED_IMAGE=workspaced/tiny:1
for i in $(seq 1 "$students"); do
  curl -fs -H "$auth" -X POST "http://127.0.0.1:$port/api/workspaces/hb-$i/start?wait=false" >/dev/null
done
for i in $(seq 1 "$students"); do
  until curl -fs -H "$auth" "http://127.0.0.1:$port/api/workspaces/hb-$i" | grep -q '"status":"running"'; do sleep 0.2; done
done
cat > "$tmp/hb.lua" <<LUA
local n = $students
local i = 0
request = function()
  i = i % n + 1
  return wrat.format("POST", "/api/workspaces/heartbeat", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $key"},
    '{"student_id":"hb-' .. i .. '"}')
end
response = function(status) if status ~= 200 then error("status " .. status) end end
LUA
sed -i 's/wrat/wrk/' "$tmp/hb.lua"
echo "heartbeat: $students running workspaces on $store, wrk -t2 -c20 -d${secs}s --latency"
rss_before=$(awk '/VmRSS/{print $2}' /proc/$server/status)
wrk -t2 -c20 -d"${secs}s" --latency -s "$tmp/hb.lua" "http://127.0.0.1:$port"
rss_after=$(awk '/VmRSS/{print $2}' /proc/$server/status)
echo "service RSS: ${rss_before} KiB before, ${rss_after} KiB after"
curl -fs -H "$auth" "http://127.0.0.1:$port/metrics" | grep -E '^workspaced_heartbeats_total' || true
