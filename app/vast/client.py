"""Async REST client for Vast.ai (and the emulator, which only differs by base URL).

Why not the official `vastai` SDK: it is synchronous, and it retries the create PUT on timeouts and 5xx,
which can rent a GPU twice. Here every read is retried (429 honouring Retry-After / X-RateLimit-Reset,
5xx, transport errors) under one total deadline, while `create_instance` is never resent once the request
may have reached the server: it raises `CreateAmbiguous`, and the caller looks the label up instead.

Shapes are defended at this edge: a list that is not a list is an error (a 410 on the old v0 list once
made other tools believe they had no instances and keep renting), `{"instances": null}` is "gone",
`ports` may be missing/null/{}/a list, and strings may carry stray whitespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from app.redact import redact, register_secret
from app.vast.errors import (
    AuthError,
    CreateAmbiguous,
    InvalidResponse,
    RateLimited,
    VastApiError,
    VastError,
    VastTransportError,
    classify,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://console.vast.ai"
PAGE_MAX = 25
_GONE_CODES = ("not_found", "no_such_instance")


class _Transport(VastTransportError):
    """Internal: a transport failure, with whether the request may have reached the server."""

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, VastApiError):
        return exc.status >= 500
    return isinstance(exc, VastTransportError)


def _strip_strings(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {k: _strip_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_strings(v) for v in value]
    return value


def normalize_ports(ports: Any) -> dict[str, list[dict[str, Any]]]:
    """Docker-style `{"22/tcp": [{"HostIp":..., "HostPort": "40122"}]}`; anything else becomes {}."""
    if not isinstance(ports, Mapping):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for key, bindings in ports.items():
        if isinstance(bindings, list):
            good = [b for b in bindings if isinstance(b, Mapping) and b.get("HostPort") not in (None, "")]
            if good:
                out[str(key).strip()] = [dict(b) for b in good]
    return out


def normalize_instance(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Strip strings and make `ports` always a dict, so callers never special-case the wire."""
    inst = _strip_strings(dict(raw))
    inst["ports"] = normalize_ports(inst.get("ports"))
    return inst


def host_port(instance: Mapping[str, Any], container_port: str) -> int | None:
    """Public host port mapped to `container_port` (e.g. "22/tcp"), or None if not (yet) mapped."""
    bindings = normalize_ports(instance.get("ports")).get(container_port)
    if not bindings:
        return None
    try:
        return int(str(bindings[0]["HostPort"]).strip())
    except (TypeError, ValueError):
        return None


