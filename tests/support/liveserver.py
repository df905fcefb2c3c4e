"""A real HTTP server (uvicorn on a loopback port) for browser tests, run in a thread with its own loop.

`LiveServer(make)` calls `make(port)`, an async context manager that yields `(app, handle)`: the ASGI app to
serve and anything the test wants to reach (the simulated world, the services). Everything the app
touches lives on the server thread's event loop; `call(coro_fn)` runs a coroutine there and returns its
result, so a test can look at the world without sharing a loop with the browser driver.

`sim_console(data_dir, token=...)`: the real product (build_services + create_app) attached to a simulated
world this test owns, the same way `comfyfleet serve` attaches to `comfyfleet sim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, make: Callable[[int], Any], *, start_timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._make = make
        self._timeout = start_timeout_s
        self._ready: Future = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.handle: Any = None
        self._thread = threading.Thread(target=self._run, name="liveserver", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._ready.result(self._timeout)  # raises what the server thread raised while starting
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def call(self, fn: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        """Run coroutine function `fn()` on the server's loop; its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._make(self.port) as (app, handle):
            self.handle = handle
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started:
                if task.done():
                    task.result()  # the server failed to start: raise why
                await asyncio.sleep(0.01)
            self._ready.set_result(None)
            await self._stop.wait()
            server.should_exit = True
            await task


def sim_console(data_dir: Path, *, token: str | None, **overrides: Any) -> Callable[[int], Any]:
    """A `make` for LiveServer: the product attached to a fresh simulated world, results served by it."""

    @contextlib.asynccontextmanager
    async def make(port: int) -> AsyncIterator[tuple[Any, Any]]:
        from app.api.app import create_app
        from app.config import Settings
        from app.jobs.wiring import build_services
        from app.sim.world import publish, start_world

        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite+aiosqlite:///{data_dir / 'comfyfleet.db'}",
            "provider": "sim",
            "sim_time_scale": 0.0,
            "allow_loopback_urls": True,
            "cleanup_interval_s": 0,
            "public_url": f"http://127.0.0.1:{port}",
            "api_token": token,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        world = await start_world(settings, attach=False)
        try:
            publish(world)
            services = await build_services(settings)
            await services.start()
            try:
                yield create_app(services, manage_lifecycle=False), (world, services)
            finally:
                await services.stop()
        finally:
            await world.stop()

    return make
