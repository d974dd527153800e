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
exec ./target/release/workspaced serve
