#!/usr/bin/env bash
# Quick start on a fresh Debian machine as root: Docker engine, code-server image, then `workspaced serve`.
# Settings come from the environment and ./workspaced.toml (see docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
cargo build --release --locked
./target/release/workspaced image build --tag "${WORKSPACED_IMAGE:-workspaced/code-server:4.139.1}"
# The development default base path is created here; in production (EFS) a missing base path means a missing
# mount, so `serve` refuses to start workspaces rather than writing to the root disk.
if [ -z "${WORKSPACE_BASE_PATH:-}" ]; then mkdir -p ./workspace-data; fi
# First run: an admin API key, kept in ./workspaced-admin.key (owner-only) for the CLI, curl and the dashboard.
if [ ! -s ./workspaced-admin.key ]; then
  (umask 077; ./target/release/workspaced key create --role admin --label quick-start > ./workspaced-admin.key)
  echo "run.sh: admin API key saved in ./workspaced-admin.key; use it with" >&2
  echo "        export WORKSPACED_API_KEY=\$(cat workspaced-admin.key)   # CLI and curl; paste it into /admin" >&2
fi
exec ./target/release/workspaced serve
