#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtualenv in .venv with comfyfleet installed (editable).
#   scripts/setup.sh          runtime dependencies only
#   scripts/setup.sh --test   also system packages (apt) and the test extras
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
  need=()
  [ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
  command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
  command -v git >/dev/null 2>&1 || need+=(git)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v aria2c >/dev/null 2>&1 || need+=(aria2)
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING" || true
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[test,conformance]" 2>&1 | grep -v "^WARNING" || true
else
  .venv/bin/python -m pip install -q -e . 2>&1 | grep -v "^WARNING" || true
fi
.venv/bin/python -c "import app.cli" >/dev/null
