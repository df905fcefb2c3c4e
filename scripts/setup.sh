#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtualenv in .venv with comfyfleet installed (editable).
#   scripts/setup.sh          runtime dependencies only
#   scripts/setup.sh --test   also system packages (apt) and the test extras
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# System tools: git and curl run on the (simulated) instances during provisioning; the tests also need a
# real OpenSSH server, ffprobe, aria2 and a PostgreSQL server (started and stopped by the tests themselves).
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "$want_test" = 1 ]; then
  [ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
  command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
  command -v aria2c >/dev/null 2>&1 || need+=(aria2)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser tests (console, offline /docs)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing system packages with apt-get${SUDO:+ (via sudo)}: ${need[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then  # Debian's python3 needs python3-venv for this
    rm -rf .venv
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
    "$PY" -m venv .venv
  fi
fi
pip_quiet() {  # pip's (and the build backend's) chatter goes to a log; shown only when it fails
  if ! .venv/bin/python -m pip install -q "$@" > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "setup: pip install $* failed (log above)" >&2
    exit 1
  fi
}
pip_quiet --upgrade pip
if [ "$want_test" = 1 ]; then
  pip_quiet -e ".[test,conformance]"
else
  pip_quiet -e .
fi
.venv/bin/python -c "import app.cli" >/dev/null
