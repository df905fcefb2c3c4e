#!/usr/bin/env python3
"""For cron: same as `comfyfleet cleanup ...` (destroy idle, stuck and orphaned instances; fail stuck jobs).

*/5 * * * *  cd /srv/comfyfleet && .venv/bin/python scripts/cleanup.py --json >> data/cleanup.log
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import main

if __name__ == "__main__":
    main(["cleanup", *sys.argv[1:]])