class VastClient:
    """Vast.ai REST calls. Use as `async with VastClient(url, key) as client:`.

    `timeout` bounds each HTTP request; `retry_deadline_s` bounds all attempts of one call.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_deadline_s: float = 60.0,
        max_attempts: int = 8,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "comfyfleet",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        register_secret(self._api_key)
        self.timeout = timeout
        self.retry_deadline_s = retry_deadline_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._transport = transport
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout), transport=transport
        )

    def __repr__(self) -> str:  # never the key
        return f"VastClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> VastClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing ----------------------------------------------------------------------------------

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        op: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        query: dict[str, str] = {}
        for key, value in (params or {}).items():
            if value is None:
                continue
            query[key] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        try:
            resp = await self._http.request(method, path, params=query or None, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Transport(
                f"{op}: cannot connect to {self.base_url}: {type(exc).__name__}", maybe_sent=False
            ) from None
        except httpx.HTTPError as exc:
            raise _Transport(
                f"{op}: request to {self.base_url} failed: {type(exc).__name__}", maybe_sent=True
            ) from None
        text = resp.text
        if resp.status_code >= 400:
            raise classify(resp.status_code, text, resp.headers, op=op)
        try:
            data = resp.json() if text.strip() else {}
        except ValueError:
            raise InvalidResponse(
                resp.status_code, "invalid_json", f"{op}: answer is not JSON: {text[:200]}"
            ) from None
        if isinstance(data, Mapping) and data.get("success") is False:
            raise classify(resp.status_code, text, resp.headers, op=op)
        return data

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after
        base = self.backoff_initial_s * (2 ** max(0, state.attempt_number - 1))
        return min(self.backoff_max_s, base) * random.uniform(0.5, 1.0)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        op: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        retry_if: Any = _is_retryable,
    ) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception(retry_if),
            wait=self._wait,
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.retry_deadline_s),
            reraise=True,
            before_sleep=lambda s: log.info(
                "vast %s: retrying after %s", op, redact(str(s.outcome.exception())) if s.outcome else "?"
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._send_once(method, path, op=op, params=params, body=body)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- offers ------------------------------------------------------------------------------------

    async def search_offers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`POST /api/v0/bundles/` with a filter dict; the offers as returned (ids are ask ids)."""
        data = await self._call("POST", "/api/v0/bundles/", op="search", body=dict(query))
        offers = data.get("offers") if isinstance(data, Mapping) else None
        if not isinstance(offers, list):
            raise InvalidResponse(200, "invalid_response", "search: answer has no 'offers' list")
        return [o for o in offers if isinstance(o, Mapping)]

    async def create_instance(self, offer_id: int | str, body: Mapping[str, Any]) -> int:
        """`PUT /api/v0/asks/{id}/`; the new instance id (`new_contract`).

        Resent only when the server provably did not act on it (connection refused, 429). Anything that
        may have rented (timeout, 5xx, dropped connection, odd answer) raises `CreateAmbiguous`.
        """
        label = str(body.get("label") or "")

        def safe_to_resend(exc: BaseException) -> bool:
            return isinstance(exc, RateLimited) or (isinstance(exc, _Transport) and not exc.maybe_sent)

        try:
            data = await self._call(
                "PUT", f"/api/v0/asks/{int(offer_id)}/", op="create", body=dict(body), retry_if=safe_to_resend
            )
        except _Transport as exc:
            if exc.maybe_sent:
                raise CreateAmbiguous(label, str(exc)) from None
            raise
        except VastApiError as exc:
            if exc.status >= 500 or isinstance(exc, InvalidResponse):  # 5xx, or a 2xx we cannot read
                raise CreateAmbiguous(label, str(exc)) from None
            raise
        contract = data.get("new_contract") if isinstance(data, Mapping) else None
        try:
            return int(contract)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CreateAmbiguous(label, "answer without new_contract") from None

    # --- instances ---------------------------------------------------------------------------------

    async def list_instances(
        self,
        select_filters: Mapping[str, Any] | None = None,
        *,
        page_size: int = PAGE_MAX,
        max_pages: int = 2000,
    ) -> list[dict[str, Any]]:
        """All instances of the account over every page of `GET /api/v1/instances/`.

        Raises `InvalidResponse` if a page has no `instances` list: never mistake a failure for "none".
        """
        out: list[dict[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            params: dict[str, Any] = {"limit": min(max(page_size, 1), PAGE_MAX)}
            if select_filters:
                params["select_filters"] = dict(select_filters)
            if token:
                params["after_token"] = token
            data = await self._call("GET", "/api/v1/instances/", op="list", params=params)
            rows = data.get("instances") if isinstance(data, Mapping) else None
            if not isinstance(rows, list):
                raise InvalidResponse(200, "invalid_response", "list: answer has no 'instances' list")
            out.extend(normalize_instance(r) for r in rows if isinstance(r, Mapping))
            token = data.get("next_token") or None
            if not token:
                return out
            if token in seen:
                raise InvalidResponse(200, "invalid_response", "list: paging token repeats")
            seen.add(token)
        raise InvalidResponse(200, "invalid_response", f"list: more than {max_pages} pages")

    async def find_by_label(self, label: str) -> list[dict[str, Any]]:
        """Instances carrying exactly `label` (server-side filter, checked again here)."""
        rows = await self.list_instances({"label": {"eq": label}})
        return [r for r in rows if r.get("label") == label]

    async def show_instance(self, instance_id: int | str) -> dict[str, Any] | None:
        """One instance, or None when Vast answers `{"instances": null}` (gone, or not yet visible)."""
        data = await self._call(
            "GET", f"/api/v0/instances/{int(instance_id)}/", op="show", params={"owner": "me"}
        )
        if not isinstance(data, Mapping) or "instances" not in data:
            raise InvalidResponse(200, "invalid_response", "show: answer has no 'instances' key")
        inst = data["instances"]
        if inst is None:
            return None
        if isinstance(inst, list):  # tolerate a one-element list
            inst = inst[0] if inst else None
            if inst is None:
                return None
        if not isinstance(inst, Mapping):
            raise InvalidResponse(200, "invalid_response", "show: 'instances' is not an object")
        return normalize_instance(inst)

    async def destroy_instance(self, instance_id: int | str) -> bool:
        """`DELETE`; True if destroyed now, False if it was already gone (404 / not_found)."""
        try:
            await self._call("DELETE", f"/api/v0/instances/{int(instance_id)}/", op="destroy", body={})
        except VastApiError as exc:
            if isinstance(exc, AuthError) or (exc.status != 404 and exc.error not in _GONE_CODES):
                raise
            if exc.error in _GONE_CODES:
                return False
            # A bare 404 (a proxy, a wrong base URL) proves nothing: gone only if show agrees.
            if await self.show_instance(instance_id) is None:
                return False
            raise
        return True

    async def attach_ssh_key(self, instance_id: int | str, public_key: str) -> None:
        await self._call(
            "POST",
            f"/api/v0/instances/{int(instance_id)}/ssh/",
            op="attach_ssh",
            body={"ssh_key": public_key},
        )

    async def list_ssh_keys(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/api/v0/ssh/", op="ssh_keys")
        if isinstance(data, Mapping):  # some versions wrap the list
            data = data.get("keys", data.get("ssh_keys"))
        if not isinstance(data, list):
            raise InvalidResponse(200, "invalid_response", "ssh keys: answer is not a list")
        return [dict(k) for k in data if isinstance(k, Mapping)]

    async def add_ssh_key(self, public_key: str) -> dict[str, Any]:
        data = await self._call("POST", "/api/v0/ssh/", op="add_ssh_key", body={"ssh_key": public_key})
        return dict(data.get("key") or {}) if isinstance(data, Mapping) else {}

    async def request_logs(
        self,
        instance_id: int | str,
        *,
        tail: int | None = 1000,
        deadline_s: float = 30.0,
        poll_interval_s: float = 0.3,
    ) -> str:
        """Container logs: ask Vast to upload them, then poll `result_url` (no auth) until it serves."""
        body: dict[str, Any] = {}
        if tail is not None:
            body["tail"] = str(tail)
        data = await self._call(
            "PUT", f"/api/v0/instances/request_logs/{int(instance_id)}/", op="logs", body=body
        )
        url = data.get("result_url") if isinstance(data, Mapping) else None
        if not url:
            raise InvalidResponse(200, "invalid_response", "logs: answer has no result_url")
        url = urljoin(self.base_url + "/", str(url))
        deadline = time.monotonic() + deadline_s
        # A separate client: the result URL is on S3, and our API key must never be sent there.
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), transport=self._transport) as plain:
            while True:
                with contextlib.suppress(httpx.HTTPError):  # not uploaded yet, or a blip: poll again
                    resp = await plain.get(url)
                    if resp.status_code == 200:
                        return resp.text
                if time.monotonic() + poll_interval_s > deadline:
                    raise VastError(
                        f"logs of instance {instance_id} not available within {deadline_s:.0f}s",
                        retryable=True,
                    )
                await asyncio.sleep(poll_interval_s)

    # --- account -----------------------------------------------------------------------------------

    async def current_user(self) -> dict[str, Any]:
        data = await self._call("GET", "/api/v0/users/current/", op="user")
        if not isinstance(data, Mapping):
            raise InvalidResponse(200, "invalid_response", "user: answer is not an object")
        user = dict(data)
        user.pop("api_key", None)
        return user

    async def balance(self) -> float:
        """Spendable credit in USD (`credit`, falling back to `balance`)."""
        user = await self.current_user()
        for key in ("credit", "balance"):
            value = user.get(key)
            if value is not None:
                try:
                    return float(value)
                except (TypeError, ValueError):
                    continue
        raise InvalidResponse(200, "invalid_response", "user: no credit or balance field")
