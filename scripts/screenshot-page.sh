#!/usr/bin/env bash
# Screenshot of the web page (`aullava serve`) with the bundled example face analysed, into docs/web-page.png
# (or the path given). Needs headless Chromium (Debian: apt-get install -y chromium); not part of the test suite.
# The page's ?example=1 mode uploads the example face through the real API on load; Chromium's virtual-time budget
# waits for that answer (network time does not count against it) before it takes the picture.
# The picture is stored with a 256-colour palette (a third of the size; the page has few colours).
# Environment: AULLAVA_BIN (default .venv/bin/aullava), PYTHON (default .venv/bin/python), PORT (default: a free
# one), CHROMIUM (default: chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/web-page.png}
aullava=${AULLAVA_BIN:-.venv/bin/aullava}
python=${PYTHON:-.venv/bin/python}
chromium=${CHROMIUM:-chromium}
command -v "$chromium" >/dev/null || { echo "error: $chromium not found (apt-get install -y chromium)" >&2; exit 2; }
[ -x "$aullava" ] || bash scripts/setup-env.sh
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
profile=$(mktemp -d)
log=$(mktemp)
"$aullava" serve --port "$port" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$profile" "$log"' EXIT
for _ in $(seq 1 180); do  # the model loads in 10-30 s on a CPU
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
    2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "error: the server stopped" >&2; exit 1; }
  sleep 1
done
mkdir -p "$(dirname "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars --window-size=1280,760 \
  --virtual-time-budget=120000 --screenshot="$out" "http://127.0.0.1:$port/?example=1" 2>/dev/null
"$python" -c "import sys; from PIL import Image
Image.open(sys.argv[1]).convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT).save(sys.argv[1], optimize=True)" "$out"
echo "wrote $out"
