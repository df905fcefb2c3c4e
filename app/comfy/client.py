"""Async client for one ComfyUI server, through its public HTTP + WebSocket API only.

Why it looks the way it does (see docs: lessons 1-8):
- Events reach only the socket whose clientId equals the prompt's client_id, so `run()` makes sure the
  client's socket (one per ComfyClient, one clientId, see `events.py`) is open BEFORE POST /prompt, and
  proposes its own prompt_id so every event can be routed to its job from the first one on.
- No single completion signal is trusted: the socket can drop or go silent on long jobs, success can
  arrive before /history has the outputs. The socket is raced against a slow /history poll; after success
  /history is polled fast; a dropped socket is reopened while /queue still holds the prompt; a prompt in
  neither /queue nor /history was lost (ComfyUI restarted) and fails fast with a typed, retryable error.
- Every call has a timeout and every wait a `time.monotonic()` deadline; outputs stream to disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx
import tenacity
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from app.comfy.capabilities import check_object_info
from app.comfy.errors import (
    ComfyAuthError,
    ComfyError,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyUnavailable,
    DownloadError,
    ExecutionError,
    PromptInterrupted,
    PromptLost,
    PromptValidationError,
)
from app.comfy.events import EventSocket
from app.comfy.frames import extract_last_frame as _extract_last_frame
from app.comfy.outputs import OutputFile, PromptResult, find_outputs
from app.comfy.progress import Progress, ProgressTracker
from app.redact import redact, register_secret

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], Awaitable[None] | None]
CancelOutcome = Literal["removed", "interrupted", "not_found"]
_RETRYABLE_STATUS = {502, 503, 504}
_CHUNK = 1024 * 1024


@dataclass
class _Job:
    """What run() knows about one prompt; the socket reader and the poll loop share it."""

    prompt_id: str
    client_id: str
    tracker: ProgressTracker
    on_progress: ProgressCallback | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    success: bool = False
    done_marker: bool = False
    error: dict[str, Any] | None = None
    interrupted: dict[str, Any] | None = None
    cancelled_by_us: bool = False
    poll_now: bool = False
    absent_since: float | None = None
    heard: bool = False  # any socket event of this prompt arrived
    unheard_running_since: float | None = None
    ws_outputs: dict[str, Any] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)


class ComfyClient:
    """One ComfyUI server. Use as `async with ComfyClient(url) as comfy: ...` (one pooled HTTP client).

    `token` -> `Authorization: Bearer`, `basic_auth=(user, password)` -> HTTP Basic, on HTTP requests and
    on the WebSocket handshake alike (ComfyUI behind Vast's Caddy proxy). `timeout` bounds every single
    request; `poll_interval_s` is the slow /history poll that backs up the socket.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        poll_interval_s: float = 2.0,
        history_grace_s: float = 15.0,
        unreachable_grace_s: float = 10.0,
        lost_confirm_s: float = 1.0,
        client_id_prefix: str = "comfyfleet",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.poll_interval_s = poll_interval_s
        self.history_grace_s = history_grace_s
        self.unreachable_grace_s = unreachable_grace_s
        self.lost_confirm_s = lost_confirm_s
        self.client_id_prefix = client_id_prefix
        self._auth_headers: dict[str, str] = {}
        if token:
            register_secret(token)
            self._auth_headers["Authorization"] = f"Bearer {token}"
        elif basic_auth:
            user, password = basic_auth
            register_secret(password)
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            register_secret(raw)
            self._auth_headers["Authorization"] = f"Basic {raw}"
        self._http: httpx.AsyncClient | None = None
        self._jobs: dict[str, _Job] = {}
        self._cancelled: set[str] = set()
        self._events = EventSocket(
            f"{client_id_prefix}-{uuid.uuid4().hex}", self._open_ws, self._handle_message
        )

    # --- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> ComfyClient:
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._auth_headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            trust_env=False,  # never route a (tunnelled) ComfyUI through an environment proxy
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("ComfyClient must be used as an async context manager")
        return self._http

    # --- HTTP plumbing ---------------------------------------------------------------------------
    def _timeout_for(self, deadline: float | None) -> httpx.Timeout:
        t = self.timeout
        if deadline is not None:
            t = max(0.05, min(t, deadline - time.monotonic()))
        return httpx.Timeout(t, connect=min(t, 10.0))

    async def _request(
        self, method: str, path: str, *, deadline: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; transport failures and proxy 5xx become ComfyUnavailable, 401/403 ComfyAuthError."""
        try:
            resp = await self.http.request(method, path, timeout=self._timeout_for(deadline), **kwargs)
        except httpx.TransportError as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self._safe_url()} is unreachable ({type(exc).__name__}: {redact(str(exc))})"
            ) from exc
        self._check_status(resp, path)
        return resp

    def _check_status(self, resp: httpx.Response, path: str) -> None:
        if resp.status_code in (401, 403):
            raise ComfyAuthError(
                f"ComfyUI at {self._safe_url()} refused the credentials ({resp.status_code} on {path})"
            )
        if resp.status_code in _RETRYABLE_STATUS:
            raise ComfyUnavailable(f"ComfyUI at {self._safe_url()} answered {resp.status_code} on {path}")

    def _safe_url(self) -> str:
        return redact(self.base_url)

    async def _get_json(
        self,
        path: str,
        *,
        deadline: float | None = None,
        params: Mapping[str, Any] | None = None,
        attempts: int = 3,
    ) -> Any:
        """Idempotent GET, retried with backoff on ComfyUnavailable (bounded by attempts and deadline)."""
        stop = tenacity.stop_after_attempt(attempts)
        if deadline is not None:
            stop = stop | tenacity.stop_after_delay(max(0.0, deadline - time.monotonic()))
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(ComfyUnavailable),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
            stop=stop,
            reraise=True,
        ):
            with attempt:
                resp = await self._request("GET", path, deadline=deadline, params=params)
                if resp.status_code >= 500:  # a GET cannot be malformed: a 500 or a proxy's 52x is transient
                    raise ComfyUnavailable(f"GET {path} answered {resp.status_code}")
                if resp.status_code != 200:
                    raise ComfyProtocolError(f"GET {path} answered {resp.status_code}")
                try:
                    return resp.json()
                except ValueError as exc:
                    raise ComfyProtocolError(f"GET {path} answered invalid JSON") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # --- simple endpoints ------------------------------------------------------------------------
    async def system_stats(self, *, deadline: float | None = None) -> dict[str, Any]:
        return await self._get_json("/system_stats", deadline=deadline, attempts=1)

    async def wait_ready(self, deadline: float) -> dict[str, Any]:
        """Poll /system_stats until ComfyUI answers; refused/502 while it boots are retried until deadline."""
        delay = 0.05
        last: Exception | None = None
        while True:
            try:
                return await self.system_stats(deadline=deadline)
            except ComfyAuthError:
                raise
            except (ComfyUnavailable, ComfyProtocolError) as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ComfyUnavailable(f"ComfyUI did not become ready before the deadline: {last}") from last
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)

    async def object_info(self, node_type: str | None = None) -> dict[str, Any]:
        path = "/object_info" if node_type is None else f"/object_info/{node_type}"
        return await self._get_json(path)

    async def check_capabilities(
        self, node_types: Iterable[str], models: Iterable[Any] = (), *, custom_nodes: Iterable[Any] = ()
    ) -> dict[str, Any]:
        """Fail early, naming the missing node type (and its custom node) or model file and folder.

        `models`: ModelFile-like objects (`.name`, `.folder`) or (name, folder) tuples. `custom_nodes`:
        objects with `.name` and `.node_types`, used only to say which custom node to install.
        Returns the object_info it checked against.
        """
        info = await self.object_info()
        check_object_info(info, node_types, models, custom_nodes)
        return info

    async def queue(self) -> dict[str, Any]:
        return await self._get_json("/queue")

    async def history(self, prompt_id: str, *, deadline: float | None = None) -> dict[str, Any] | None:
        """The history entry of one prompt, or None while it is queued/running (or unknown)."""
        data = await self._get_json(f"/history/{prompt_id}", deadline=deadline, attempts=1)
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    async def free_memory(self, *, unload_models: bool = True) -> None:
        """POST /free: what to do after an out-of-memory error, keeping the instance."""
        await self._request("POST", "/free", json={"unload_models": unload_models, "free_memory": True})

    async def interrupt(self, prompt_id: str | None = None) -> None:
        body = {"prompt_id": prompt_id} if prompt_id else None
        await self._request("POST", "/interrupt", json=body)

    # --- upload ----------------------------------------------------------------------------------
    async def upload_image(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        overwrite: bool = False,
        subfolder: str = "",
    ) -> str:
        """Upload to ComfyUI's input folder (streamed multipart) and return the name it was stored as.

        ComfyUI keeps the name for identical content and renames (`x (1).png`) for different content, so
        always use the returned name in the graph.
        """
        path = Path(path)
        data = {"overwrite": "true" if overwrite else "false"}
        if subfolder:
            data["subfolder"] = subfolder
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(ComfyUnavailable),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
            stop=tenacity.stop_after_attempt(3),
            reraise=True,
        ):
            with attempt:
                with _open_read(path) as fh:  # httpx reads the file part in chunks while sending
                    files = {"image": (name or path.name, fh, _image_content_type(path))}
                    resp = await self._request("POST", "/upload/image", files=files, data=data)
        if resp.status_code != 200:
            raise ComfyProtocolError(f"upload of {path.name} failed with HTTP {resp.status_code}")
        body = _json_or_none(resp)
        if not isinstance(body, dict) or not body.get("name"):
            raise ComfyProtocolError(
                f"upload of {path.name} answered without a stored name: {redact(resp.text[:200])!r}"
            )
        stored = str(body["name"])
        return f"{body['subfolder']}/{stored}" if body.get("subfolder") else stored

    # --- run -------------------------------------------------------------------------------------
    async def run(
        self,
        graph: Mapping[str, Any],
        *,
        deadline: float,
        on_progress: ProgressCallback | None = None,
        progress_nodes: list[str] | None = None,
        on_submitted: Callable[[str], None] | None = None,
        extra_data: Mapping[str, Any] | None = None,
        keep_running_on_cancel: Callable[[], bool] | None = None,
    ) -> PromptResult:
        """Submit `graph` and follow it to completion; raise a typed error otherwise.

        `deadline` is a `time.monotonic()` value: past it the prompt is cancelled and ComfyTimeout raised.
        `progress_nodes` (the sampler node ids, in execution order) drive the 0..1 fraction given to
        `on_progress`. `on_submitted(prompt_id)` is called as soon as ComfyUI accepted the prompt.
        If the caller cancels run(), the prompt is cancelled on the server too, unless
        `keep_running_on_cancel()` says otherwise (a graceful shutdown: the prompt keeps the GPU and the
        next process re-attaches to it).
        """
        client_id = self._events.client_id
        proposed = str(uuid.uuid4())
        try:
            await self._events.ensure(deadline)  # BEFORE the POST: events go only to a connected clientId
        except ComfyAuthError:
            raise
        except ComfyUnavailable as exc:
            # /prompt may still work (a proxy that blocks upgrades): follow through /history alone
            log.warning("no WebSocket to ComfyUI (%s); following the prompt through /history", exc)
        job = _Job(proposed, client_id, ProgressTracker(proposed, graph, progress_nodes), on_progress)
        await self._events.register(job)
        try:
            prompt_id = await self._submit(graph, client_id, proposed, extra_data, deadline)
        except asyncio.CancelledError:
            # Cancelled while the POST was in flight: ComfyUI may have queued it under the id we proposed.
            # Never leave an unknown prompt on the GPU: record it for re-attachment, or cancel it.
            if keep_running_on_cancel is not None and keep_running_on_cancel():
                if on_submitted is not None:
                    on_submitted(proposed)
            else:
                await self._cancel_quietly(proposed)
                self._cancelled.discard(proposed)
            raise
        finally:
            self._events.unregister(proposed)
        job.prompt_id = job.tracker.prompt_id = prompt_id
        await self._events.register(job)
        self._jobs[prompt_id] = job
        try:
            if on_submitted is not None:
                on_submitted(prompt_id)
            result = await self._follow(job, deadline)
            final = job.tracker.finish()
            if final is not None:
                await self._emit(job, final)
            return result
        except (ExecutionError, PromptInterrupted, ComfyUnavailable):
            raise  # the prompt is over (or ComfyUI is gone): nothing to cancel
        except asyncio.CancelledError:
            if keep_running_on_cancel is not None and keep_running_on_cancel():
                log.info("prompt %s left running on ComfyUI (shutdown): it will be re-attached", prompt_id)
            else:
                await self._cancel_quietly(prompt_id)
            raise
        except BaseException:
            # deadline, a bug in a callback: the prompt must not keep the GPU busy
            await self._cancel_quietly(prompt_id)
            raise
        finally:
            self._jobs.pop(prompt_id, None)
            self._cancelled.discard(prompt_id)
            self._events.unregister(prompt_id)

    async def _open_ws(self, client_id: str, deadline: float | None) -> ClientConnection:
        url = _ws_url(self.base_url) + f"/ws?clientId={client_id}"
        open_timeout = (
            self.timeout if deadline is None else max(0.05, min(self.timeout, deadline - time.monotonic()))
        )
        try:
            ws = await connect(
                url,
                additional_headers=self._auth_headers or None,
                open_timeout=open_timeout,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                max_size=64 * 1024 * 1024,
                max_queue=256,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ComfyAuthError(
                    f"ComfyUI at {self._safe_url()} refused the WebSocket credentials ({status})"
                ) from exc
            raise ComfyUnavailable(f"ComfyUI WebSocket handshake failed with HTTP {status}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ComfyUnavailable(
                f"ComfyUI WebSocket at {self._safe_url()} is unreachable ({type(exc).__name__})"
            ) from exc
        # The first frame is the server's `status` greeting: once it is here the socket is registered
        # under our clientId, so events of the prompt we post next cannot miss it.
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout=min(1.0, open_timeout))
        return ws

    async def _submit(
        self,
        graph: Mapping[str, Any],
        client_id: str,
        prompt_id: str,
        extra_data: Mapping[str, Any] | None,
        deadline: float,
    ) -> str:
        """POST /prompt proposing our own prompt_id (known before the answer, so no event is unrouted)."""
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        try:
            resp = await self._request("POST", "/prompt", deadline=deadline, json=body)
        except ComfyUnavailable:
            # The request may have reached ComfyUI before the connection broke: never queue it twice.
            if await self._known_prompt(prompt_id, deadline):
                return prompt_id
            raise
        if resp.status_code == 400:
            body_json = _json_or_none(resp)
            if not isinstance(body_json, dict):
                raise ComfyProtocolError("ComfyUI rejected the prompt with HTTP 400 and no details")
            raise PromptValidationError(body_json.get("error"), body_json.get("node_errors"))
        if resp.status_code != 200:
            raise ComfyProtocolError(
                f"ComfyUI could not parse the prompt (HTTP {resp.status_code}): {resp.text[:200]}"
            )
        answer = _json_or_none(resp)
        if not isinstance(answer, dict) or "prompt_id" not in answer:
            raise ComfyProtocolError("POST /prompt answered without a prompt_id")
        prompt_id = str(answer["prompt_id"])
        if answer.get("node_errors"):
            # ComfyUI queued only the valid output branches: the result would silently lack outputs.
            await self._cancel_quietly(prompt_id)
            raise PromptValidationError(
                {"type": "prompt_outputs_failed_validation", "message": "some outputs failed validation"},
                answer["node_errors"],
            )
        return prompt_id

    async def _known_prompt(self, prompt_id: str, deadline: float) -> bool:
        try:
            if _queue_position(await self._get_json("/queue", deadline=deadline), prompt_id) is not None:
                return True
            return await self.history(prompt_id, deadline=deadline) is not None
        except ComfyError:
            return False

    # --- following a prompt ----------------------------------------------------------------------
    async def _follow(self, job: _Job, deadline: float) -> PromptResult:
        next_poll = time.monotonic() + self.poll_interval_s
        unreachable_since: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ComfyTimeout(
                    f"prompt {job.prompt_id} did not finish before its deadline "
                    f"(progress {job.tracker.fraction:.0%}); it was cancelled"
                )
            if not (job.success or job.error or job.interrupted or job.done_marker or job.poll_now):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.wake.wait(), timeout=max(0.0, min(next_poll, deadline) - now))
                job.wake.clear()
            if job.error is not None:
                raise ExecutionError.from_event(job.error)
            if job.interrupted is not None:
                raise _interrupted(job.prompt_id, job.interrupted)
            if job.success or job.done_marker:
                return await self._result_after_success(job, deadline)
            ws_down = not self._events.alive
            if not ws_down and not job.poll_now and time.monotonic() < next_poll:
                continue
            job.poll_now = False
            try:
                result = await self._poll_once(job, deadline, ws_down)
                unreachable_since = None
            except ComfyUnavailable as exc:
                if isinstance(exc, PromptLost):
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since >= self.unreachable_grace_s:
                    raise ComfyUnavailable(
                        f"ComfyUI stopped answering while prompt {job.prompt_id} ran: {exc}"
                    ) from exc
                result = None
            if result is not None:
                return result
            # a dropped socket with ComfyUI unreachable: poll faster so a dead server fails fast
            interval = self.poll_interval_s if not ws_down else min(self.poll_interval_s, 0.5)
            if job.absent_since is not None:
                interval = min(interval, self.lost_confirm_s)
            next_poll = time.monotonic() + interval

    async def _poll_once(self, job: _Job, deadline: float, ws_down: bool) -> PromptResult | None:
        """history -> queue -> history: finished, still queued (reopen a dropped socket), or lost."""
        entry = await self.history(job.prompt_id, deadline=deadline)
        if entry is not None:
            return self._result_from_history(job, entry)
        queued = _queue_position(await self._get_json("/queue", deadline=deadline, attempts=1), job.prompt_id)
        if queued is not None:
            job.absent_since = None
            if ws_down:
                await self._reconnect_ws(job, deadline)
            elif queued == "running" and not job.heard:
                await self._check_deaf_socket(job, deadline)
            return None
        # Leaving the queue and entering history happen together, so re-reading history now decides.
        entry = await self.history(job.prompt_id, deadline=deadline)
        if entry is not None:
            return self._result_from_history(job, entry)
        if job.cancelled_by_us or job.prompt_id in self._cancelled:
            raise PromptInterrupted(job.prompt_id, f"prompt {job.prompt_id} was cancelled before it ran")
        if job.success or job.done_marker:
            return None  # success seen on the socket; history lags (handled by the caller)
        # Absent from both: lost, unless history merely lags behind the queue. Confirm once, a moment later.
        now = time.monotonic()
        if job.absent_since is None:
            job.absent_since = now
        if now - job.absent_since < self.lost_confirm_s:
            return None
        raise PromptLost(
            f"prompt {job.prompt_id} vanished from ComfyUI's queue and history "
            "(ComfyUI restarted or crashed); submit it again"
        )

    async def _check_deaf_socket(self, job: _Job, deadline: float) -> None:
        """Our prompt runs (execution_start is its first event) but the open socket brought nothing of
        it for a whole poll interval: ComfyUI no longer routes our clientId to it (a stale socket with
        the same clientId ended after our reconnect). Reopen it, or every later job stays deaf too."""
        now = time.monotonic()
        if job.unheard_running_since is None:
            job.unheard_running_since = now
            return
        if now - job.unheard_running_since < self.poll_interval_s:
            return
        job.unheard_running_since = None
        log.warning("WebSocket is up but silent while %s runs; reopening it", job.prompt_id)
        try:
            await self._events.reopen(deadline)
        except ComfyAuthError:
            raise
        except ComfyUnavailable as exc:
            log.info(
                "reopening the WebSocket for %s failed (%s); following /history only", job.prompt_id, exc
            )

    async def _reconnect_ws(self, job: _Job, deadline: float) -> None:
        """Same clientId again: ComfyUI routes the rest of the prompt's events to the new socket."""
        try:
            await self._events.ensure(deadline)
        except ComfyAuthError:
            raise
        except ComfyUnavailable as exc:
            log.info(
                "reopening the WebSocket for %s failed (%s); following /history only", job.prompt_id, exc
            )
            return
        log.info("WebSocket for prompt %s reconnected", job.prompt_id)

    async def _handle_message(self, job: _Job, msg_type: str, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or data.get("prompt_id") not in (None, job.prompt_id):
            return
        if msg_type == "status":
            return
        job.heard = True
        progress = job.tracker.feed(msg_type, data)
        if msg_type == "executed" and data.get("node") is not None:
            job.ws_outputs[str(data["node"])] = data.get("output") or {}
        elif msg_type == "execution_cached":
            job.cached = [str(n) for n in data.get("nodes") or []]
        elif msg_type == "execution_success":
            job.success = True
            job.wake.set()
        elif msg_type == "execution_error":
            job.error = data
            job.wake.set()
        elif msg_type == "execution_interrupted":
            job.interrupted = data
            job.wake.set()
        elif msg_type == "executing" and data.get("node") is None and data.get("prompt_id") == job.prompt_id:
            job.done_marker = True
            job.wake.set()
        if progress is not None:
            await self._emit(job, progress)

    async def _emit(self, job: _Job, progress: Progress) -> None:
        if job.on_progress is None:
            return
        try:
            maybe = job.on_progress(progress)
            if inspect.isawaitable(maybe):
                await maybe
        except Exception:  # a broken progress sink must not fail the job
            log.exception("on_progress callback failed for prompt %s", job.prompt_id)

    async def _result_after_success(self, job: _Job, deadline: float) -> PromptResult:
        """Success is known; /history may still lag. Poll it fast until the outputs are there."""
        if not job.done_marker and self._events.alive:
            # ComfyUI writes history, then sends `executing {node: null}`: wait briefly for that marker.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wait_marker(job), timeout=min(0.25, max(0.0, deadline - time.monotonic()))
                )
        grace_end = min(deadline, time.monotonic() + self.history_grace_s)
        delay = 0.02
        while True:
            try:
                entry = await self.history(job.prompt_id, deadline=deadline)
            except ComfyUnavailable:
                entry = None
            if entry is not None:
                has_outputs = bool(find_outputs(entry.get("outputs") or {}, include_temp=True))
                if has_outputs or not job.ws_outputs or _status_str(entry) == "error":
                    return self._result_from_history(job, entry)
            now = time.monotonic()
            if now >= grace_end:
                if now >= deadline:
                    raise ComfyTimeout(
                        f"prompt {job.prompt_id} finished but /history did not list it before the deadline"
                    )
                if job.success and job.ws_outputs:
                    log.warning(
                        "history of %s still empty after %.0fs; using the outputs the WebSocket reported",
                        job.prompt_id,
                        self.history_grace_s,
                    )
                    return self._build_result(
                        job,
                        job.ws_outputs,
                        {"status_str": "success", "completed": True, "messages": []},
                        None,
                    )
                if entry is not None:
                    return self._result_from_history(job, entry)
                raise ComfyProtocolError(
                    f"ComfyUI reported success for {job.prompt_id} but /history never "
                    f"listed it within {self.history_grace_s:.0f}s"
                )
            await asyncio.sleep(min(delay, grace_end - now))
            delay = min(delay * 1.5, 0.5)

    async def _wait_marker(self, job: _Job) -> None:
        while not job.done_marker and self._events.alive:
            job.wake.clear()
            await job.wake.wait()

    def _result_from_history(self, job: _Job, entry: Mapping[str, Any]) -> PromptResult:
        status = entry.get("status") or {}
        if _status_str(entry) == "error":
            for event, data in status.get("messages") or []:
                if event == "execution_error":
                    raise ExecutionError.from_event(data)
                if event == "execution_interrupted":
                    raise _interrupted(job.prompt_id, data)
            raise ComfyProtocolError(f"prompt {job.prompt_id} failed without an error message")
        prompt = entry.get("prompt") or []
        number = prompt[0] if isinstance(prompt, list) and prompt else None
        return self._build_result(job, entry.get("outputs") or {}, status, number)

    def _build_result(
        self, job: _Job, outputs: Mapping[str, Any], status: Mapping[str, Any], number: Any
    ) -> PromptResult:
        cached = job.cached or _cached_from_status(status)
        return PromptResult(
            prompt_id=job.prompt_id,
            outputs=find_outputs(outputs),
            raw_outputs=dict(outputs),
            status=dict(status),
            cached_nodes=cached,
            number=number,
            client_id=job.client_id,
        )

    # --- cancel ----------------------------------------------------------------------------------
    async def cancel(self, prompt_id: str) -> CancelOutcome:
        """Delete from the pending queue; interrupt only if OUR prompt is the one running.

        A global /interrupt would kill whatever runs, possibly another tenant's job, and ComfyUI answers
        200 to everything, so /queue is read before and after the delete to know what really happened:
        "removed" (was pending), "interrupted" (was running), "not_found" (already finished or unknown).
        A run() following this prompt then raises PromptInterrupted.
        """
        self._cancelled.add(prompt_id)
        job = self._jobs.get(prompt_id)
        before = _queue_position(await self._get_json("/queue"), prompt_id)
        outcome: CancelOutcome = "not_found"
        for _ in range(3):
            await self._request("POST", "/queue", json={"delete": [prompt_id]})
            after = _queue_position(await self._get_json("/queue"), prompt_id)
            if after == "running":
                await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
                outcome = "interrupted"
                break
            if after is None:
                outcome = "removed" if before == "pending" else "not_found"
                break
        else:
            raise ComfyProtocolError(f"ComfyUI kept prompt {prompt_id} in its queue after a delete")
        if job is not None:
            job.cancelled_by_us = True
            job.poll_now = True
            job.wake.set()
        return outcome

    async def _cancel_quietly(self, prompt_id: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.cancel(prompt_id)), timeout=5.0)

    # --- outputs ---------------------------------------------------------------------------------
    async def download_outputs(
        self,
        result: PromptResult,
        dest_dir: str | os.PathLike[str],
        *,
        outputs: Iterable[OutputFile] | None = None,
    ) -> list[Path]:
        """Stream each result file through /view to `dest_dir` (chunks to a .part, length checked, rename)."""
        dest = Path(dest_dir)
        _mkdir(dest)
        paths: list[Path] = []
        used: set[str] = set()
        for out in outputs if outputs is not None else result.outputs:
            name = Path(out.filename).name
            if name in used:
                name = f"{out.node_id}_{out.subfolder.replace('/', '_')}_{name}"
            used.add(name)
            paths.append(await self.download(out, dest / name))
        return paths

    async def download(self, out: OutputFile, target: str | os.PathLike[str], *, attempts: int = 3) -> Path:
        """One output to `target`. A broken transfer resumes with a Range request from the .part size."""
        target = Path(target)
        part = target.with_name(target.name + ".part")
        part.unlink(missing_ok=True)
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                await self._download_to(out, part)
                os.replace(part, target)
                return target
            except (ComfyUnavailable, DownloadError) as exc:
                if not exc.retryable:
                    part.unlink(missing_ok=True)
                    raise
                last = exc
                log.info("download of %s interrupted (%s), attempt %d", out.filename, exc, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {out.filename} from ComfyUI: {last}") from last

    async def _download_to(self, out: OutputFile, part: Path) -> None:
        have = _size_or_zero(part)
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with self.http.stream("GET", "/view", params=out.view_params(), headers=headers) as resp:
                self._check_status(resp, "/view")
                if resp.status_code == 404:
                    raise DownloadError(
                        f"ComfyUI has no {out.type} file {out.subfolder}/{out.filename}", retryable=False
                    )
                if resp.status_code not in (200, 206):
                    raise DownloadError(f"/view answered {resp.status_code} for {out.filename}")
                if resp.status_code == 200:
                    have = 0  # server ignored the Range: start over
                elif _range_start(resp) != have:
                    # a 206 that does not continue where the .part ends would splice wrong bytes in
                    _discard(part)
                    raise DownloadError(
                        f"/view answered {out.filename} from another offset than byte {have}; starting over"
                    )
                expected = _expected_total(resp, have)
                written = have
                with _open_write(part, have) as fh:
                    async for chunk in resp.aiter_bytes(_CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
                    fh.truncate()
        except httpx.TransportError as exc:
            raise DownloadError(f"transfer of {out.filename} broke: {type(exc).__name__}") from exc
        if expected is not None and written != expected:
            raise DownloadError(f"{out.filename}: got {written} bytes, ComfyUI announced {expected}")

    async def extract_last_frame(
        self, video_path: str | os.PathLike[str], png_path: str | os.PathLike[str]
    ) -> Path:
        """The video's last frame as PNG (decoded in a worker thread; one frame in memory at a time)."""
        return await asyncio.to_thread(_extract_last_frame, video_path, png_path)


# --- small pure helpers ---------------------------------------------------------------------------
def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


def _queue_position(queue: Any, prompt_id: str) -> Literal["running", "pending"] | None:
    if not isinstance(queue, dict):
        return None
    for key, where in (("queue_running", "running"), ("queue_pending", "pending")):
        for item in queue.get(key) or []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return where  # type: ignore[return-value]
    return None


def _status_str(entry: Mapping[str, Any]) -> str:
    return str((entry.get("status") or {}).get("status_str") or "success")


def _cached_from_status(status: Mapping[str, Any]) -> list[str]:
    for item in status.get("messages") or []:
        if isinstance(item, list) and len(item) == 2 and item[0] == "execution_cached":
            return [str(n) for n in (item[1] or {}).get("nodes") or []]
    return []


def _interrupted(prompt_id: str, data: Mapping[str, Any]) -> PromptInterrupted:
    node_id, node_type = data.get("node_id"), data.get("node_type")
    where = f" at node {node_id} ({node_type})" if node_id else ""
    return PromptInterrupted(
        prompt_id, f"prompt {prompt_id} was interrupted{where}", node_id=node_id, node_type=node_type
    )


def _expected_total(resp: httpx.Response, offset: int) -> int | None:
    length = resp.headers.get("Content-Length")
    if length is None or resp.headers.get("Content-Encoding"):
        return None
    try:
        return offset + int(length)
    except ValueError:
        return None


def _range_start(resp: httpx.Response) -> int | None:
    """First byte of a 206 body (`Content-Range: bytes START-END/TOTAL`), None if unreadable."""
    value = resp.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit.strip() == "bytes" and start.isdigit() else None


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _image_content_type(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
        path.suffix.lower(), "application/octet-stream"
    )


def _open_read(path: Path) -> BinaryIO:
    return path.open("rb")


def _open_write(path: Path, offset: int) -> BinaryIO:
    fh = path.open("r+b" if offset else "wb")
    fh.seek(offset)
    return fh


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
