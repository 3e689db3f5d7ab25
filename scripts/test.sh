#!/usr/bin/env bash
# Set up (first run only) and run the test suite; extra arguments go to pytest (e.g. -k answer_format).
# pytest exits 5 when a selection matches no test: reported loudly, but not a failure of the code under test.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh test || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
if [ "$code" -eq 5 ]; then echo "pytest: no tests were collected for this selection" >&2; exit 0; fi
exit "$code"
