#!/usr/bin/env python3
"""Start latency: workspaced API call to ready, next to plain `docker run` to the first 200 on the readiness path.

Usage: bench/start_latency.py [--runs 10] [--image workspaced/code-server:4.139.1] [--bin target/release/workspaced]
Runs a private workspaced (own base path, database, instance label, port) and removes everything it created.
Only loopback addresses are contacted.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The service's API needs a key: `make_key` creates an admin key in the bench's database before it serves.
HEADERS = {}


def make_key(binary, env):
    key = subprocess.run([binary, "key", "create", "--role", "admin", "--label", "bench"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    HEADERS["Authorization"] = f"Bearer {key}"


def http(method, url, timeout=120):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None, headers=HEADERS)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def remove_labelled(label):
    """Removes every container carrying `label` (`key=value` or a bare key)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def wait_200(url, deadline):
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.01)
    return False


def docker_run_floor(image, runs, tmp):
    times = []
    d = os.path.join(tmp, "floor")
    os.makedirs(d, exist_ok=True)
    os.chown(d, 1000, 1000)
    for i in range(runs):
        name = f"wsbench-floor-{os.getpid()}-{i}"
        t0 = time.monotonic()
        subprocess.run(["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8080", "-v", f"{d}:/home/coder/project",
                        "--cpus", "1", "--memory", "1g", "--memory-swap", "1g", "--pids-limit", "1024",
                        "--security-opt", "no-new-privileges", "-u", "1000:1000", image],
                       check=True, capture_output=True)
        port = subprocess.run(["docker", "port", name, "8080/tcp"], check=True, capture_output=True, text=True).stdout.split(":")[-1].strip()
        ok = wait_200(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60)
        times.append(time.monotonic() - t0)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        if not ok:
            sys.exit("docker run floor: never ready")
    return times


def workspaced_starts(binary, image, runs, tmp):
    port = free_port()
    instance = f"bench{os.getpid()}"
    base = os.path.join(tmp, "base")
    os.makedirs(base, exist_ok=True)
    env = dict(os.environ, WORKSPACE_BASE_PATH=base, DATABASE_URL=f"sqlite://{tmp}/bench.db",
               WORKSPACED_LISTEN=f"127.0.0.1:{port}", WORKSPACED_IMAGE=image, WORKSPACED_INSTANCE=instance,
               WORKSPACED_STOP_GRACE="1s", RUST_LOG="warn")
    make_key(binary, env)
    server = subprocess.Popen([binary, "serve"], env=env, stderr=open(os.path.join(tmp, "serve.log"), "w"))
    try:
        wait_200(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)
        times = []
        for i in range(runs):
            t0 = time.monotonic()
            status, body = http("POST", f"http://127.0.0.1:{port}/api/workspaces/bench-{i}/start")
            times.append(time.monotonic() - t0)
            assert status == 200 and body["status"] == "running", body
            http("POST", f"http://127.0.0.1:{port}/api/workspaces/bench-{i}/stop")
        return times
    finally:
        server.terminate()
        server.wait(10)
        remove_labelled(f"workspaced.instance={instance}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--image", default="workspaced/code-server:4.139.1")
    ap.add_argument("--bin", default="target/release/workspaced")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wsbench-")
    try:
        floor = docker_run_floor(a.image, a.runs, tmp)
        ours = workspaced_starts(a.bin, a.image, a.runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    f50, f95, w50, w95 = pct(floor, 50), pct(floor, 95), pct(ours, 50), pct(ours, 95)
    print(f"image {a.image}, {a.runs} sequential starts each")
    print(f"docker run -> first 200 on /healthz : p50 {f50*1000:7.0f} ms   p95 {f95*1000:7.0f} ms")
    print(f"workspaced start API -> ready        : p50 {w50*1000:7.0f} ms   p95 {w95*1000:7.0f} ms")
    print(f"overhead                             : p50 {100*(w50/f50-1):+6.1f} %   p95 {100*(w95/f95-1):+6.1f} %")


if __name__ == "__main__":
    main()
