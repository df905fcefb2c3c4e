#!/usr/bin/env python3
"""Same as `comfyfleet instances ...` (list, offers, create, destroy, logs, ssh)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import main

if __name__ == "__main__":
    main(["instances", *sys.argv[1:]])
