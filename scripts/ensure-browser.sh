#!/usr/bin/env bash
# Installs Debian's Chromium and chromedriver for the browser tests when they are missing (never a downloaded
# browser). Idempotent; needs root on a fresh machine.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-browser: installing chromium and chromium-driver from apt" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
chromedriver --version >&2
