"""`AsyncComfyfleet`: a typed asyncio client for a comfyfleet server's HTTP API (httpx + SSE).

Answers are the API's own response models (`JobView`, `StoryView`, `BatchView`, `InstanceView`, ...).
Reads (GET) are retried with backoff on connection errors and 5xx, within a deadline; submits (POST) are
not, so a retry can never start a second job. Progress is followed over Server-Sent Events; a dropped
stream is reopened (the server sends a fresh snapshot first), and a wait has its own deadline.
Results are downloaded streamed to disk, never into memory.

    async with AsyncComfyfleet("http://gpu-api:8000", token=...) as cf:
        job = await cf.submit(image="cat.png", prompt="the cat turns its head", num_frames=81)
        job = await cf.wait(job.job_id, on_progress=print)
        await cf.download(job.result["video_url"], "cat.mp4")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from app.api.group_schemas import (
    BatchView,
    DestroyReport,
    InstanceList,
    InstanceView,
    SpendView,
    StoryView,
    VerifyReport,
)
from app.api.schemas import JobList, JobView
from app.client.errors import ApiError, ClientError, ServerUnreachable, error_for

M = TypeVar("M", bound=BaseModel)
ImageInput = str | os.PathLike[str] | bytes
ProgressCallback = Callable[[dict[str, Any]], Any]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STORY_TERMINAL = TERMINAL
BATCH_TERMINAL = frozenset({"ended"})


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ServerUnreachable) or (isinstance(exc, ApiError) and exc.status >= 500)


def image_fields(image: ImageInput | None) -> dict[str, str]:
    """`image_url` for an http(s) URL; else the file's (or the bytes') base64 as `image_base64`."""
    return file_fields(image, "image") if image is not None else {}


def file_fields(value: ImageInput, name: str) -> dict[str, str]:
    """A file input (`image`, `end_image`, `audio`): `<name>_url` for an http(s) URL, else the file's (or
    the bytes') base64 as `<name>_base64`."""
    if isinstance(value, bytes):
        return {f"{name}_base64": base64.b64encode(value).decode()}
    text = os.fspath(value)
    if text.startswith(("http://", "https://")):
        return {f"{name}_url": text}
    path = Path(text).expanduser()
    if not path.is_file():
        raise ClientError(f"{name}: {path} is not a file (give a path or an http(s) URL)")
    return {f"{name}_base64": base64.b64encode(path.read_bytes()).decode()}


def _read(image: str | os.PathLike[str]) -> bytes:
    path = Path(os.fspath(image)).expanduser()
    if not path.is_file():
        raise ClientError(f"image: {path} is not a file (give a path or an http(s) URL)")
    return path.read_bytes()


