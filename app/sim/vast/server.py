"""The Vast.ai API emulator: a real aiohttp server speaking the REST dialect of console.vast.ai.

State lives in one event loop (no locks beyond the per-instance boot lock). Middleware applies, in order:
call recording, fault switches (5xx, 429 bursts), authentication, per-endpoint rate limits. Sim-only
routes under `/__sim/` (faults, state, log uploads) need no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app.sim.vast import api_account, api_instances, api_offers
from app.sim.vast.backend import InstanceBackend
from app.sim.vast.faults import VastFaults
from app.sim.vast.http import EMU, error, json_body, too_frequent
from app.sim.vast.instances import SimInstance
from app.sim.vast.lifecycle import Lifecycle, Timings
from app.sim.vast.market import default_market
from app.sim.vast.ratelimit import REAL_THRESHOLDS, RateLimiter

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Call:
    """One API request as the emulator saw it (for tests: "create was called exactly once")."""

    route: str
    method: str
    path: str
    status: int | None = None  # None: the connection was dropped without an answer


class VastEmulator:
    """`url = await VastEmulator(offers, api_key=K).start()`; point a Vast client at `url`.

    `time_scale` multiplies emulated durations (boot takes ~50 emulated seconds); 0 = transitions happen as
    soon as they are observed. `rate_limits=True` enforces Vast's published per-endpoint thresholds (or
    pass `{route: seconds}`, optionally with `send_retry_after`); `search_quota` caps searches per identity
    and UTC day. Routes: search, create, show, list, list_v0, manage, destroy, ssh, ssh_keys, logs, user.
    """

    def __init__(
        self,
        offers: list[dict[str, Any]] | None = None,
        *,
        api_key: str,
        time_scale: float = 0.0,
        backend: InstanceBackend | None = None,
        faults: VastFaults | None = None,
        credit: float = 100.0,
        rate_limits: bool | dict[str, float] = False,
        search_quota: int | None = None,
        send_retry_after: bool = False,
        logs_delay_s: float = 0.3,
        bad_key_status: int = 401,
        timings: Timings | None = None,
        public_host: str = "127.0.0.1",
        tick_s: float = 0.05,
        ids: Callable[[], int] | None = None,
    ) -> None:
        self.api_key = api_key
        self.market: dict[int, dict[str, Any]] = {
            int(o["id"]): o for o in (offers if offers is not None else default_market())
        }
        self.faults = faults or VastFaults()
        self.credit = float(credit)
        self.spent = 0.0
        self.backend = backend
        self.lifecycle = Lifecycle(time_scale=time_scale, backend=backend, timings=timings, host=public_host)
        thresholds = REAL_THRESHOLDS if rate_limits is True else (rate_limits or {})
        self.limiter = RateLimiter(thresholds, search_quota)
        self.send_retry_after = send_retry_after  # Vast's docs say it sends none; the SDK honours one
        self.logs_delay_s = logs_delay_s
        self.bad_key_status = bad_key_status
        self.tick_s = tick_s
        self.instances: dict[int, SimInstance] = {}  # live (not destroyed) instances
        self.destroyed: dict[int, SimInstance] = {}
        self.rented_by: dict[int, int] = {}  # offer id -> our instance id
        self.taken: set[int] = set()  # offers rented by "someone else"
        self.account_keys: list[dict[str, Any]] = []
        self.log_uploads: dict[str, tuple[float, str]] = {}
        self.calls: list[Call] = []
        self.dropped: set[int] = set()  # ids of requests whose connection a fault dropped
        self.url = ""
        # instance ids: in memory by default; the simulated world passes a persisted sequence (app.sim.idseq)
        self._ids = itertools.count(27_400_001)
        self._next_id: Callable[[], int] = ids or (lambda: next(self._ids))
        self._key_ids = itertools.count(41_001)
        self._billed_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._advancing: dict[int, asyncio.Task[None]] = {}
        # (method, path, handler) mounted beside /__sim/faults at start (the world's store switches)
        self.extra_routes: list[tuple[str, str, Handler]] = []

    @property
    def time_scale(self) -> float:
        """Emulated-time multiplier; settable while running (0 = transitions at the next observation)."""
        return self.lifecycle.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self.bill()  # charge the time so far at the old scale
        self.lifecycle.time_scale = float(value)

    # ------------------------------------------------------------------ server
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware])
        app[EMU] = self
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound_port}"
        self._billed_at = time.monotonic()
        self._ticker = asyncio.create_task(self._tick(), name="sim-vast-ticker")
        return self.url

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in self._advancing.values():
            task.cancel()
        self._advancing.clear()
        for inst in list(self.instances.values()):
            try:  # tear backends down; a hung backend must not hang the emulator's shutdown
                await asyncio.wait_for(self.lifecycle.stop(inst, "emulator shut down"), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("sim vast: teardown of instance %s timed out at shutdown", inst.id)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> VastEmulator:
        if not self.url:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _routes(self, app: web.Application) -> None:
        def add(method: str, path: str, route: str, handler: Handler, auth: str = "required") -> None:
            wrapped = _tag(handler, route, auth)
            app.router.add_route(method, path, wrapped)
            if path.endswith("/"):  # clients send both spellings (the SDK: `/users/current`)
                app.router.add_route(method, path.rstrip("/"), wrapped)

        v0 = "/api/v0"
        add("POST", f"{v0}/bundles/", "search", api_offers.search_post, auth="optional")
        add("GET", f"{v0}/bundles/", "search", api_offers.search_get, auth="optional")
        add("PUT", f"{v0}/search/asks/", "search", api_offers.search_post, auth="optional")
        add("PUT", f"{v0}/asks/{{id}}/", "create", api_offers.create)
        add("PUT", f"{v0}/instances/request_logs/{{id}}/", "logs", api_instances.request_logs)
        add("GET", f"{v0}/instances/", "list_v0", api_instances.list_v0)
        add("PUT", f"{v0}/instances/", "manage", api_instances.manage_bulk)
        add("DELETE", f"{v0}/instances/", "destroy", api_instances.destroy_bulk)
        add("GET", f"{v0}/instances/{{id}}/", "show", api_instances.show)
        add("PUT", f"{v0}/instances/{{id}}/", "manage", api_instances.manage)
        add("DELETE", f"{v0}/instances/{{id}}/", "destroy", api_instances.destroy)
        add("POST", f"{v0}/instances/{{id}}/ssh/", "ssh", api_instances.attach_ssh)
        add("GET", f"{v0}/instances/{{id}}/ssh/", "ssh", api_instances.list_instance_ssh)
        add("DELETE", f"{v0}/instances/{{id}}/ssh/{{key_id}}/", "ssh", api_instances.detach_ssh)
        add("GET", "/api/v1/instances/", "list", api_instances.list_v1)
        add("GET", f"{v0}/ssh/", "ssh_keys", api_account.list_keys)
        add("POST", f"{v0}/ssh/", "ssh_keys", api_account.create_key)
        add("DELETE", f"{v0}/ssh/{{id}}/", "ssh_keys", api_account.delete_key)
        add("GET", f"{v0}/users/current/", "user", api_account.current_user)
        app.router.add_get("/__sim/instance_logs/{token}.log", api_instances.fetch_logs)
        app.router.add_get("/__sim/faults", self._get_faults)
        app.router.add_post("/__sim/faults", self._post_faults)
        app.router.add_get("/__sim/state", self._get_state)
        for method, path, handler in self.extra_routes:
            app.router.add_route(method, path, handler)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        tagged = request.match_info.handler
        route = getattr(tagged, "_vast_route", None)
        if route is None:
            return await handler(request)
        call = Call(route=route, method=request.method, path=request.path)
        self.calls.append(call)
        response = await self._guard(request, route, getattr(tagged, "_vast_auth", "required"))
        if response is None:
            response = await handler(request)
        dropped = id(request) in self.dropped
        self.dropped.discard(id(request))
        call.status = None if dropped else response.status
        return response

    async def _guard(self, request: web.Request, route: str, auth: str) -> web.StreamResponse | None:
        status = self.faults.take_server_error(route)
        if status is not None:
            return error(status, "server_error", f"simulated {status} from the API gateway")
        if self.faults.take_rate_limit():
            return too_frequent(
                REAL_THRESHOLDS.get(route, 1.0),
                self.faults.rate_limit_retry_after,
                self.faults.rate_limit_body,
            )
        key = _presented_key(request)
        if key is None and auth == "required":
            return error(401, "auth_error", "Invalid user key")
        if key is not None and key != self.api_key and not self._instance_key_ok(key, request, route):
            return error(self.bad_key_status, "auth_error", "Invalid user key")
        # Vast's identity: bearer token + api_key parameter + client IP (each combination has its own budget)
        bearer = request.headers.get("Authorization", "")
        identity = f"{bearer}|{request.query.get('api_key', '')}@{request.remote}"
        threshold = self.limiter.check(route, identity)
        if threshold is not None:
            retry = self.limiter.remaining(route, identity) if self.send_retry_after else None
            return too_frequent(threshold, retry, self.faults.rate_limit_body)
        if route == "search":
            reset = self.limiter.take_search(identity)
            if reset is not None:
                return web.json_response(
                    {
                        "success": False,
                        "error": "search_quota_exceeded",
                        "msg": "Daily search quota exceeded.",
                    },
                    status=429,
                    headers={"X-RateLimit-Reset": str(reset)},
                )
        return None

    def _instance_key_ok(self, key: str, request: web.Request, route: str) -> bool:
        """An `instance_api_key` may only show/start/stop/destroy its own instance."""
        if route not in ("show", "manage", "destroy"):
            return False
        raw = request.match_info.get("id")
        inst = self.instances.get(int(raw)) if raw and raw.isdigit() else None
        return inst is not None and inst.instance_api_key == key

    # ------------------------------------------------------------------ sim-only routes
    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            inject = body.pop("inject", None)  # {"<instance id>": "<fault>"} for live instances
            self.faults.update(body)
            for raw_id, fault in (inject or {}).items():
                self.inject(int(raw_id), fault)
        except (ValueError, KeyError) as exc:
            return web.json_response({"success": False, "error": "invalid_args", "msg": str(exc)}, status=400)
        return web.json_response(self.faults.to_json())

    async def _get_state(self, request: web.Request) -> web.Response:
        await self.advance_all()
        self.bill()
        return web.json_response(
            {
                "simulated": True,
                "credit": self.credit,
                "spent": self.spent,
                "offers_available": len(self.market) - len(self.rented_by) - len(self.taken),
                "instances": {str(i): inst.render() for i, inst in self.instances.items()},
                "destroyed": sorted(self.destroyed),
                "calls": len(self.calls),
            }
        )

    # ------------------------------------------------------------------ state helpers
    def next_instance_id(self) -> int:
        return self._next_id()

    def new_key_record(self, key: str) -> dict[str, Any]:
        return {
            "id": next(self._key_ids),
            "user_id": api_account.USER_ID,
            "public_key": key,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "deleted_at": None,
        }

    def add_instance(self, inst: SimInstance) -> None:
        self.instances[inst.id] = inst
        self.rented_by[inst.offer_id] = inst.id

    def inject(self, instance_id: int, fault: str | None) -> None:
        """Give a live instance a fault now (see `VastFaults` for the names)."""
        from app.sim.vast.faults import INSTANCE_FAULTS

        if fault is not None and fault not in INSTANCE_FAULTS:
            raise ValueError(f"unknown instance fault {fault!r}")
        inst = self.instances.get(instance_id)
        if inst is None:
            raise KeyError(f"no live instance {instance_id}")
        self.lifecycle.inject(inst, fault)

    async def destroy_instance(self, instance_id: int) -> None:
        inst = self.instances.get(instance_id)
        if inst is None:
            return
        self.bill()
        await self.lifecycle.destroy(inst)
        self.instances.pop(instance_id, None)
        self.destroyed[instance_id] = inst
        self.rented_by.pop(inst.offer_id, None)
        if inst.fault == "offline":
            self.taken.add(inst.offer_id)  # the host is gone from the market

    async def push_key(self, inst: SimInstance, key: str) -> None:
        add = getattr(self.backend, "add_ssh_key", None)
        if inst.booted and add is not None:
            await add(inst.id, key)

    async def backend_logs(self, inst: SimInstance) -> str:
        fetch = getattr(self.backend, "logs", None)
        if fetch is None or not inst.booted:
            return ""
        try:
            return str(await fetch(inst.id) or "")
        except Exception as exc:
            return f"(simulated backend logs unavailable: {exc})"

    async def advance_all(self) -> None:
        live = list(self.instances.values())
        if live:
            await asyncio.gather(*(self.lifecycle.advance(inst) for inst in live))

    def bill(self) -> None:
        """Charge credit for the time since the last charge: GPU $/h while running, storage otherwise.

        Elapsed time is emulated time (real / time_scale; real time when time_scale is 0). At zero credit,
        running instances are stopped (Vast stops, it does not destroy)."""
        now = time.monotonic()
        elapsed = now - self._billed_at
        self._billed_at = now
        scale = self.lifecycle.time_scale
        hours = (elapsed / scale if scale > 0 else elapsed) / 3600.0
        if hours <= 0:
            return
        charge = 0.0
        for inst in self.instances.values():
            rate = (
                inst.dph_total
                if inst.phase == "running"
                else float(inst.offer.get("storage_total_cost") or 0.0)
            )
            charge += rate * hours
        self.credit -= charge
        self.spent += charge

    async def _stop_for_credit(self) -> None:
        for inst in list(self.instances.values()):
            if inst.phase == "running" or inst.intended_status == "running":
                await self.lifecycle.stop(inst, "Instance stopped: account credit exhausted (simulated)")

    def _advance_in_background(self) -> None:
        """Start transitions for every instance not already advancing (a slow boot blocks only itself)."""
        for inst in list(self.instances.values()):
            task = self._advancing.get(inst.id)
            if task is None or task.done():
                task = asyncio.create_task(self.lifecycle.advance(inst))
                task.add_done_callback(_log_failure)
                self._advancing[inst.id] = task
        for instance_id in [i for i, t in self._advancing.items() if t.done() and i not in self.instances]:
            self._advancing.pop(instance_id, None)

    async def _tick(self) -> None:
        while True:
            try:
                self._advance_in_background()
                self.bill()
                if self.credit <= 0:
                    await self._stop_for_credit()
                now = time.monotonic()
                for token in [t for t, (ready, _) in self.log_uploads.items() if now - ready > 3600]:
                    self.log_uploads.pop(token, None)
            except asyncio.CancelledError:
                raise
            except Exception:  # the ticker must never die; a bad backend is logged and retried
                log.exception("sim vast: ticker step failed")
            await asyncio.sleep(self.tick_s)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sim vast: instance transition failed", exc_info=task.exception())


def _tag(handler: Handler, route: str, auth: str) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    wrapped._vast_route = route  # type: ignore[attr-defined]
    wrapped._vast_auth = auth  # type: ignore[attr-defined]
    return wrapped


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("api_key")
