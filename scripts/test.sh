#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root: starts the Docker engine if needed, builds the images
# (skipped when up to date), installs Chromium and chromedriver from apt if missing, schemathesis from PyPI into a
# cache, python3-fusepy and PostgreSQL from apt (a private cluster on a free loopback port, stopped at the end), then runs every
# test against the real engine, the real code-server image, a real browser and both stores.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/ensure-browser.sh
bash scripts/build-image.sh all
# schemathesis (PyPI, pinned) into its cache before the tests, so no test waits on a download.
bash scripts/schemathesis.sh --version >/dev/null
# The test LTI 1.3 platform (lti1p3platform from PyPI, pinned) into its cache too (tests/ui/lti.rs).
bash scripts/lti-platform.sh --help >/dev/null
# A FUSE file system that stalls on demand stands in for a hung NFS/EFS mount (tests/storage_stall.rs).
if ! /usr/bin/python3 -c 'import fusepy' 2>/dev/null; then
  echo "test.sh: installing python3-fusepy from apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-fusepy >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-fusepy >/dev/null; }
fi

# A single-node swarm on loopback for the Swarm runtime's tests (tests/runtime_swarm.rs, tests/swarm_smoke.rs);
# made here when none is active, and then left at exit.
made_swarm=""
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != "active" ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  made_swarm=1
fi
leave_swarm() { if [ -n "$made_swarm" ]; then docker swarm leave --force >/dev/null || true; fi; }
trap leave_swarm EXIT

# A private PostgreSQL server: the Docker-backed API suite and the store's contract tests run on it.
pg_url=$(bash scripts/ensure-postgres.sh)
trap 'bash scripts/ensure-postgres.sh stop "$pg_url"; leave_swarm' EXIT
export WORKSPACED_TEST_POSTGRES="$pg_url"

# Tests mostly wait on the engine, so more threads than cores keeps the suite short.
status=0
cargo test --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-6}" || status=$?
# The store's contract tests once more, on the embedded SQLite.
env -u WORKSPACED_TEST_POSTGRES cargo test --locked --lib store:: || status=$?
exit "$status"
