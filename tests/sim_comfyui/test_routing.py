"""WebSocket routing by client_id, the feature_flags handshake and binary preview frames, against
ws_prompt_without_client_id.json and the SaveImageWebsocket jobs of ws_and_history_jobs.json."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct

import aiohttp
from PIL import Image

from tests.sim_comfyui.helpers import captured, read_for, read_until_done, sample, shape, wan_prompt

JOBS = sample("ws_and_history_jobs")
NOCLIENT = sample("ws_prompt_without_client_id")


async def _connect(http, url, client_id=None):
    ws = await http.ws_connect(f"{url}/ws" + (f"?clientId={client_id}" if client_id else ""))
    first = await ws.receive_json()
    assert first["type"] == "status"
    return ws, first


async def _read_until_idle(ws):
    """Observer view: everything up to the status that says the queue is empty again."""
    out = []
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                out.append({"binary": msg.data})
                continue
            data = json.loads(msg.data)
            out.append(data)
            if data["type"] == "status" and data["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                return out


async def test_first_frame_without_client_id_has_generated_sid(emu, http):
    _, first = await _connect(http, emu.url)
    assert set(first["data"]) == set(JOBS["initial_ws_without_clientId"]["data"])
    assert re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])


async def test_feature_flags_handshake(emu, http):
    ws, first = await _connect(http, emu.url, "ff-client")
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    answer = await ws.receive_json()
    want = captured(JOBS["feature_flags_client_initial"])
    assert first["data"]["sid"] == "ff-client" and first["type"] == want[0]["type"]
    assert answer == want[1]


async def test_prompt_without_client_id_broadcasts_only_progress(emu, http):
    observer, _ = await _connect(http, emu.url, "observer")
    async with http.post(f"{emu.url}/prompt", json=NOCLIENT["post"]["request"]["json"]) as resp:
        pid = (await resp.json())["prompt_id"]
    seen = await _read_until_idle(observer)
    want = captured(NOCLIENT["observer_ws"])[1:]
    assert shape(seen) == shape(want)
    assert not [m for m in seen if m.get("type", "").startswith(("execution_", "executing", "executed"))]
    async with http.get(f"{emu.url}/history/{pid}") as resp:
        entry = (await resp.json())[pid]
    assert entry["prompt"][3] == {}
    assert entry["outputs"]["2"]["gifs"][0]["filename"] == "noclient_00001.mp4"


async def _ws_image_job(emu, http, job, ws, client):
    body = {**job["post_prompt"]["request"]["json"], "client_id": client}
    async with http.post(f"{emu.url}/prompt", json=body) as resp:
        pid = (await resp.json())["prompt_id"]
    return pid, await read_until_done(ws, pid)


async def test_save_image_websocket_legacy_client_gets_type_1_frames(emu, http):
    ws, _ = await _connect(http, emu.url, "legacy")
    job = JOBS["saveimagewebsocket_job_legacy_client"]
    _, messages = await _ws_image_job(emu, http, job, ws, "legacy")
    assert shape(messages) == shape(captured(job["ws_messages"]))
    frames = [m["binary"] for m in messages if "binary" in m]
    event, image_type = struct.unpack(">II", frames[0][:8])
    assert (event, image_type) == (1, 2)
    assert Image.open(io.BytesIO(frames[0][8:])).size == (32, 32)


async def test_save_image_websocket_feature_flag_client_gets_type_4_frames(emu, http):
    ws, _ = await _connect(http, emu.url, "ffc")
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    await ws.receive_json()
    job = JOBS["saveimagewebsocket_job_feature_flag_client"]
    pid, messages = await _ws_image_job(emu, http, job, ws, "ffc")
    assert shape(messages) == shape(captured(job["ws_messages"]))
    frame = next(m["binary"] for m in messages if "binary" in m)
    event, length = struct.unpack(">II", frame[:8])
    meta = json.loads(frame[8 : 8 + length])
    want = next(m["metadata"] for m in job["ws_messages"] if m["kind"] == "binary")
    assert event == 4
    assert meta == {**want, "prompt_id": pid}
    assert frame[8 + length :].startswith(b"\x89PNG")


async def test_events_go_only_to_the_matching_client(emu, http):
    mine, _ = await _connect(http, emu.url, "mine")
    other, _ = await _connect(http, emu.url, "other")
    job = JOBS["vhs_videocombine_job"]
    _, messages = await _ws_image_job(emu, http, job, mine, "mine")
    assert any(m.get("type") == "executed" for m in messages)
    seen = await _read_until_idle(other)
    assert {m["type"] for m in seen} == {"status"}


async def test_reconnect_mid_job_is_told_the_current_node(make_emu, http):
    emu = await make_emu(step_delay_s=0.05)
    ws, _ = await _connect(http, emu.url, "re")
    body = {"prompt": await wan_prompt(emu, http, steps=80), "client_id": "re"}
    async with http.post(f"{emu.url}/prompt", json=body) as resp:
        assert resp.status == 200
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "progress":
                break
    await ws.close()
    again, first = await _connect(http, emu.url, "re")
    assert first["data"]["sid"] == "re"
    current = await again.receive_json()
    assert current == {"type": "executing", "data": {"node": "86"}}


async def test_closing_an_older_socket_unroutes_a_newer_one_with_the_same_client_id(emu, http):
    # ComfyUI 0.3.64's websocket_handler ends with `self.sockets.pop(sid, None)`, whichever socket owns
    # the sid by then: an old connection that goes away after a reconnect takes the new one's routing.
    old, _ = await _connect(http, emu.url, "same")
    new, _ = await _connect(http, emu.url, "same")
    await old.close()
    await asyncio.sleep(0.1)
    job = JOBS["vhs_videocombine_job"]
    body = {**job["post_prompt"]["request"]["json"], "client_id": "same"}
    async with http.post(f"{emu.url}/prompt", json=body) as resp:
        assert resp.status == 200
    assert await read_for(new, 1.0) == []  # neither its events nor the status broadcasts
