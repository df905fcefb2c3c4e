"""Terminal progress bars drawn from a job's (or a story's) progress events.

The events are the same dicts whether they come from the in-process event hub (`comfyfleet generate`)
or over Server-Sent Events from a server (`--server`), so local and remote modes show the same bars:
the job's overall progress with its stage, provisioning bytes, and sampling steps.
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn


def progress_columns() -> tuple[Any, ...]:
    return (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
    )


def _mb(done: int, total: int) -> str:
    return f"{done / 1e6:,.1f} / {total / 1e6:,.1f} MB"


class JobBars:
    """A job's bars on a rich `Progress`: overall, provisioning bytes (when a GPU is prepared), sampling."""

    def __init__(self, bars: Progress, label: str = "job") -> None:
        self.bars = bars
        self.status = bars.add_task(label, total=1.0, info="queued")
        self.prov: TaskID | None = None
        self.samp: TaskID | None = None

    def update(self, ev: dict[str, Any]) -> None:
        if ev.get("event") in ("end", "snapshot"):
            self.status_only(ev)
            return
        detail = ev.get("detail") or {}
        self.status_only(ev)
        if detail.get("bytes_total"):
            if self.prov is None:
                self.prov = self.bars.add_task("provisioning", total=detail["bytes_total"], info="")
            self.bars.update(
                self.prov,
                completed=detail["bytes_done"],
                total=detail["bytes_total"],
                info=_mb(detail["bytes_done"], detail["bytes_total"]),
            )
        stage = str(ev.get("segment_stage") or ev.get("stage") or "")
        if stage.startswith("sampling") and detail.get("steps"):
            if self.samp is None:
                self.samp = self.bars.add_task("sampling", total=detail["steps"], info="")
            self.bars.update(
                self.samp,
                completed=detail["step"],
                total=detail["steps"],
                info=f"{stage} step {detail['step']}/{detail['steps']}",
            )

    def status_only(self, ev: dict[str, Any]) -> None:
        if ev.get("progress") is not None:
            self.bars.update(self.status, completed=ev["progress"])
        if ev.get("state"):
            stage = ev.get("stage")
            self.bars.update(self.status, info=f"{ev['state']}: {stage}" if stage else str(ev["state"]))

    def finish(self, state: str) -> None:
        self.bars.update(self.status, completed=1.0, info=state)


class StoryBars(JobBars):
    """A story's bars: the whole story, then the current segment's own bars (reset per segment)."""

    def __init__(self, bars: Progress) -> None:
        super().__init__(bars, "story")
        self.segment: int | None = None
        self.seg_task: TaskID | None = None

    def update(self, ev: dict[str, Any]) -> None:
        seg = ev.get("segment")
        if ev.get("event") == "progress" and isinstance(seg, int) and ev.get("segments"):
            if seg != self.segment:
                self.segment = seg
                for task in (self.seg_task, self.samp):
                    if task is not None:
                        self.bars.remove_task(task)
                self.samp = None
                self.seg_task = self.bars.add_task(f"segment {seg}/{ev['segments']}", total=1.0, info="")
            if self.seg_task is not None:
                self.bars.update(
                    self.seg_task,
                    completed=ev.get("segment_progress") or 0.0,
                    info=f"{ev.get('segment_state')}: {ev.get('segment_stage')}",
                )
        super().update(ev)
