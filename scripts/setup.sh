#!/usr/bin/env bash
# Create .venv and install cirrus with what the tests need. Idempotent; quiet when nothing changes.
# Usage: scripts/setup.sh [--test]   (--test adds test servers, baselines and Ceph RGW packages)
# PYTHON picks the interpreter (python3), VENV the directory (.venv): scripts/test-py310 uses both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp=$VENV/.cirrus-installed
want="$(cat pyproject.toml)${1:-}"
have=$(cat "$stamp" 2>/dev/null || true)
# the test install is a superset of the plain one
if [ "$have" != "$want" ] && [ "$have" != "${want}--test" ]; then
  if [ "${1:-}" = "--test" ]; then
    "$VENV/bin/pip" install -q -e '.[test]'
    # cirrus-volume 0.1.10 pins a cloud-volume that does not install on Python 3.11; it is only a
    # baseline for compatibility tests and benchmarks, so it goes in beside the current one.
    "$VENV/bin/pip" install -q --no-deps cirrus-volume==0.1.10
  else
    "$VENV/bin/pip" install -q -e .
  fi
  printf '%s' "$want" > "$stamp"
fi
if [ "${1:-}" = "--test" ]; then
  bash scripts/install-rgw.sh
fi
