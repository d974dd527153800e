#!/usr/bin/env bash
# GET /api/admin/stats answered from the background sample, against how long one sample of the engine takes (what
# every request waited for before the cache: the same engine calls, 8 at a time).
# Usage: [DATABASE_URL=postgres://user@host:port/db] bench/stats.sh [students=20] [requests=50]
# Needs: the tiny image (scripts/build-image.sh tiny), target/release/workspaced, python3 (and psql for PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
students=${1:-20}
requests=${2:-50}
source bench/serve.sh
bench_serve st WORKSPACED_IMAGE=workspaced/tiny:1
for i in $(seq 1 "$students"); do
  curl -fs -H "$auth" -X POST "$svc/api/workspaces/st-$i/start?wait=false" >/dev/null
done
for i in $(seq 1 "$students"); do
  until curl -fs -H "$auth" "$svc/api/workspaces/st-$i" | grep -q '"status":"running"'; do sleep 0.2; done
done
echo "stats: $students running workspaces on $store"
python3 - "$svc" "$key" "$students" "$requests" <<'PY'
import json, statistics, sys, time, urllib.request
svc, key, n, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def get():
    req = urllib.request.Request(svc + "/api/admin/stats", headers={"Authorization": "Bearer " + key})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        body = json.load(r)
    return (time.perf_counter() - t) * 1000, body
first_ms, body = get()
assert body["sampled_at"] is None, body
t = time.perf_counter()
while body["sampled_at"] is None:
    time.sleep(0.05)
    _, body = get()
sample_ms = (time.perf_counter() - t) * 1000
times = sorted(get()[0] for _ in range(requests))
last = get()[1]
print(f"first answer (no sample yet, sampler woken): {first_ms:.2f} ms")
print(f"one sample of {len(body['stats'])} of {n} workspaces (the former per-request wait): {sample_ms:.0f} ms")
print(f"{requests} answers from the cache: p50 {statistics.median(times):.2f} ms, max {times[-1]:.2f} ms;"
      f" age_seconds at the end {last['age_seconds']}")
PY
