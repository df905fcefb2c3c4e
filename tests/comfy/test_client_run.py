"""The client against the ComfyUI emulator: success paths, progress, outputs, cache, upload."""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from tests.comfy.conftest import make_client
from tests.comfy.world import SAMPLERS, VIDEO_NODE, wan_graph


async def test_success_with_progress_download_and_last_frame(emulator, start_image, tmp_path):
    emu = await emulator(step_delay_s=0.02)
    seen = []
    async with make_client(emu.url) as comfy:
        await comfy.wait_ready(time.monotonic() + 5)
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name, width=96, height=64, frames=13)
        result = await comfy.run(
            graph, deadline=time.monotonic() + 30, on_progress=seen.append, progress_nodes=SAMPLERS
        )
        assert result.execution_s is not None and result.execution_s > 0
        video = result.video(VIDEO_NODE)
        assert video is not None and video.key == "gifs" and video.type == "output"
        [path] = await comfy.download_outputs(result, tmp_path / "out")
        png = await comfy.extract_last_frame(path, tmp_path / "out" / "last.png")

    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1].stage == "done"
    stages = {p.stage for p in seen}
    assert {"sampling 1/2", "sampling 2/2"} <= stages
    assert any(0.4 < f < 0.6 for f in fractions)  # the first pass is half the steps
    assert path.name == video.filename and path.stat().st_size > 0
    assert not list((tmp_path / "out").glob("*.part"))
    assert Image.open(png).size == (96, 64)


async def test_fully_cached_rerun_still_returns_outputs(emulator, start_image, tmp_path):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name, seed=7, prefix="test/cached")
        first = await comfy.run(graph, deadline=time.monotonic() + 30, progress_nodes=SAMPLERS)
        seen = []
        second = await comfy.run(
            graph, deadline=time.monotonic() + 30, on_progress=seen.append, progress_nodes=SAMPLERS
        )
    assert second.cached_nodes and second.outputs == first.outputs
    assert seen[-1].fraction == 1.0


async def test_upload_same_name_different_content_is_renamed(emulator, start_image, tmp_path):
    emu = await emulator()
    other = tmp_path / "other" / start_image.name
    other.parent.mkdir()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(other)
    async with make_client(emu.url) as comfy:
        first = await comfy.upload_image(start_image)
        again = await comfy.upload_image(start_image)
        renamed = await comfy.upload_image(other)
    assert first == again == "start.png"
    assert renamed == "start (1).png"


async def test_shipped_workflow_end_to_end(emulator, start_image, tmp_path):
    """The R1 workflow contract as the job runner uses it: capabilities, render, run, outputs, last frame."""
    from app.config import get_settings
    from app.workflows import get_workflow

    wf = get_workflow("wan22_i2v_lightx2v_gguf", get_settings())
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        await comfy.check_capabilities(wf.node_types, wf.models, custom_nodes=wf.custom_nodes)
        name = await comfy.upload_image(start_image)
        params = wf.validate({"prompt": "a fox", "width": 256, "height": 256, "num_frames": 9}, (64, 64))
        graph = wf.render(params.with_resolved_seed(), name, "test/shipped")
        seen = []
        result = await comfy.run(
            graph, deadline=time.monotonic() + 30, progress_nodes=wf.progress_nodes, on_progress=seen.append
        )
        [video] = await comfy.download_outputs(result, tmp_path, outputs=[result.video(wf.video_node)])
        png = await comfy.extract_last_frame(video, tmp_path / "last.png")
    assert Image.open(png).size == (256, 256)
    assert seen[-1].fraction == 1.0 and any(p.stage == "sampling 2/2" for p in seen)


async def test_broken_progress_callback_does_not_fail_the_job(emulator, start_image):
    emu = await emulator()

    def explode(_progress):
        raise RuntimeError("progress sink down")

    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        result = await comfy.run(
            wan_graph(name), deadline=time.monotonic() + 20, on_progress=explode, progress_nodes=SAMPLERS
        )
    assert result.video(VIDEO_NODE) is not None


async def test_failing_submitted_callback_does_not_leave_the_prompt_running(emulator, start_image):
    emu = await emulator(step_delay_s=0.2)

    def refuse(_prompt_id):
        raise RuntimeError("job store unavailable")

    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        with pytest.raises(RuntimeError):
            await comfy.run(wan_graph(name), deadline=time.monotonic() + 20, on_submitted=refuse)
    for _ in range(100):
        if emu.running is None and not emu.pending:
            break
        await asyncio.sleep(0.02)
    assert emu.running is None and not emu.pending


async def test_concurrent_jobs_on_one_client_get_their_own_events(emulator, start_image):
    emu = await emulator(step_delay_s=0.01)
    seen: dict[int, list] = {0: [], 1: []}
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        results = await asyncio.gather(
            *(
                comfy.run(
                    wan_graph(name),
                    deadline=time.monotonic() + 30,
                    progress_nodes=SAMPLERS,
                    on_progress=seen[i].append,
                )
                for i in (0, 1)
            )
        )
    for i, result in enumerate(results):
        assert {p.prompt_id for p in seen[i]} == {result.prompt_id}
        assert seen[i][-1].fraction == 1.0 and any(p.stage == "sampling 2/2" for p in seen[i])
    assert results[0].outputs != results[1].outputs


async def test_upload_answered_with_a_non_json_page_is_a_typed_error(start_image):
    # a proxy's HTML page with 200 must become ComfyProtocolError, not a bare JSONDecodeError
    from app.comfy import ComfyProtocolError

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        page = b"<html>sign in</html>"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(page)}\r\n\r\n".encode()
            + page
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with make_client(url) as comfy:
            with pytest.raises(ComfyProtocolError):
                await comfy.upload_image(start_image)
    finally:
        server.close()
        await server.wait_closed()
