"""A persisted id sequence: simulated instance ids unique for a data directory, as on the real marketplace.

Every world (a `comfyfleet sim`, or the one a `serve`/`generate` starts for itself) rents its instances
under ids taken from one file, `<data_dir>/sim/instance-ids`, under an exclusive file lock, so two worlds
running at once, or one after the other, never hand out the same id and the ledger never holds two rows
with one id.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class IdSequence:
    """`ids = IdSequence(path, start)`; `ids()` -> the next id (>= start), durable across processes."""

    def __init__(self, path: str | Path, start: int) -> None:
        self.path = Path(path)
        self.start = int(start)

    def __call__(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for microseconds: read, add one, write
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            last = int(text) if text.isdigit() else self.start - 1
            value = max(last + 1, self.start)
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
            return value
        finally:
            os.close(fd)  # releases the lock