class AsyncComfyfleet:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry_for_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "comfyfleet-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.retry_for_s = retry_for_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> AsyncComfyfleet:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing ----------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"{self.base_url} did not answer {method} {path} in time") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {"detail": resp.text[:300]}
        if resp.status_code >= 400:
            raise error_for(resp.status_code, body)
        return body

    async def _get(self, path: str, **kwargs: Any) -> Any:
        """A read: retried with backoff on connection errors and 5xx until `retry_for_s` passes."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_delay(self.retry_for_s),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                return await self._send("GET", path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _as(model: type[M], data: Any) -> M:
        return model.model_validate(data)

    # --- jobs --------------------------------------------------------------------------------------
    async def submit(self, *, prompt: str, image: ImageInput | None = None, **fields: Any) -> JobView:
        """Start one job (`POST /vastai/generate-video`); `fields` are the request's other fields."""
        body = {**await asyncio.to_thread(image_fields, image), "prompt": prompt, **fields}
        return self._as(JobView, await self._send("POST", "/vastai/generate-video", json=body))

    async def job(self, job_id: str) -> JobView:
        return self._as(JobView, await self._get(f"/jobs/{job_id}"))

    async def jobs(self, *, states: list[str] | None = None, limit: int = 50) -> list[JobView]:
        params: list[tuple[str, Any]] = [("limit", limit), *(("state", s) for s in states or [])]
        return self._as(JobList, await self._get("/jobs", params=params)).jobs

    async def cancel(self, job_id: str) -> JobView:
        return self._as(JobView, await self._send("DELETE", f"/jobs/{job_id}"))

    async def events(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The SSE stream at `path` as dicts with an `event` key (`snapshot`, `progress`, `end`)."""
        try:
            async with aconnect_sse(
                self._http, "GET", path, timeout=httpx.Timeout(30.0, read=60.0)
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    try:
                        body = source.response.json()
                    except ValueError:
                        body = {}
                    raise error_for(source.response.status_code, body)
                async for sse in source.aiter_sse():
                    data = json.loads(sse.data) if sse.data else {}
                    yield {"event": sse.event or "message", **data}
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"the event stream {path} went silent") from exc
        except (httpx.TransportError, SSEError) as exc:
            raise ServerUnreachable(f"the event stream {path} broke: {type(exc).__name__}") from exc

    async def _follow(
        self,
        events_path: str,
        fetch: Callable[[], Any],
        terminal: frozenset[str],
        *,
        timeout_s: float | None,
        on_progress: ProgressCallback | None,
    ) -> Any:
        """Follow `events_path` until its `end`; reconnect when the stream drops; give up at the deadline
        (then the latest state is returned, not ended)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = 0.2
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return await fetch()
            try:
                async with asyncio.timeout(left):
                    async for event in self.events(events_path):
                        if on_progress is not None:
                            on_progress(event)
                        if event["event"] == "end" or (
                            event["event"] == "snapshot" and event.get("state") in terminal
                        ):
                            return await fetch()
                        backoff = 0.2
            except TimeoutError:
                return await fetch()
            except ServerUnreachable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            latest = await fetch()  # the stream ended without an end event: look, then reopen
            if getattr(latest, "state", None) in terminal:
                return latest

    async def wait(
        self, job_id: str, *, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> JobView:
        """Follow the job's events until it ends (or `timeout_s` passes); returns its latest view."""
        return await self._follow(
            f"/jobs/{job_id}/events",
            lambda: self.job(job_id),
            TERMINAL,
            timeout_s=timeout_s,
            on_progress=on_progress,
        )

    async def generate(
        self,
        *,
        image: ImageInput,
        prompt: str,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        **fields: Any,
    ) -> JobView:
        job = await self.submit(image=image, prompt=prompt, **fields)
        return await self.wait(job.job_id, timeout_s=timeout_s, on_progress=on_progress)

    async def download(self, url: str, dest: str | os.PathLike[str]) -> Path:
        """Stream a result URL (the server's /files or a presigned R2 URL) to `dest` atomically."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        same_server = url.startswith(self.base_url + "/")
        client = self._http if same_server else httpx.AsyncClient(timeout=60.0, follow_redirects=True)
        try:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise ApiError(resp.status_code, f"downloading {url.split('?', 1)[0]} failed")
                with tmp.open("wb") as fh:
                    async for chunk in resp.aiter_bytes(1 << 20):
                        fh.write(chunk)
            os.replace(tmp, dest)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(
                f"downloading {url.split('?', 1)[0]} failed: {type(exc).__name__}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if client is not self._http:
                await client.aclose()
        return dest

    # --- stories -----------------------------------------------------------------------------------
    async def submit_story(
        self, *, image: ImageInput, segments: list[dict[str, Any]], **fields: Any
    ) -> StoryView:
        """Start a story (`POST /vastai/generate-story`). A local image file is uploaded as multipart."""
        body = {"segments": segments, **fields}
        if isinstance(image, bytes) or not os.fspath(image).startswith(("http://", "https://")):
            data = image if isinstance(image, bytes) else await asyncio.to_thread(_read, image)
            files = {"image": ("image", data, "application/octet-stream")}
            answer = await self._send(
                "POST", "/vastai/generate-story", data={"request": json.dumps(body)}, files=files
            )
        else:
            answer = await self._send("POST", "/vastai/generate-story", json={**image_fields(image), **body})
        return self._as(StoryView, answer)

    async def story(self, story_id: str) -> StoryView:
        return self._as(StoryView, await self._get(f"/stories/{story_id}"))

    async def cancel_story(self, story_id: str) -> StoryView:
        return self._as(StoryView, await self._send("DELETE", f"/stories/{story_id}"))

    async def wait_story(
        self, story_id: str, *, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> StoryView:
        return await self._follow(
            f"/stories/{story_id}/events",
            lambda: self.story(story_id),
            STORY_TERMINAL,
            timeout_s=timeout_s,
            on_progress=on_progress,
        )

    # --- batches -----------------------------------------------------------------------------------
    async def submit_batch(
        self, requests: list[dict[str, Any]], *, webhook_url: str | None = None
    ) -> BatchView:
        """Submit a batch; each request may give `image` (path, bytes or URL) instead of image_url/base64."""
        items = []
        for req in requests:
            req = dict(req)
            if "image" in req:
                req.update(await asyncio.to_thread(image_fields, req.pop("image")))
            items.append(req)
        body: dict[str, Any] = {"requests": items}
        if webhook_url:
            body["webhook_url"] = webhook_url
        return self._as(BatchView, await self._send("POST", "/vastai/generate-video/batch", json=body))

    async def batch(self, batch_id: str) -> BatchView:
        return self._as(BatchView, await self._get(f"/batches/{batch_id}"))

    async def wait_batch(
        self,
        batch_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        on_progress: Callable[[BatchView], Any] | None = None,
    ) -> BatchView:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            batch = await self.batch(batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch.state in BATCH_TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return batch
            await asyncio.sleep(poll_s)

    # --- fleet -------------------------------------------------------------------------------------
    async def instances(self) -> list[InstanceView]:
        return self._as(InstanceList, await self._get("/instances")).instances

    async def instance(self, instance_id: str) -> InstanceView:
        return self._as(InstanceView, await self._get(f"/instances/{instance_id}"))

    async def verify(self, instance_id: str, *, refetch: bool = False) -> VerifyReport:
        params = {"refetch": "true" if refetch else "false"}
        answer = await self._send(
            "POST",
            f"/instances/{instance_id}/verify",
            params=params,
            timeout=httpx.Timeout(30.0, read=3600.0),
        )
        return self._as(VerifyReport, answer)

    async def destroy(self, instance_id: str) -> DestroyReport:
        return self._as(DestroyReport, await self._send("DELETE", f"/instances/{instance_id}"))

    async def spend(self) -> SpendView:
        return self._as(SpendView, await self._get("/spend"))
