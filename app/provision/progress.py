"""Per-file provisioning progress of one instance, built from provision.sh's JSON events.

`GET /instances/{id}` shows it: for every model file of the plan, bytes done and total and whether it is
verified (a `done` event carries the sha256 the script checked; `skipped` means an earlier verified copy
was found), and the custom nodes' state. Fed event by event while the script runs; the last snapshot
stays after it ends, so a finished instance still tells what it holds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from app.provision.plan import Plan


@dataclass
class FileProgress:
    name: str
    folder: str
    bytes_done: int = 0
    bytes_total: int | None = None
    # pending | downloading | verified | invalid (a present copy failed its check) | failed
    state: str = "pending"
    verified: bool = False
    sha256: str | None = None
    retries: int = 0
    error: str | None = None


@dataclass
class ProvisionTracker:
    workflow: str
    files: dict[str, FileProgress] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)  # node pack -> pending|installing|done|skipped|failed
    state: str = "running"  # running | done | failed
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    @classmethod
    def for_plan(cls, plan: Plan) -> ProvisionTracker:
        tracker = cls(plan.workflow)
        for m in plan.models:
            tracker.files[m.name] = FileProgress(m.name, m.folder, bytes_total=m.size, sha256=m.sha256)
        for n in plan.nodes:
            tracker.nodes[n.name] = "pending"
        return tracker

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        name = event.get("file")
        if name is not None:
            f = self.files.setdefault(str(name), FileProgress(str(name), str(event.get("folder") or "")))
            if event.get("total"):
                f.bytes_total = int(event["total"])
            if kind == "start":
                f.state, f.verified = "downloading", False
                f.bytes_done = int(event.get("offset") or 0)
            elif kind == "progress":
                f.state = "downloading"
                f.bytes_done = int(event.get("bytes") or 0)
            elif kind == "done":
                f.state, f.verified = "verified", True
                f.bytes_done = int(event.get("bytes") or 0)
                f.bytes_total = f.bytes_total or f.bytes_done
                f.sha256 = event.get("sha256") or f.sha256
            elif kind == "skipped":
                f.state, f.verified = "verified", True
                f.bytes_done = f.bytes_total or f.bytes_done
            elif kind == "invalid":
                f.state, f.verified = "invalid", False
            elif kind == "retry":
                f.retries += 1
            elif kind == "error":
                f.state, f.verified = "failed", False
                f.error = str(event.get("message") or "")[:300]
        node = event.get("node")
        if node is not None and isinstance(kind, str) and kind.startswith("node_"):
            state = kind.removeprefix("node_")
            self.nodes[str(node)] = {"start": "installing", "error": "failed"}.get(state, state)

    def finish(self, error: str | None = None) -> None:
        self.state = "failed" if error else "done"
        self.error = error
        self.finished_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        files = [asdict(f) for f in self.files.values()]
        done = sum(f["bytes_done"] for f in files)
        total = sum(f["bytes_total"] or 0 for f in files)
        return {
            "workflow": self.workflow,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "bytes_done": done,
            "bytes_total": total,
            "files_verified": sum(1 for f in files if f["verified"]),
            "files": files,
            "custom_nodes": dict(self.nodes),
        }
