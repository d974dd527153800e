#!/usr/bin/env bash
# Runs the test LTI 1.3 platform (tests/lti/platform.py, built on lti1p3platform from PyPI, pinned) out of a
# virtualenv under the cache directory (scripts/pyvenv.sh), installing it there on first use; later runs skip the
# install. Arguments go to the harness: `scripts/lti-platform.sh --port 0 --tool http://127.0.0.1:PORT`. `--selftest`
# instead runs tests/lti/selftest.py, which plays a minimal tool against a harness of its own. See tests/lti/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# lti1p3platform's own dependencies, pinned; typing_extensions is imported by it but not declared in its metadata.
VENV="$(bash "$HERE/scripts/pyvenv.sh" lti-platform-0.1.8 \
    "lti1p3platform==0.1.8" "PyJWT==2.15.1" "jwcrypto==1.6.1" "cryptography==50.0.2" "requests==2.34.2" \
    "typing_extensions==4.16.0")"

if [ "${1:-}" = "--selftest" ]; then
    shift
    exec "$VENV/bin/python" "$HERE/tests/lti/selftest.py" "$@"
fi
exec "$VENV/bin/python" "$HERE/tests/lti/platform.py" "$@"
