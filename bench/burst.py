#!/usr/bin/env python3
"""Class-start burst: N start requests at once through workspaced (admission control on) until all are ready, next to
N plain `docker run` commands at once (same image, limits and loopback port) until each answers 200 on /healthz.

Usage: bench/burst.py [--sizes 20,50] [--image workspaced/tiny:1] [--bin target/release/workspaced] [--concurrency 4]
Prints, per size: wall time until all ready, p50/p95 per student, failures. Only loopback addresses are contacted.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from start_latency import free_port, http, make_key, pct, remove_labelled, wait_200  # noqa: E402


def docker_burst(image, n, tmp):
    d = os.path.join(tmp, "floor")
    os.makedirs(d, exist_ok=True)
    os.chown(d, 1000, 1000)
    tag = f"wsburst-{os.getpid()}-{n}"

    def one(i):
        name = f"{tag}-{i}"
        t0 = time.monotonic()
        r = subprocess.run(["docker", "run", "-d", "--name", name, "--label", tag, "-p", "127.0.0.1::8080",
                            "-v", f"{d}:/home/coder/project", "--cpus", "1", "--memory", "1g", "--memory-swap", "1g",
                            "--pids-limit", "1024", "--security-opt", "no-new-privileges", "-u", "1000:1000", image],
                           capture_output=True)
        if r.returncode != 0:
            return None
        port = subprocess.run(["docker", "port", name, "8080/tcp"], capture_output=True, text=True).stdout.split(":")[-1].strip()
        ok = wait_200(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 300)
        return time.monotonic() - t0 if ok else None

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as ex:
        times = list(ex.map(one, range(n)))
    wall = time.monotonic() - t0
    remove_labelled(tag)
    return wall, times


def workspaced_burst(binary, image, n, tmp, concurrency):
    port = free_port()
    instance = f"burst{os.getpid()}n{n}"
    base = os.path.join(tmp, f"base{n}")
    os.makedirs(base, exist_ok=True)
    env = dict(os.environ, WORKSPACE_BASE_PATH=base, DATABASE_URL=f"sqlite://{tmp}/burst{n}.db",
               WORKSPACED_LISTEN=f"127.0.0.1:{port}", WORKSPACED_IMAGE=image, WORKSPACED_INSTANCE=instance,
               WORKSPACED_STOP_GRACE="1s", WORKSPACED_START_TIMEOUT="300s",
               WORKSPACED_MAX_CONCURRENT_STARTS=str(concurrency), RUST_LOG="warn")
    make_key(binary, env)
    server = subprocess.Popen([binary, "serve"], env=env, stderr=open(os.path.join(tmp, f"serve{n}.log"), "w"))
    try:
        wait_200(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)

        def one(i):
            t0 = time.monotonic()
            try:
                status, body = http("POST", f"http://127.0.0.1:{port}/api/workspaces/burst-{i}/start", timeout=600)
            except Exception:
                return None
            return time.monotonic() - t0 if status == 200 and body["status"] == "running" else None

        t0 = time.monotonic()
        with ThreadPoolExecutor(n) as ex:
            times = list(ex.map(one, range(n)))
        return time.monotonic() - t0, times
    finally:
        server.terminate()
        server.wait(20)
        remove_labelled(f"workspaced.instance={instance}")


def line(label, wall, times):
    ok = [t for t in times if t is not None]
    fails = len(times) - len(ok)
    p50 = pct(ok, 50) if ok else float("nan")
    p95 = pct(ok, 95) if ok else float("nan")
    print(f"  {label:<34} all ready {wall:7.2f} s   p50 {p50:6.2f} s   p95 {p95:6.2f} s   failures {fails}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,50")
    ap.add_argument("--image", default="workspaced/tiny:1")
    ap.add_argument("--bin", default="target/release/workspaced")
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wsburst-")
    try:
        for n in [int(s) for s in a.sizes.split(",")]:
            fw, ft = docker_burst(a.image, n, tmp)
            ww, wt = workspaced_burst(a.bin, a.image, n, tmp, a.concurrency)
            print(f"burst of {n} starts, image {a.image}, workspaced max_concurrent_starts={a.concurrency}")
            line(f"{n} x docker run (all at once)", fw, ft)
            line(f"{n} x workspaced start", ww, wt)
            print(f"  ratio (all ready)                  {ww / fw:5.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
