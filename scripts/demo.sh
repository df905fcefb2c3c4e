#!/usr/bin/env bash
# The README's first command: set up on a fresh machine and run the main job -- a video from an image.
# With no VAST_API_KEY configured this runs in the simulated world (and every output says so).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/comfyfleet generate \
  --image examples/lighthouse.png \
  --prompt "The lighthouse beam sweeps slowly across the sea as waves roll in, golden hour, gentle camera push-in" \
  --output out/lighthouse.mp4 "$@"
