"""`Comfyfleet`: the same client for code without an event loop.

It runs one `AsyncComfyfleet` on a private event loop in a background thread (anyio's blocking portal),
so both share every behaviour (retries, SSE reconnects, streamed downloads) instead of keeping two
implementations in step. Close it (or use `with`) to stop the thread.

    with Comfyfleet("http://gpu-api:8000", token=...) as cf:
        job = cf.generate(image="cat.png", prompt="the cat turns its head")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from app.api.group_schemas import (
    BatchView,
    DestroyReport,
    InstanceView,
    SpendView,
    StoryView,
    VerifyReport,
)
from app.api.schemas import JobView
from app.client.aio import AsyncComfyfleet, ImageInput, ProgressCallback


class Comfyfleet:
    def __init__(self, base_url: str, **options: Any) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._client: AsyncComfyfleet = self._portal.call(_make, base_url, options)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def __enter__(self) -> Comfyfleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._portal_cm is None:
            return
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None  # type: ignore[assignment]

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._client, name)
        return self._portal.call(lambda: method(*args, **kwargs))

    # --- jobs --------------------------------------------------------------------------------------
    def submit(self, *, image: ImageInput, prompt: str, **fields: Any) -> JobView:
        return self._call("submit", image=image, prompt=prompt, **fields)

    def job(self, job_id: str) -> JobView:
        return self._call("job", job_id)

    def jobs(self, *, states: list[str] | None = None, limit: int = 50) -> list[JobView]:
        return self._call("jobs", states=states, limit=limit)

    def cancel(self, job_id: str) -> JobView:
        return self._call("cancel", job_id)

    def wait(
        self, job_id: str, *, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> JobView:
        return self._call("wait", job_id, timeout_s=timeout_s, on_progress=on_progress)

    def generate(self, *, image: ImageInput, prompt: str, **kwargs: Any) -> JobView:
        return self._call("generate", image=image, prompt=prompt, **kwargs)

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """The SSE stream at `path` (e.g. `/jobs/<id>/events`), event by event."""
        agen = self._client.events(path)
        try:
            while True:
                try:
                    yield self._portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(agen.aclose)

    def download(self, url: str, dest: Any) -> Any:
        return self._call("download", url, dest)

    # --- stories -----------------------------------------------------------------------------------
    def submit_story(self, *, image: ImageInput, segments: list[dict[str, Any]], **fields: Any) -> StoryView:
        return self._call("submit_story", image=image, segments=segments, **fields)

    def story(self, story_id: str) -> StoryView:
        return self._call("story", story_id)

    def cancel_story(self, story_id: str) -> StoryView:
        return self._call("cancel_story", story_id)

    def wait_story(
        self, story_id: str, *, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> StoryView:
        return self._call("wait_story", story_id, timeout_s=timeout_s, on_progress=on_progress)

    # --- batches -----------------------------------------------------------------------------------
    def submit_batch(self, requests: list[dict[str, Any]], *, webhook_url: str | None = None) -> BatchView:
        return self._call("submit_batch", requests, webhook_url=webhook_url)

    def batch(self, batch_id: str) -> BatchView:
        return self._call("batch", batch_id)

    def wait_batch(self, batch_id: str, **kwargs: Any) -> BatchView:
        return self._call("wait_batch", batch_id, **kwargs)

    # --- fleet -------------------------------------------------------------------------------------
    def instances(self) -> list[InstanceView]:
        return self._call("instances")

    def instance(self, instance_id: str) -> InstanceView:
        return self._call("instance", instance_id)

    def verify(self, instance_id: str, *, refetch: bool = False) -> VerifyReport:
        return self._call("verify", instance_id, refetch=refetch)

    def destroy(self, instance_id: str) -> DestroyReport:
        return self._call("destroy", instance_id)

    def spend(self) -> SpendView:
        return self._call("spend")


async def _make(base_url: str, options: dict[str, Any]) -> AsyncComfyfleet:
    return AsyncComfyfleet(base_url, **options)  # the httpx client binds to the portal's loop
