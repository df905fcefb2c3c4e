"""Every fault switch of the emulator, and what the client turns it into."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.comfy import (
    ComfyTimeout,
    ComfyUnavailable,
    ErrorKind,
    ExecutionError,
    PromptLost,
)
from tests.comfy.conftest import make_client
from tests.comfy.world import SAMPLERS, VIDEO_NODE, WAN_MODELS, wan_graph


async def _run(emu, start_image, client_opts=None, **run_kwargs):
    async with make_client(emu.url, **(client_opts or {})) as comfy:
        name = await comfy.upload_image(start_image)
        return await comfy.run(
            wan_graph(name),
            deadline=time.monotonic() + run_kwargs.pop("within", 20),
            progress_nodes=SAMPLERS,
            **run_kwargs,
        )


async def test_execution_error_at_node_carries_node_and_kind(emulator, start_image):
    emu = await emulator(
        error_at_node="85", error_type="torch.OutOfMemoryError", error_message="Allocation on device"
    )
    with pytest.raises(ExecutionError) as exc:
        await _run(emu, start_image)
    err = exc.value
    assert (err.node_id, err.node_type, err.exception_type) == (
        "85",
        "KSamplerAdvanced",
        "torch.OutOfMemoryError",
    )
    assert err.kind is ErrorKind.OOM and "Allocation on device" in str(err)


async def test_corrupt_gguf_file_fails_as_model_corrupt(emulator, start_image, comfy_dir):
    folder, name = WAN_MODELS[1]
    (comfy_dir / "models" / folder / name).write_bytes(b"<html>proxy error page</html>")
    emu = await emulator()
    with pytest.raises(ExecutionError) as exc:
        await _run(emu, start_image)
    assert exc.value.kind is ErrorKind.MODEL_CORRUPT and exc.value.node_type == "UnetLoaderGGUF"
    assert exc.value.retryable


async def test_dropped_websocket_still_completes(emulator, start_image):
    emu = await emulator(step_delay_s=0.05, drop_ws_at_node="86")
    seen = []
    result = await _run(emu, start_image, on_progress=seen.append)
    assert result.video(VIDEO_NODE) is not None
    # the reconnected socket kept reporting the second sampler pass
    assert any(p.stage == "sampling 2/2" for p in seen) and seen[-1].fraction == 1.0


async def test_silent_websocket_completes_through_history_poll(emulator, start_image):
    emu = await emulator(step_delay_s=0.02, silent_ws_at_node="86")
    result = await _run(emu, start_image)
    assert result.video(VIDEO_NODE) is not None


async def test_history_lagging_behind_success(emulator, start_image):
    emu = await emulator(history_lag_s=0.6)
    started = time.monotonic()
    result = await _run(emu, start_image)
    assert result.video(VIDEO_NODE) is not None
    assert time.monotonic() - started >= 0.6  # it waited for /history, not just the socket


async def test_history_lag_with_silent_socket_is_not_mistaken_for_a_lost_prompt(emulator, start_image):
    emu = await emulator(step_delay_s=0.01, silent_ws_at_node="95", history_lag_s=0.5)
    # real ComfyUI moves a prompt from /queue to /history atomically; a lag is tolerated up to lost_confirm_s
    result = await _run(emu, start_image, client_opts={"lost_confirm_s": 1.5})
    assert result.video(VIDEO_NODE) is not None


@pytest.mark.parametrize("mode", ["502", "refuse"])
async def test_slow_start_is_waited_out(emulator, mode):
    emu = await emulator(slow_start_s=0.6, slow_start_mode=mode)
    async with make_client(emu.url) as comfy:
        started = time.monotonic()
        stats = await comfy.wait_ready(time.monotonic() + 10)
    assert "system" in stats and time.monotonic() - started >= 0.5


async def test_slow_start_past_deadline_is_unavailable(emulator):
    emu = await emulator(slow_start_s=5.0)
    async with make_client(emu.url) as comfy:
        with pytest.raises(ComfyUnavailable) as exc:
            await comfy.wait_ready(time.monotonic() + 0.4)
    assert exc.value.retryable


async def test_crash_mid_job_fails_fast_as_unavailable(emulator, start_image):
    emu = await emulator(step_delay_s=0.05, crash_at_node="85")
    started = time.monotonic()
    with pytest.raises(ComfyUnavailable) as exc:
        await _run(emu, start_image)
    assert exc.value.retryable
    assert time.monotonic() - started < 5


async def test_crash_and_restart_mid_job_is_a_lost_prompt(emulator, start_image):
    emu = await emulator(step_delay_s=0.05, crash_at_node="85", crash_restart_after_s=0.1)
    with pytest.raises(PromptLost) as exc:
        await _run(emu, start_image)
    assert exc.value.retryable and "submit it again" in str(exc.value)


async def test_deadline_cancels_the_prompt_on_the_server(emulator, start_image):
    emu = await emulator(step_delay_s=0.5)
    with pytest.raises(ComfyTimeout):
        await _run(emu, start_image, within=0.8)
    for _ in range(50):  # the interrupt lands at the next step tick
        if emu.running is None and not emu.pending:
            break
        await asyncio.sleep(0.05)
    assert emu.running is None and not emu.pending


async def test_socket_silent_from_the_start_completes_through_history(emulator, start_image):
    emu = await emulator(silent_ws=True)
    result = await _run(emu, start_image)
    assert result.video(VIDEO_NODE) is not None


async def test_socket_unrouted_by_a_stale_connection_closing_is_reopened(emulator, start_image):
    # ComfyUI drops the routing of a clientId whenever *a* socket with that id closes. A stale connection
    # (e.g. half-open after a network blip) that ends after our reconnect leaves our socket up but deaf:
    # the client must notice a running prompt it hears nothing of and reopen, not stay deaf for good.
    import aiohttp

    emu = await emulator(step_delay_s=0.05)
    async with make_client(emu.url, poll_interval_s=0.1) as comfy, aiohttp.ClientSession() as http:
        stale = await http.ws_connect(f"{emu.url}/ws?clientId={comfy._events.client_id}")
        name = await comfy.upload_image(start_image)
        await comfy.run(wan_graph(name), deadline=time.monotonic() + 20, progress_nodes=SAMPLERS)
        await stale.close()
        await asyncio.sleep(0.1)
        seen = []
        result = await comfy.run(
            wan_graph(name, steps=20),
            deadline=time.monotonic() + 20,
            progress_nodes=SAMPLERS,
            on_progress=seen.append,
        )
    assert result.video(VIDEO_NODE) is not None
    assert any(p.stage == "sampling 2/2" and p.fraction < 1.0 for p in seen)
