#!/usr/bin/env bash
# Screenshots of the web console's views into docs/console/*.png (shown in the README).
# They come from the browser tests themselves (headless system Chromium against the simulated world),
# so what the pictures show is what the tests checked.
#   bash scripts/console_screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/docs/console"
mkdir -p "$out"
COMFYFLEET_SCREENSHOTS="$out" COMFYFLEET_TEST_DB=sqlite \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/browser/test_console.py
ls -1 "$out"
