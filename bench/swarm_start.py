#!/usr/bin/env python3
"""Start latency on Docker Swarm: workspaced's start API with `runtime = swarm`, next to a plain
`docker service create` of the same image with the same limits, reservations (memory whole, a quarter of the CPU
as `swarm_cpu_reservation`'s default), mount and host-mode port until the first 200 on /healthz; and, in the same
run, the same pair on plain Docker (`docker run`, `runtime = docker`).

Usage: bench/swarm_start.py [--runs 5] [--image workspaced/code-server:4.139.1] [--bin target/release/workspaced]
Needs an active swarm (`docker swarm init --advertise-addr 127.0.0.1`). Runs private workspaced processes (own base
path, database, instance label, port) and removes every service and container it created. Only loopback addresses
and the engine's Unix socket are contacted.
"""
import argparse, http.client as httpclient, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from start_latency import HEADERS, docker_run_floor, free_port, http, make_key, remove_labelled, wait_200  # noqa: E402


class EngineConnection(httpclient.HTTPConnection):
    """HTTP over the engine's Unix socket, so polling costs no CLI process."""

    def __init__(self):
        super().__init__("localhost", timeout=10)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("/var/run/docker.sock")


def engine(path):
    c = EngineConnection()
    c.request("GET", "/v1.41" + path)
    r = c.getresponse()
    body = json.loads(r.read() or b"null")
    c.close()
    return body


def task_port(service, deadline):
    """The published port of the service's running task, polled every 10 ms."""
    q = urllib.parse.quote(json.dumps({"service": [service]}))
    while time.monotonic() < deadline:
        for t in engine(f"/tasks?filters={q}") or []:
            st = t.get("Status", {})
            ports = (st.get("PortStatus") or {}).get("Ports") or []
            if st.get("State") == "running" and ports:
                return ports[0]["PublishedPort"]
        time.sleep(0.01)
    return None


def service_floor(image, runs, tmp):
    times = []
    d = os.path.join(tmp, "floor-swarm")
    os.makedirs(d, exist_ok=True)
    os.chown(d, 1000, 1000)
    for i in range(runs):
        name = f"wsbench-svc-{os.getpid()}-{i}"
        t0 = time.monotonic()
        subprocess.run(["docker", "service", "create", "-d", "-q", "--name", name,
                        "--publish", "mode=host,target=8080", "--restart-condition", "none",
                        "--limit-cpu", "1", "--limit-memory", "1g", "--limit-pids", "1024",
                        "--reserve-cpu", "0.25", "--reserve-memory", "1g",
                        "--mount", f"type=bind,src={d},dst=/home/coder/project", "-u", "1000:1000", image],
                       check=True, capture_output=True)
        port = task_port(name, time.monotonic() + 60)
        ok = port is not None and wait_200(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60)
        times.append(time.monotonic() - t0)
        subprocess.run(["docker", "service", "rm", name], capture_output=True)
        if not ok:
            sys.exit("docker service create floor: never ready")
        # Let the removed task's container go before the next round, as workspaced's stop waits for it.
        while subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}"],
                             capture_output=True, text=True).stdout.strip():
            time.sleep(0.1)
    return times


def workspaced_starts(binary, image, runs, tmp, runtime):
    port = free_port()
    instance = f"bench{runtime}{os.getpid()}"
    base = os.path.join(tmp, f"base-{runtime}")
    os.makedirs(base, exist_ok=True)
    env = dict(os.environ, WORKSPACE_BASE_PATH=base, DATABASE_URL=f"sqlite://{tmp}/bench-{runtime}.db",
               WORKSPACED_LISTEN=f"127.0.0.1:{port}", WORKSPACED_IMAGE=image, WORKSPACED_INSTANCE=instance,
               WORKSPACED_STOP_GRACE="1s", WORKSPACED_RUNTIME=runtime, RUST_LOG="warn")
    HEADERS.clear()
    make_key(binary, env)
    server = subprocess.Popen([binary, "serve"], env=env, stderr=open(os.path.join(tmp, f"serve-{runtime}.log"), "w"))
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
        ids = subprocess.run(["docker", "service", "ls", "-q", "--filter", f"label=workspaced.instance={instance}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "service", "rm", *ids], capture_output=True)
        remove_labelled(f"workspaced.instance={instance}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", default="workspaced/code-server:4.139.1")
    ap.add_argument("--bin", default="target/release/workspaced")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wsbench-swarm-")
    try:
        rows = [
            ("docker run -> first 200 on /healthz", docker_run_floor(a.image, a.runs, tmp)),
            ("workspaced start API (docker) -> ready", workspaced_starts(a.bin, a.image, a.runs, tmp, "docker")),
            ("docker service create -> first 200", service_floor(a.image, a.runs, tmp)),
            ("workspaced start API (swarm) -> ready", workspaced_starts(a.bin, a.image, a.runs, tmp, "swarm")),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"image {a.image}, {a.runs} sequential starts each, median (min-max)")
    for label, t in rows:
        print(f"{label:42s}: {statistics.median(t)*1000:7.0f} ms ({min(t)*1000:.0f}-{max(t)*1000:.0f})")


if __name__ == "__main__":
    main()
