"""Where the command line writes a video when no `--output` is given: `out/` (covered by `.gitignore`),
never the current folder, so a run inside a git checkout leaves nothing for `git status` to show."""

from __future__ import annotations

import time
from pathlib import Path

OUT_DIR = Path("out")


def default_output(stem: str | None = None, suffix: str = ".mp4") -> Path:
    """`out/<stem>.mp4` (default stem `comfyfleet-<date>-<time>`, then `-2`, `-3`...); creates `out/`."""
    name = stem or f"comfyfleet-{time.strftime('%Y%m%d-%H%M%S')}"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path, n = OUT_DIR / f"{name}{suffix}", 1
    while path.exists():  # two runs within one second must not overwrite each other
        n += 1
        path = OUT_DIR / f"{name}-{n}{suffix}"
    return path


def resolve_output(output: Path | None, stem: str | None = None, suffix: str = ".mp4") -> tuple[Path, bool]:
    """(path, defaulted): the given `--output`, or the default under `out/` (then say where)."""
    if output is not None:
        return output, False
    return default_output(stem, suffix), True
