"""Stories: segments chained on each one's last frame, joined into one MP4 by copying packets.

A story runs its segments one after another as ordinary jobs. Segment k+1's start image is segment k's
stored last frame, so its cache key holds that frame's hash: re-running a story with segment 2's prompt
changed finds segment 1 in the cache, and renders 2..n again (their start images differ). Segments 2..n
are rendered with their first frame cut before the encoder (`drop_first_frames`, see
`app.workflows.trim`): it would repeat the previous segment's last frame. When every segment is done,
their stored videos are joined by packet copy (`app.comfy.stitch`), content-addressed by the segments'
keys, so the same story again is answered from the store too.

The runner's task follows the current segment job's events and re-publishes them as the story's own
(segment i of n, and that segment's progress). A cancel stops the running segment (the job's own cancel,
which removes or interrupts its prompt) and creates no further segment. A failed segment fails the story
with its reason; finished segments keep their results. After a restart, unfinished stories continue from
the segment their rows say (a segment's job is recovered by the job manager; the story follows it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.comfy.stitch import stitch_videos
from app.jobs.errors import classify
from app.jobs.events import EventHub
from app.jobs.groups import GroupRepo, Story, StoryState
from app.jobs.models import Job, JobState
from app.jobs.repo import JobRepo
from app.redact import redact
from app.store.cache import canonical_json, last_frame_key, video_key
from app.store.fetch import fetch_object

log = logging.getLogger(__name__)

STITCH_SHARE = 0.02  # the last part of a story's progress bar is the join


def story_key(segment_keys: list[str]) -> str:
    """The stored joined video's key: a hash of the segments' result keys, in order."""
    payload = {"v": 1, "kind": "story", "segments": list(segment_keys)}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


class StoryManager:
    """Owns one asyncio task per unfinished story (like `JobManager` does for jobs)."""

    def __init__(
        self,
        groups: GroupRepo,
        repo: JobRepo,
        events: EventHub,
        *,
        services: Any,
        tmp_dir: Path,
        simulated: bool,
        progress_write_interval_s: float = 1.0,
    ) -> None:
        self.groups, self.repo, self.events = groups, repo, events
        self.services = services  # prepare/create/manager/intake/store/runner.results/workflows
        self.tmp_dir = tmp_dir
        self.simulated = simulated
        self.progress_write_interval_s = progress_write_interval_s
        self.tasks: dict[str, asyncio.Task] = {}
        self._cancel_reasons: dict[str, str] = {}
        self.on_finished: Callable[[Story], Awaitable[None]] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Continue the stories a previous process left unfinished."""
        for story in await self.groups.active_stories():
            if story.id not in self.tasks:
                log.info("recovery: story %s continues at segment %d", story.id, _current(story) + 1)
                self.spawn(story.id)

    async def stop(self, grace_s: float = 10.0) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()  # no reason: a shutdown, the row stays for the next start
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    def spawn(self, story_id: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._guarded(story_id), name=f"story-{story_id}")
        self.tasks[story_id] = task
        return task

    # --- operations --------------------------------------------------------------------------------
    async def submit(self, **fields: Any) -> Story:
        story = await self.groups.create_story(**fields)
        self.spawn(story.id)
        return story

    async def cancel(self, story_id: str, reason: str = "cancelled by the user") -> Story:
        story = await self.groups.request_story_cancel(story_id)
        if story.terminal:
            return story
        task = self.tasks.get(story_id)
        if task is not None and not task.done():
            self._cancel_reasons[story_id] = reason
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 60)
        else:  # no runner here (another process, or it already ended): stop what is left
            await self._cancel_segment(story, reason)
            story = await self._end(
                story_id, StoryState.CANCELLED, error_kind="cancelled", error_message=reason
            )
        return await self.groups.story(story_id)

    async def wait(self, story_id: str, seconds: float) -> Story:
        deadline = time.monotonic() + seconds
        while True:
            story = await self.groups.story(story_id)
            left = deadline - time.monotonic()
            if story.terminal or left <= 0:
                return story
            task = self.tasks.get(story_id)
            if task is not None and not task.done():
                await asyncio.wait([task], timeout=min(left, 5.0))
            else:
                await asyncio.sleep(min(left, 1.0))

    # --- the runner --------------------------------------------------------------------------------
    async def _guarded(self, story_id: str) -> None:
        try:
            await self._run(story_id)
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(story_id, None)
            if reason is None:
                raise  # shutdown
            with contextlib.suppress(Exception):
                story = await self.groups.story(story_id)
                await asyncio.shield(self._cancel_segment(story, reason))
                await asyncio.shield(
                    self._end(story_id, StoryState.CANCELLED, error_kind="cancelled", error_message=reason)
                )
        except Exception as exc:
            log.exception("story %s: runner crashed", story_id)
            kind, message = classify(exc)
            with contextlib.suppress(Exception):
                await self._end(story_id, StoryState.FAILED, error_kind=kind, error_message=message)
        finally:
            if self.tasks.get(story_id) is asyncio.current_task():
                self.tasks.pop(story_id, None)
            self._cancel_reasons.pop(story_id, None)
            await asyncio.to_thread(shutil.rmtree, self.tmp_dir / story_id, True)

    async def _run(self, story_id: str) -> None:
        story = await self.groups.story(story_id)
        if story.terminal:
            return
        if story.cancel_requested:
            await self._cancel_segment(story, "cancelled by the user")
            await self._end(
                story_id, StoryState.CANCELLED, error_kind="cancelled", error_message="cancelled by the user"
            )
            return
        request = story.request or {}
        segments: list[dict[str, Any]] = request["segments"]
        n = len(segments)
        jobs: list[str | None] = list(story.segment_jobs or [None] * n)
        work = self.tmp_dir / story_id
        start_image = Path(request["image_path"])
        if story.state == StoryState.QUEUED.value:
            await self.groups.update_story(
                story_id, state=StoryState.RUNNING.value, stage="segment 1 of " + str(n)
            )
        finished: list[Job] = []
        for i, segment in enumerate(segments):
            stage = f"segment {i + 1} of {n}"
            if jobs[i] is None:
                job = await self._create_segment(story, i, segment, start_image)
                jobs[i] = job.id
                await self.groups.update_story(story_id, segment_jobs=list(jobs), stage=stage)
            self._publish(story_id, i, n, {"state": "queued", "stage": "queued", "progress": 0.0})
            job = await self._follow(story_id, i, n, jobs[i] or "")
            if job.state == JobState.CANCELLED.value:
                await self._end(
                    story_id,
                    StoryState.CANCELLED,
                    error_kind="cancelled",
                    error_message=f"segment {i + 1} of {n} was cancelled ({job.error_message}); "
                    "the segments after it were not made",
                )
                return
            if job.state != JobState.SUCCEEDED.value:
                await self._end(
                    story_id,
                    StoryState.FAILED,
                    error_kind=job.error_kind or "segment_failed",
                    error_message=f"segment {i + 1} of {n} failed: {job.error_message or job.state}",
                )
                return
            finished.append(job)
            if i + 1 < n:  # the next segment starts from this one's last frame, as stored
                start_image = work / f"segment-{i + 1}-last.png"
                await fetch_object(self.services.store, last_frame_key(_store_key(job)), start_image)
        await self._stitch(story_id, finished, segments, request, work)

    async def _create_segment(
        self, story: Story, index: int, segment: dict[str, Any], start_image: Path
    ) -> Job:
        image = await self.services.intake.from_path(start_image, f"segments[{index}].image")
        prepared = await self.services.prepare(
            segment["raw_params"],
            image,
            workflow=segment["workflow"],
            drop_first_frames=1 if index > 0 else 0,
            tags={"story_id": story.id, "story_segment": index},
        )
        return await self.services.create(prepared, submitted_by=story.submitted_by)

    async def _follow(self, story_id: str, index: int, n: int, job_id: str) -> Job:
        """Re-publish the segment job's progress as the story's until the job ends; returns it ended."""
        last_write = 0.0
        async with self.events.subscribe(job_id) as queue:
            job = await self.repo.require(job_id)
            if job.terminal:
                return job
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 5.0)
                except TimeoutError:  # ended elsewhere (another process, the cleanup)? re-read the row
                    job = await self.repo.require(job_id)
                    if job.terminal:
                        return job
                    continue
                if event.get("event") == "end":
                    ended = event.get("_job")
                    return ended if isinstance(ended, Job) else await self.repo.require(job_id)
                overall = self._publish(story_id, index, n, event)
                now = time.monotonic()
                if now - last_write >= self.progress_write_interval_s:
                    last_write = now
                    stage = f"segment {index + 1} of {n}: {event.get('stage') or event.get('state')}"
                    await self.groups.update_story(story_id, progress=overall, stage=stage[:64])

    def _publish(self, story_id: str, index: int, n: int, event: dict[str, Any]) -> float:
        seg_progress = float(event.get("progress") or 0.0)
        overall = round((index + seg_progress) / n * (1 - STITCH_SHARE), 4)
        if self.events.wants(story_id):
            self.events.publish(
                story_id,
                {
                    "event": "progress",
                    "story_id": story_id,
                    "state": StoryState.RUNNING.value,
                    "segment": index + 1,
                    "segments": n,
                    "job_id": event.get("job_id"),
                    "stage": f"segment {index + 1} of {n}: {event.get('stage') or event.get('state')}",
                    "segment_state": event.get("state"),
                    "segment_stage": event.get("stage"),
                    "segment_progress": round(seg_progress, 4),
                    "progress": overall,
                    "detail": event.get("detail") or {},
                },
            )
        return overall

    async def _stitch(
        self,
        story_id: str,
        jobs: list[Job],
        segments: list[dict[str, Any]],
        request: dict[str, Any],
        work: Path,
    ) -> None:
        n = len(jobs)
        await self.groups.update_story(
            story_id,
            state=StoryState.STITCHING.value,
            stage="joining the segments",
            progress=1 - STITCH_SHARE,
        )
        self._publish_plain(story_id, StoryState.STITCHING.value, "joining the segments", 1 - STITCH_SHARE)
        results = [j.result or {} for j in jobs]
        keys = [_store_key(j) for j in jobs]
        key = story_key(keys)
        cache = self.services.runner.results
        simulated = any(r.get("simulated") for r in results) or self.simulated
        t0 = time.monotonic()
        found = await cache.lookup(key)
        if found is not None and found.simulated and not self.simulated:
            found = None  # a simulated world's join is no answer for a deployment on real GPUs
        join: dict[str, Any]
        if found is not None:
            stored, cached = found, True
            join = {"method": "packet copy", "reused": True}
        else:
            paths = []
            for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
                path = work / f"segment-{i + 1}.{_ext(result)}"
                await fetch_object(self.services.store, video_key(_store_key(job), _ext(result)), path)
                paths.append(path)
            last = work / "story-last.png"
            await fetch_object(self.services.store, last_frame_key(keys[-1]), last)
            out = work / "story.mp4"
            stitched = await asyncio.to_thread(stitch_videos, paths, out)
            expected = sum(int(r.get("num_frames") or 0) for r in results)
            if stitched.frames != expected:
                log.warning(
                    "story %s: joined %d frames, segments say %d", story_id, stitched.frames, expected
                )
            first = results[0]
            stored = await cache.save(
                key,
                video=out,
                last_frame=last,
                workflow=jobs[0].workflow,
                seed=int(request.get("seed") or 0),
                frames=stitched.frames,
                fps=first.get("fps") or 0,
                width=first.get("width") or 0,
                height=first.get("height") or 0,
                simulated=simulated,
                job_id=story_id,
            )
            cached = False
            join = {
                "method": "packet copy",
                "reused": False,
                "packets": stitched.packets,
                "cpu_s": round(stitched.seconds, 4),
                "duration_s": round(stitched.duration_s, 4),
            }
        join["wall_s"] = round(time.monotonic() - t0, 4)
        first = results[0]
        cost = round(sum(float(j.cost_usd or 0.0) for j in jobs), 6)
        story = await self.groups.story(story_id)
        result = {
            "store_key": stored.key,
            "video_url": stored.video_url,
            "last_frame_url": stored.last_frame_url,
            "num_frames": stored.frames,
            "segment_frames": [int(r.get("num_frames") or 0) for r in results],
            "fps": first.get("fps"),
            "width": first.get("width"),
            "height": first.get("height"),
            "resolution": first.get("resolution"),
            "video_size_bytes": stored.size,
            "seed": request.get("seed"),
            "cached": cached,
            "simulated": bool(stored.simulated),
            "join": join,
            "timings": {
                "total_s": round(time.time() - story.created_at, 3),
                "gpu_s": round(sum(float((r.get("timings") or {}).get("gpu_s") or 0.0) for r in results), 3),
                "join_s": join["wall_s"],
            },
            "cost_usd": cost,
        }
        log.info("story %s: %d segments joined into %d frames", story_id, n, stored.frames)
        await self._end(story_id, StoryState.SUCCEEDED, result=result, progress=1.0)

    def _publish_plain(self, story_id: str, state: str, stage: str, progress: float) -> None:
        if self.events.wants(story_id):
            self.events.publish(
                story_id,
                {
                    "event": "progress",
                    "story_id": story_id,
                    "state": state,
                    "stage": stage,
                    "progress": progress,
                },
            )

    async def _cancel_segment(self, story: Story, reason: str) -> None:
        """Cancel the story's unfinished segment job, if it has one."""
        for job_id in story.segment_jobs or []:
            if job_id is None:
                continue
            job = await self.repo.get(job_id)
            if job is not None and not job.terminal:
                try:
                    await self.services.manager.cancel(job_id, f"story {story.id}: {reason}")
                except Exception as exc:
                    log.warning(
                        "story %s: cancelling segment job %s failed: %s", story.id, job_id, redact(str(exc))
                    )

    async def _end(self, story_id: str, state: StoryState, **fields: Any) -> Story:
        current = await self.groups.story(story_id)
        if current.terminal:  # the first end wins
            return current
        story = await self.groups.update_story(story_id, state=state.value, stage=state.value, **fields)
        log.info(
            "story %s %s%s", story_id, state.value, f": {story.error_message}" if story.error_message else ""
        )
        self.events.publish(story_id, {"event": "end", "story_id": story_id, "state": state.value})
        if self.on_finished is not None:
            try:
                await self.on_finished(story)
            except Exception as exc:
                log.warning("story %s: completion hook failed: %s", story_id, redact(str(exc)))
        return story


