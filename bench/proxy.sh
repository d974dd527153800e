#!/usr/bin/env bash
# Proxy overhead, same run, same upstream (real code-server's /healthz), reached directly on its 127.0.0.1 port and
# through workspaced's /w/<id>/ proxy with a session cookie:
#   - latency with 1 connection (wrk -c1, p50/p99), the added cost of one hop;
#   - throughput with 20 connections (wrk -c20);
#   - WebSocket round trip: code-server's auth -> sign exchange, 200 connections one after another;
#   - the service's RSS with N running workspaces, each with its IDE page loaded and a WebSocket open through it.
# Usage: bench/proxy.sh [seconds=15] [workspaces=20]
# Needs: wrk and python3-websockets (apt), the code-server image, target/release/workspaced.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
n=${2:-20}
source bench/serve.sh
bench_serve px WORKSPACED_START_TIMEOUT=300s

# One session per workspace: the LMS asks for a launch link, the "browser" opens it.
session() { # id -> cookie
  local url
  url=$(curl -fs -H "$auth" -X POST "$svc/api/workspaces/$1/launch" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
  curl -fs -o /dev/null -D - "$url" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2}'
}
curl -fs -H "$auth" -X POST "$svc/api/workspaces/px-1/start" >/dev/null
cookie=$(session px-1)
direct=$(curl -fs -H "$auth" "$svc/api/workspaces/px-1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_port"])')
echo "upstream: code-server /healthz on 127.0.0.1:$direct; proxy: $svc/w/px-1/healthz"
run_wrk() { # label conns url [header]
  local out
  if [ -n "${4:-}" ]; then out=$(wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${secs}s" --latency -H "$4" "$3"); else
    out=$(wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${secs}s" --latency "$3"); fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  printf '%-8s c=%-3s %10s req/s   p50 %-9s p99 %s\n' "$1" "$2" "$rps" "$p50" "$p99"
}
curl -fs -o /dev/null -H "Cookie: $cookie" "$svc/w/px-1/healthz"
run_wrk direct 1 "http://127.0.0.1:$direct/healthz"
run_wrk proxy 1 "$svc/w/px-1/healthz" "Cookie: $cookie"
run_wrk direct 20 "http://127.0.0.1:$direct/healthz"
run_wrk proxy 20 "$svc/w/px-1/healthz" "Cookie: $cookie"

cat > "$tmp/ws.py" <<'PY'
import asyncio, os, statistics, struct, sys, time, uuid
import websockets

def connect(url, headers):
    # websockets >= 14 names it additional_headers; Debian 12's 10.4 extra_headers.
    try:
        return websockets.connect(url, additional_headers=headers, max_size=None, close_timeout=0.01)
    except TypeError:
        return websockets.connect(url, extra_headers=headers, max_size=None, close_timeout=0.01)

AUTH = b'{"type":"auth","auth":"00000000000000000000","data":""}'
FRAME = struct.pack(">BIII", 2, 0, 0, len(AUTH)) + AUTH

async def rtt(url, headers):
    # code-server does not answer a close frame: close_timeout keeps each goodbye short.
    async with connect(url, headers) as ws:
        t = time.perf_counter()
        await ws.send(FRAME)
        buf = b""
        while True:
            m = await asyncio.wait_for(ws.recv(), 10)
            # A byte stream: messages (13-byte header + body) do not follow WebSocket frame boundaries.
            buf += m if isinstance(m, bytes) else m.encode()
            while len(buf) >= 13:
                kind, _, _, size = struct.unpack(">BIII", buf[:13])
                if len(buf) < 13 + size:
                    break
                if kind == 2:
                    return (time.perf_counter() - t) * 1000
                buf = buf[13 + size:]

async def series(label, url, headers, n=200):
    xs = [await rtt(url + f"?reconnectionToken={uuid.uuid4()}&reconnection=false&skipWebSocketFrames=false", headers)
          for _ in range(n)]
    sys.stdout.flush()
    xs.sort()
    print(f"{label:8} websocket auth->sign round trip, {n} connections: p50 {statistics.median(xs):.2f} ms, "
          f"p99 {xs[int(len(xs) * .99) - 1]:.2f} ms", flush=True)

async def main():
    svc, direct, cookie = sys.argv[1], sys.argv[2], sys.argv[3]
    origin = svc.replace("ws://", "http://")
    await series("direct", f"ws://127.0.0.1:{direct}/", {"Origin": f"http://127.0.0.1:{direct}"})
    await series("proxy", f"{svc}/w/px-1/", {"Origin": origin, "Cookie": cookie})

asyncio.run(main())
PY
python3 "$tmp/ws.py" "ws://127.0.0.1:$port" "$direct" "$cookie"

# RSS with n running workspaces, each with its page loaded and a WebSocket open through the proxy.
rss() { awk '/VmRSS/{print $2}' "/proc/$server/status"; }
echo "service RSS with 1 workspace after the runs above: $(rss) KiB"
for i in $(seq 2 "$n"); do curl -fs -H "$auth" -X POST "$svc/api/workspaces/px-$i/start?wait=false" >/dev/null; done
for i in $(seq 2 "$n"); do
  until curl -fs -H "$auth" "$svc/api/workspaces/px-$i" | grep -q '"status":"running"'; do sleep 0.5; done
done
cat > "$tmp/hold.py" <<'PY'
import asyncio, sys, urllib.request, uuid
import websockets

async def main():
    svc, n = sys.argv[1], int(sys.argv[2])
    cookies = sys.argv[3:]
    conns = []
    for i, cookie in enumerate(cookies, start=1):
        req = urllib.request.Request(f"http://{svc}/w/px-{i}/?folder=/home/coder/project", headers={"Cookie": cookie, "Accept": "text/html"})
        page = urllib.request.urlopen(req).read()
        assert b"workbench" in page
        url = f"ws://{svc}/w/px-{i}/?reconnectionToken={uuid.uuid4()}&reconnection=false&skipWebSocketFrames=false"
        headers = {"Origin": f"http://{svc}", "Cookie": cookie}
        try:
            conns.append(await websockets.connect(url, additional_headers=headers))
        except TypeError:
            conns.append(await websockets.connect(url, extra_headers=headers))
    print(f"{len(conns)} IDE pages loaded and {len(conns)} websockets open", flush=True)
    sys.stdout.flush()
    await asyncio.sleep(3)
    for c in conns:
        c.transport.abort()

asyncio.run(main())
PY
cookies=("$cookie")
for i in $(seq 2 "$n"); do cookies+=("$(session "px-$i")"); done
python3 "$tmp/hold.py" "127.0.0.1:$port" "$n" "${cookies[@]}" &
holder=$!
sleep 2.5
echo "service RSS with $n running workspaces, pages loaded, websockets open: $(rss) KiB"
wait "$holder"
