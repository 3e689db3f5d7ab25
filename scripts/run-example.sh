#!/usr/bin/env bash
# Set up (first run only) and recognise AUs on the bundled example face with the default model, all three formats.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/aullava predict src/aullava/resources/examples/astronaut.png "$@"
