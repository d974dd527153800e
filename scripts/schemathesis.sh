#!/usr/bin/env bash
# Runs schemathesis (from PyPI, pinned) out of a virtualenv under the cache directory (scripts/pyvenv.sh), installing
# it there on first use; later runs skip the install. Arguments go to schemathesis: `scripts/schemathesis.sh run <url>
# ...`. tests/openapi_fuzz.rs runs it against the real binary; see docs/api.md ("The OpenAPI document").
set -euo pipefail

VENV="$(bash "$(dirname "$0")/pyvenv.sh" schemathesis "schemathesis==4.32.5")"
exec "$VENV/bin/schemathesis" "$@"
