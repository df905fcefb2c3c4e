#!/usr/bin/env bash
# The README's test command: installs what the tests need (apt + pip), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# -n auto --dist worksteal: one worker per CPU (pytest-xdist); each worker starts its own PostgreSQL,
# SeaweedFS and sshd on free ports, under its own temp dir. Pass -n 0 to run in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist worksteal "$@"
