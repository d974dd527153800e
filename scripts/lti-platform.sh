#!/usr/bin/env bash
# Runs the test LTI 1.3 platform (tests/lti/platform.py, built on lti1p3platform from PyPI, pinned) out of a
# virtualenv under the cache directory, installing it there on first use; later runs skip the install. Arguments go
# to the harness: `scripts/lti-platform.sh --port 0 --tool http://127.0.0.1:PORT`. `--selftest` instead runs
# tests/lti/selftest.py, which plays a minimal tool against a harness of its own. See tests/lti/README.md.
set -euo pipefail

VERSION=0.1.8
# lti1p3platform's own dependencies, pinned; typing_extensions is imported by it but not declared in its metadata.
PINS=(
    "lti1p3platform==$VERSION"
    "PyJWT==2.15.1"
    "jwcrypto==1.6.1"
    "cryptography==50.0.2"
    "requests==2.34.2"
    "typing_extensions==4.16.0"
)
TAG="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-8)"
CACHE="${WORKSPACED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workspaced}"
VENV="$CACHE/lti-platform-$VERSION-$TAG"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

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
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" >&2
        touch "$VENV/.installed"
    fi
) 9>"$CACHE/lti-platform.lock"

if [ "${1:-}" = "--selftest" ]; then
    shift
    exec "$VENV/bin/python" "$HERE/tests/lti/selftest.py" "$@"
fi
exec "$VENV/bin/python" "$HERE/tests/lti/platform.py" "$@"
