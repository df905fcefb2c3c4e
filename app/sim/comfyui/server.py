"""ComfyUI emulator: a real aiohttp HTTP + WebSocket server speaking ComfyUI 0.3.64's API.

Single worker, one prompt at a time, like the real PromptServer + prompt_worker. Routes answer with and
without the `/api` prefix. `/__sim/*` routes (not in ComfyUI) let tests flip fault switches and restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from app.sim.comfyui.executor import Crashed, Executor, QueueItem, RunResult
from app.sim.comfyui.faults import ComfyFaults
from app.sim.comfyui.hub import Client, Hub
from app.sim.comfyui.install import ComfyInstall
from app.sim.comfyui.routes import build_routes
from app.sim.comfyui.typed import convert_prompt

log = logging.getLogger(__name__)

MAX_UPLOAD_SIZE = 104857600
MAX_HISTORY = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ComfyEmulator:
    """A simulated ComfyUI over a real directory. `url = await emu.start()`, `await emu.stop()`."""

    def __init__(
        self,
        comfy_dir: Path,
        *,
        object_info: dict[str, Any],
        step_delay_s: float = 0.0,
        token: str | None = None,
        faults: ComfyFaults | None = None,
        video_pad_bytes: int | None = None,
        model_load_s: float = 0.0,
    ) -> None:
        self.model_load_s = model_load_s  # the first run after a (re)start loads the models this long
        self.models_loaded = False
        self.install = ComfyInstall(Path(comfy_dir), object_info)
        self.step_delay_s = step_delay_s
        self.token = token
        self.faults = faults if faults is not None else ComfyFaults()
        if video_pad_bytes is not None:
            self.faults.video_pad_bytes = video_pad_bytes
        self.hub = Hub(self.faults)
        self.executor = Executor(self)
        self.host = "127.0.0.1"
        self.port = 0
        self.crashed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()
        self._reset_state()

    # --- state ----------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.number = 0
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self._history_visible_at: dict[str, float] = {}
        self.executor.reset_cache()
        self.models_loaded = False  # a (re)started ComfyUI holds no model in memory
        self.started_at = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    async def queue_updated(self) -> None:
        await self.hub.send("status", {"status": self.queue_info()})

    def sorted_pending(self) -> list[QueueItem]:
        return sorted(self.pending, key=lambda item: (item.number, item.prompt_id))

    async def enqueue(self, item: QueueItem) -> None:
        self.pending.append(item)
        self._wakeup.set()
        await self.queue_updated()

    def visible_history(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {pid: h for pid, h in self.history.items() if self._history_visible_at.get(pid, 0.0) <= now}

    def _record_history(self, item: QueueItem, result: RunResult) -> None:
        if len(self.history) >= MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": result.outputs,
            "status": {
                "status_str": result.status_str,
                "completed": result.completed,
                "messages": [[event, data] for event, data in result.messages],
            },
            "meta": result.meta,
        }
        self._history_visible_at[item.prompt_id] = time.monotonic() + max(0.0, self.faults.history_lag_s)

    def interrupt(self, prompt_id: str | None) -> None:
        if prompt_id is None or (self.running is not None and self.running.prompt_id == prompt_id):
            self.executor.interrupt_requested = True
        else:
            log.info("interrupt for %s ignored: not the running prompt", prompt_id)

    def prepare_prompt(self, prompt: dict[str, Any], check: Any) -> dict[str, Any]:
        converted = getattr(check, "prompt", None)
        if isinstance(converted, dict) and converted:
            return converted
        return convert_prompt(prompt, self.install.effective_object_info())

    def file_exists(self, class_type: str, value: Any) -> bool:
        """LoadImage's VALIDATE_INPUTS: the annotated file exists under input/ (or output/, temp/)."""
        if not isinstance(value, str) or not value:
            return False
        kind = "input"
        for candidate in ("input", "output", "temp"):
            suffix = f" [{candidate}]"
            if value.endswith(suffix):
                value, kind = value[: -len(suffix)], candidate
        root = self.install.comfy_dir / kind
        path = (root / value).resolve()
        return os.path.commonpath((str(root), str(path))) == str(root) and path.is_file()

    # --- worker ---------------------------------------------------------------------------------
    async def _next_item(self) -> QueueItem:
        while not self.pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = self.sorted_pending()[0]
        self.pending.remove(item)
        return item

    async def _worker_loop(self) -> None:
        while True:
            item = await self._next_item()
            self.running = item
            await self.queue_updated()
            try:
                result = await self.executor.execute(item)
            except Crashed:
                self._spawn(self._crash())
                return
            except Exception:  # a bug in the emulator must not kill the queue
                log.exception("emulator failed to run prompt %s", item.prompt_id)
                result = RunResult("error", False, [])
            self.running = None
            self._record_history(item, result)
            await self.queue_updated()
            client_id = item.extra_data.get("client_id")
            if client_id is not None:
                await self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # --- lifecycle ------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[self._auth_mw, self._booting_mw])
        app.add_routes(build_routes(self))
        return app

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None or self._authorized(request):
            return await handler(request)
        return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="comfyui"'})

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.token}" or request.query.get("token") == self.token:
            return True
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError):
                _, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return password == self.token
        return False

    @web.middleware
    async def _booting_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        booting = time.monotonic() < self.started_at + self.faults.slow_start_s
        if booting and not request.path.startswith("/__sim/"):
            return web.Response(status=502, headers={"Server": "Caddy"})
        return await handler(request)

    async def _listen(self) -> None:
        self._runner = web.AppRunner(self._make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.host, self.port = host, port
        self.started_at = time.monotonic()
        self.crashed.clear()
        self._worker = asyncio.create_task(self._worker_loop())
        if self.faults.slow_start_s > 0 and self.faults.slow_start_mode == "refuse":
            if self.port == 0:
                self.port = _free_port(host)
            self._spawn(self._listen_later(self.faults.slow_start_s))
        else:
            await self._listen()
        return self.url

    async def _listen_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._listen()

    async def _close_listener(self) -> None:
        await self.hub.close_all()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _crash(self) -> None:
        """The process died mid-job: sockets cut, nothing listens, the queue and the prompt are gone."""
        self.running = None
        await self._close_listener()
        self._reset_state()
        self.crashed.set()
        delay = self.faults.crash_restart_after_s
        self.faults.crash_at_node = None
        if delay is not None:
            await asyncio.sleep(delay)
            await self.restart(hard=True)

    async def restart(self, *, hard: bool = True) -> None:
        """What a ComfyUI restart does: re-scan custom nodes, forget the queue, history and cache.
        `hard` also closes and re-opens the listener (same port)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if hard:
            await self._close_listener()
        else:
            await self.hub.close_all()
        self._reset_state()
        self.install.scan_nodes()
        self.crashed.clear()
        self._worker = asyncio.create_task(self._worker_loop())
        if hard:
            await self._listen()

    async def stop(self) -> None:
        for task in [self._worker, *self._bg]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._worker = None
        await self._close_listener()

    async def __aenter__(self) -> ComfyEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- websocket ------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_UPLOAD_SIZE)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        client = Client(sid, ws, request)
        self.hub.clients[sid] = client
        try:
            await self.hub.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await self.hub.send("executing", {"node": self.executor.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT and first:
                    first = False
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        data = msg.json()
                        if data.get("type") == "feature_flags":
                            client.feature_flags = dict(data.get("data") or {})
                            await self.hub.send("feature_flags", self.features(), sid)
        finally:
            # ComfyUI pops the sid whichever socket owns it now: an older connection with the same
            # clientId that ends after a reconnect takes the newer socket's routing with it.
            self.hub.clients.pop(sid, None)
        return ws

    @staticmethod
    def features() -> dict[str, Any]:
        return {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
