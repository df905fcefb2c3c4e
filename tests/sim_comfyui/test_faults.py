"""Each fault switch: execution_error at a node, dropped and silent WebSocket, history lagging behind
success, slow start (502 / refused), crash mid-job; plus the sim control route and the proxy token."""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp
import pytest

from app.sim.comfyui import ComfyFaults
from tests.sim_comfyui.helpers import read_for, read_until_done, sample, wan_prompt

CLIENT = "fault-client"
ERROR_KEYS = set(
    next(
        m["msg"]["data"]
        for m in sample("ws_and_history_jobs")["execution_error_job"]["ws_messages"]
        if m["msg"]["type"] == "execution_error"
    )
)


async def _connect(http, url, client=CLIENT):
    ws = await http.ws_connect(f"{url}/ws?clientId={client}")
    await ws.receive_json()
    return ws


async def _submit(emu, http, **kwargs):
    graph = await wan_prompt(emu, http, **kwargs)
    async with http.post(f"{emu.url}/prompt", json={"prompt": graph, "client_id": CLIENT}) as resp:
        assert resp.status == 200
        return (await resp.json())["prompt_id"]


async def _history_when_done(http, url, pid, limit_s=10.0):
    async with asyncio.timeout(limit_s):
        while True:
            async with http.get(f"{url}/history/{pid}") as resp:
                body = await resp.json()
            if body:
                return body[pid]
            await asyncio.sleep(0.02)


async def test_execution_error_at_node_has_the_real_shape(make_emu, http):
    emu = await make_emu(faults=ComfyFaults(error_at_node="98"))
    ws = await _connect(http, emu.url)
    pid = await _submit(emu, http)
    messages = await read_until_done(ws, pid)
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert set(error) == ERROR_KEYS
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "98",
        "WanImageToVideo",
        "RuntimeError",
    )
    assert "98" not in error["executed"] and "97" in error["executed"]
    assert error["current_inputs"]["width"] == [64]
    assert [m["type"] for m in messages[-3:]] == ["execution_error", "status", "executing"]
    history = await _history_when_done(http, emu.url, pid)
    assert history["status"]["status_str"] == "error"
    # switched off over HTTP, the next job succeeds
    async with http.post(f"{emu.url}/__sim/faults", json={"error_at_node": None}) as resp:
        assert (await resp.json())["error_at_node"] is None
    pid = await _submit(emu, http, steps=2)
    assert (await _history_when_done(http, emu.url, pid))["status"]["status_str"] == "success"


async def test_dropped_websocket_mid_job_job_still_finishes(make_emu, http):
    emu = await make_emu(step_delay_s=0.01, faults=ComfyFaults(drop_ws_at_node="86"))
    ws = await _connect(http, emu.url)
    pid = await _submit(emu, http)
    messages = await read_until_done(ws, pid)
    assert "closed" in messages[-1]
    assert {"type": "executing", "data": {"node": "86", "display_node": "86", "prompt_id": pid}} in messages
    history = await _history_when_done(http, emu.url, pid)
    assert history["status"]["status_str"] == "success"
    again = await _connect(http, emu.url)  # one shot: reconnecting works
    assert not again.closed


async def test_silent_websocket_keeps_connection_but_sends_nothing(make_emu, http):
    emu = await make_emu(faults=ComfyFaults(silent_ws_at_node="86"))
    ws = await _connect(http, emu.url)
    pid = await _submit(emu, http)
    history = await _history_when_done(http, emu.url, pid)
    assert history["status"]["status_str"] == "success"
    seen = await read_for(ws, 0.3)
    types = [m.get("type") for m in seen]
    assert "executing" in types and "execution_success" not in types and "progress" not in types
    assert seen[-1]["type"] == "executing" and seen[-1]["data"]["node"] == "86"
    assert not ws.closed


async def test_history_lags_behind_success(make_emu, http):
    emu = await make_emu(faults=ComfyFaults(history_lag_s=1.0))
    ws = await _connect(http, emu.url)
    pid = await _submit(emu, http)
    messages = await read_until_done(ws, pid)
    done_at = time.monotonic()
    assert any(m["type"] == "execution_success" for m in messages)
    async with http.get(f"{emu.url}/history/{pid}") as resp:
        assert await resp.json() == {}
    async with http.get(f"{emu.url}/queue") as resp:
        assert await resp.json() == {"queue_running": [], "queue_pending": []}
    history = await _history_when_done(http, emu.url, pid)
    assert time.monotonic() - done_at >= 0.8
    assert history["status"]["status_str"] == "success"


async def _wait_until_up(http, url, limit_s=5.0):
    async with asyncio.timeout(limit_s):
        while True:
            try:
                async with http.get(f"{url}/system_stats") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.05)


async def test_slow_start_answers_502_while_booting(make_emu, http):
    started = time.monotonic()
    emu = await make_emu(faults=ComfyFaults(slow_start_s=1.0))
    async with http.get(f"{emu.url}/system_stats") as resp:
        assert (resp.status, await resp.read()) == (502, b"")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(f"{emu.url}/ws?clientId=x")
    async with http.get(f"{emu.url}/__sim/faults") as resp:
        assert resp.status == 200
    await _wait_until_up(http, emu.url)
    assert time.monotonic() - started >= 0.9


async def test_slow_start_refuses_connections_while_booting(make_emu, http):
    started = time.monotonic()
    emu = await make_emu(faults=ComfyFaults(slow_start_s=1.0, slow_start_mode="refuse"))
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(f"{emu.url}/system_stats"):
            pass
    await _wait_until_up(http, emu.url)
    assert time.monotonic() - started >= 0.9


async def test_crash_mid_job_loses_the_prompt_and_stops_listening(make_emu, http):
    emu = await make_emu(faults=ComfyFaults(crash_at_node="86", crash_restart_after_s=1.0))
    ws = await _connect(http, emu.url)
    pid = await _submit(emu, http)
    messages = await read_until_done(ws, pid)
    assert "closed" in messages[-1]
    await asyncio.wait_for(emu.crashed.wait(), 5)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(f"{emu.url}/queue"):
            pass
    await _wait_until_up(http, emu.url)  # the "process" comes back empty-handed
    async with http.get(f"{emu.url}/queue") as resp:
        assert await resp.json() == {"queue_running": [], "queue_pending": []}
    async with http.get(f"{emu.url}/history/{pid}") as resp:
        assert await resp.json() == {}


async def test_unknown_fault_switch_is_rejected(emu, http):
    async with http.post(f"{emu.url}/__sim/faults", json={"no_such_switch": 1}) as resp:
        assert resp.status == 400
        assert "no_such_switch" in (await resp.json())["error"]


async def test_token_is_required_when_configured(make_emu, http):
    emu = await make_emu(token="s3cret")
    async with http.get(f"{emu.url}/system_stats") as resp:
        assert resp.status == 401
    async with http.get(f"{emu.url}/system_stats", headers={"Authorization": "Bearer s3cret"}) as resp:
        assert resp.status == 200
    async with http.get(
        f"{emu.url}/system_stats",
        headers={"Authorization": "Basic " + base64.b64encode(b"user:s3cret").decode()},
    ) as resp:
        assert resp.status == 200
    ws = await http.ws_connect(f"{emu.url}/ws?clientId=t", headers={"Authorization": "Bearer s3cret"})
    assert (await ws.receive_json())["type"] == "status"
    await ws.close()
