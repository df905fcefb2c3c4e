"""Queue control against http_queue_interrupt.json: /queue while busy (running, pending, `front`),
/prompt, /history while pending/running, POST /queue delete/clear, targeted/wrong/global interrupt,
POST /history delete, POST /free (empty 200 bodies)."""

from __future__ import annotations

import asyncio

from tests.sim_comfyui.helpers import sample, type_tree, wan_prompt

QI = sample("http_queue_interrupt")
CLIENT = "queue-client"


async def _post(http, url, path, json=None):
    async with http.post(url + path, json=json) as resp:
        return resp.status, resp.headers, await resp.read()


async def _get(http, url, path):
    async with http.get(url + path) as resp:
        return await resp.json()


async def _submit(emu, http, steps, **body):
    graph = await wan_prompt(emu, http, steps=steps, prefix=f"q/s{steps}")
    async with http.post(f"{emu.url}/prompt", json={"prompt": graph, "client_id": CLIENT, **body}) as resp:
        return await resp.json()


async def _wait_for(ws, predicate, limit_s=10.0):
    seen = []
    async with asyncio.timeout(limit_s):
        while True:
            msg = await ws.receive_json()
            seen.append(msg)
            if predicate(msg):
                return seen


def _empty_ok(result):
    status, headers, body = result
    assert (status, body) == (200, b"")
    assert "Content-Type" not in headers


async def test_queue_interrupt_and_history_flow_matches_capture(make_emu, http):
    emu = await make_emu(step_delay_s=0.02)
    ws = await http.ws_connect(f"{emu.url}/ws?clientId={CLIENT}")
    await ws.receive_json()
    running = await _submit(emu, http, 400)
    await _wait_for(ws, lambda m: m["type"] == "progress")
    pending = await _submit(emu, http, 402)
    front = await _submit(emu, http, 404, front=True)
    assert front["number"] == -2 and pending["number"] == 1

    queue = await _get(http, emu.url, "/queue")
    want = QI["get_queue_busy"]["response"]["json"]
    assert type_tree(queue["queue_running"][0][3]) == type_tree(want["queue_running"][0][3])
    assert [type(x).__name__ for x in queue["queue_running"][0]] == [
        type(x).__name__ for x in want["queue_running"][0]
    ]
    assert [e[1] for e in queue["queue_running"]] == [running["prompt_id"]]
    assert [e[1] for e in queue["queue_pending"]] == [front["prompt_id"], pending["prompt_id"]]
    assert queue["queue_running"][0][2]["108"]["inputs"]["frame_rate"] == 16.0
    assert await _get(http, emu.url, "/prompt") == QI["get_prompt_busy"]["response"]["json"]
    assert await _get(http, emu.url, f"/history/{running['prompt_id']}") == {}
    assert await _get(http, emu.url, f"/history/{pending['prompt_id']}") == {}

    _empty_ok(await _post(http, emu.url, "/queue", {"delete": [pending["prompt_id"]]}))
    queue = await _get(http, emu.url, "/queue")
    assert [e[1] for e in queue["queue_pending"]] == [front["prompt_id"]]

    _empty_ok(await _post(http, emu.url, "/interrupt", {"prompt_id": "00000000-0000-0000-0000-000000000000"}))
    await _wait_for(ws, lambda m: m["type"] == "progress")  # still running
    _empty_ok(await _post(http, emu.url, "/interrupt", {"prompt_id": running["prompt_id"]}))
    seen = await _wait_for(ws, lambda m: m["type"] == "execution_start")
    types = [m["type"] for m in seen]
    at = types.index("execution_interrupted")
    assert types[at:] == ["execution_interrupted", "status", "executing", "status", "execution_start"]
    interrupted = seen[at]["data"]
    want_data = next(
        m["msg"]["data"] for m in QI["ws_messages"] if m["msg"]["type"] == "execution_interrupted"
    )
    assert set(interrupted) == set(want_data)
    assert interrupted["node_id"] == "86" and interrupted["node_type"] == "KSamplerAdvanced"
    assert seen[at + 2]["data"] == {"node": None, "prompt_id": running["prompt_id"]}

    entry = (await _get(http, emu.url, f"/history/{running['prompt_id']}"))[running["prompt_id"]]
    want_entry = QI["history_interrupted"]["response"]["json"][
        QI["post_running"]["response"]["json"]["prompt_id"]
    ]
    assert [(e, set(d)) for e, d in entry["status"]["messages"]] == [
        (e, set(d)) for e, d in want_entry["status"]["messages"]
    ]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["outputs"] == {} and entry["meta"] == {}

    await _wait_for(ws, lambda m: m["type"] == "progress")
    status, headers, body = await _post(http, emu.url, "/interrupt")  # global, no body
    _empty_ok((status, headers, body))
    await _wait_for(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    entry = (await _get(http, emu.url, f"/history/{front['prompt_id']}"))[front["prompt_id"]]
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
    ]
    assert await _get(http, emu.url, "/queue") == QI["get_queue_idle"]["response"]["json"]

    _empty_ok(await _post(http, emu.url, "/queue", {"clear": True}))
    assert await _get(http, emu.url, f"/history/{pending['prompt_id']}") == {}
    last_two = await _get(http, emu.url, "/history?max_items=2")
    assert list(last_two) == [running["prompt_id"], front["prompt_id"]]
    _empty_ok(await _post(http, emu.url, "/history", {"delete": [front["prompt_id"]]}))
    assert await _get(http, emu.url, f"/history/{front['prompt_id']}") == {}
    _empty_ok(await _post(http, emu.url, "/free", {"unload_models": True, "free_memory": True}))
    await ws.close()


async def test_front_prompt_runs_before_older_pending(make_emu, http):
    emu = await make_emu(step_delay_s=0.01)
    ws = await http.ws_connect(f"{emu.url}/ws?clientId={CLIENT}")
    await ws.receive_json()
    await _submit(emu, http, 400)
    await _wait_for(ws, lambda m: m["type"] == "progress")
    later = await _submit(emu, http, 2)
    first = await _submit(emu, http, 4, front=True)
    await _post(http, emu.url, "/interrupt")
    starts = []
    async with asyncio.timeout(10):
        while len(starts) < 2:
            msg = await ws.receive_json()
            if msg["type"] == "execution_start":
                starts.append(msg["data"]["prompt_id"])
    assert starts == [first["prompt_id"], later["prompt_id"]]
    await ws.close()
