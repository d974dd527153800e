#!/usr/bin/env bash
# Installs axe-core (from npm, pinned) under the cache directory on first use and prints the path of its
# `axe.min.js`; later runs only print it. tests/ui loads it into Chromium to check pages against WCAG 2.1 AA
# (docs/ide-state.md, "Accessibility"). axe-core is MPL-2.0 and is never committed here.
set -euo pipefail

VERSION=4.14.1
CACHE="${WORKSPACED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workspaced}"
DIR="$CACHE/axe-core-$VERSION"

mkdir -p "$CACHE"
(
    # One installer at a time; a half-made install (no marker) is made again.
    flock 9
    if [ ! -f "$DIR/.installed" ]; then
        rm -rf "$DIR"
        mkdir -p "$DIR"
        if ! command -v npm >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null 2>&1 \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
        fi
        npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$DIR" "axe-core@$VERSION" >&2
        touch "$DIR/.installed"
    fi
) 9>"$CACHE/axe-core.lock"

echo "$DIR/node_modules/axe-core/axe.min.js"