def _current(story: Story) -> int:
    jobs = story.segment_jobs or []
    created = [i for i, j in enumerate(jobs) if j is not None]
    return created[-1] if created else 0


def _store_key(job: Job) -> str:
    result = job.result or {}
    return str(result.get("store_key") or job.cache_key)


def _ext(result: dict[str, Any]) -> str:
    return Path(str(result.get("video_url", "")).split("?", 1)[0]).suffix.lstrip(".") or "mp4"


def segment_view(
    index: int, segment: dict[str, Any], job: Job | None, result: dict[str, Any] | None
) -> dict[str, Any]:
    """One segment as `GET /stories/{id}` shows it (the result with fresh URLs, passed in)."""
    raw = segment.get("raw_params") or {}
    out: dict[str, Any] = {
        "index": index + 1,
        "job_id": job.id if job else None,
        "state": job.state if job else "pending",
        "stage": job.stage if job else None,
        "progress": round(job.progress or 0.0, 4) if job else 0.0,
        "workflow": segment.get("workflow"),
        "prompt": raw.get("prompt"),
        "seed": raw.get("seed"),
        "num_frames": raw.get("num_frames"),
        "first_frame_dropped": index > 0,
        "result": None,
        "video_url": None,
        "last_frame_url": None,
        "cached": None,
        "timings": (job.timings or {}) if job else {},
        "cost_usd": job.cost_usd if job else None,
        "error": (
            {"message": job.error_message, "kind": job.error_kind} if job and job.error_message else None
        ),
    }
    if result:
        out.update(
            result=result,
            video_url=result.get("video_url"),
            last_frame_url=result.get("last_frame_url"),
            cached=result.get("cached"),
            timings=result.get("timings") or out["timings"],
            cost_usd=result.get("cost_usd", out["cost_usd"]),
            frames_in_story=result.get("num_frames"),
        )
    return out
