#!/usr/bin/env bash
# Runs schemathesis (from PyPI, pinned) out of a virtualenv under the cache directory, installing it there on first
# use; later runs skip the install. Arguments go to schemathesis: `scripts/schemathesis.sh run <url> ...`.
# tests/openapi_fuzz.rs runs it against the real binary; see docs/api.md ("The OpenAPI document").
set -euo pipefail

VERSION=4.32.5
CACHE="${WORKSPACED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workspaced}"
VENV="$CACHE/schemathesis-$VERSION"

mkdir -p "$CACHE"
(
    # One installer at a time; a half-made virtualenv (no marker) is made again.
    flock 9
    if [ ! -f "$VENV/.installed" ]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's own python3 keeps venv in a separate package.
            rm -rf "$VENV"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
            python3 -m venv "$VENV"
        fi
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
        touch "$VENV/.installed"
    fi
) 9>"$CACHE/schemathesis.lock"

exec "$VENV/bin/schemathesis" "$@"
