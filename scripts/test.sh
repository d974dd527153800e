#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root: starts the Docker engine if needed, builds the images
# (skipped when up to date), installs Chromium and chromedriver from apt if missing, then runs every test against
# the real engine, the real code-server image and a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/ensure-browser.sh
bash scripts/build-image.sh all

# Tests mostly wait on the engine, so more threads than cores keeps the suite short.
cargo test --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-6}"
