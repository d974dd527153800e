#!/usr/bin/env bash
# Makes (once) a virtualenv under the cache directory with the given pinned packages and prints its path:
# `venv=$(scripts/pyvenv.sh NAME 'pkg==1.2' ...)`. The folder's name carries a hash of the pins, so changing a pin
# makes a new one. One installer at a time (flock); a half-made virtualenv (no marker) is made again. python3-venv
# comes from apt when Debian's python3 lacks it. Used by schemathesis.sh and lti-platform.sh.
set -euo pipefail

NAME="$1"
shift
TAG="$(printf '%s\n' "$@" | sha256sum | cut -c1-8)"
CACHE="${WORKSPACED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workspaced}"
VENV="$CACHE/$NAME-$TAG"

mkdir -p "$CACHE"
(
    flock 9
    if [ ! -f "$VENV/.installed" ]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
            python3 -m venv "$VENV"
        fi
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
        touch "$VENV/.installed"
    fi
) 9>"$CACHE/$NAME.lock"
echo "$VENV"
