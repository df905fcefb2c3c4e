"""Streaming outputs to disk: big files, short reads, missing files."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.comfy import ComfyClient, DownloadError, OutputFile, PromptResult
from tests.comfy.conftest import make_client
from tests.comfy.world import wan_graph


async def test_large_output_streams_to_disk_with_exact_size(emulator, start_image, tmp_path):
    emu = await emulator(video_pad_bytes=24 * 1024 * 1024)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        result = await comfy.run(wan_graph(name), deadline=time.monotonic() + 30)
        [path] = await comfy.download_outputs(result, tmp_path / "dl")
        png = await comfy.extract_last_frame(path, tmp_path / "dl" / "last.png")
    video = result.outputs[0]
    source = emu.install.comfy_dir / "output" / video.subfolder / video.filename
    assert path.stat().st_size == source.stat().st_size == 24 * 1024 * 1024
    assert png.stat().st_size > 0


async def test_missing_output_file_is_a_clear_error(emulator, tmp_path):
    emu = await emulator()
    gone = OutputFile("108", "vanished_00001.mp4", "video", "output", "gifs")
    async with make_client(emu.url) as comfy:
        with pytest.raises(DownloadError) as exc:
            await comfy.download_outputs(PromptResult("p", [gone]), tmp_path / "dl")
    assert "vanished_00001.mp4" in str(exc.value) and not exc.value.retryable
    assert not list((tmp_path / "dl").iterdir())


async def _short_body_server(announced: int, sent: int):
    """An HTTP server whose /view promises `announced` bytes and closes after `sent`."""

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
            + f"Content-Length: {announced}\r\nConnection: close\r\n\r\n".encode()
            + b"\0" * sent
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_truncated_transfer_fails_and_leaves_no_part_file(tmp_path):
    server, url = await _short_body_server(announced=1000, sent=400)
    out = OutputFile("108", "clip.mp4", "", "output", "gifs")
    try:
        async with ComfyClient(url, timeout=2) as comfy:
            with pytest.raises(DownloadError):
                await comfy.download_outputs(PromptResult("p", [out]), tmp_path)
    finally:
        server.close()
        await server.wait_closed()
    assert list(tmp_path.iterdir()) == []


async def _flaky_range_server(body: bytes, cut_at: int, honest_range: bool = True):
    """/view that breaks the first transfer after `cut_at` bytes, then answers Range requests with 206
    (and plain requests in full).
    `honest_range=False`: a 206 that starts at byte 0 whatever was asked (a broken proxy)."""
    calls: list[str | None] = []

    async def handle(reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        rng = next(
            (ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("range:")),
            None,
        )
        calls.append(rng)
        if rng is None:
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body[:cut_at] if len(calls) == 1 else body)
            )
        else:
            start = int(rng.removeprefix("bytes=").split("-")[0]) if honest_range else 0
            part = body[start:]
            writer.write(
                f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(part)}\r\n"
                f"Content-Range: bytes {start}-{len(body) - 1}/{len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + part
            )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", calls


@pytest.mark.parametrize("honest", [True, False])
async def test_broken_transfer_resumes_to_the_exact_bytes(tmp_path, honest):
    body = bytes(range(256)) * 12288  # 3 MiB, broken after 2.5 MiB: the first 2 MiB chunks are on disk
    server, url, calls = await _flaky_range_server(body, cut_at=2621440, honest_range=honest)
    out = OutputFile("108", "clip.mp4", "", "output", "gifs")
    try:
        async with ComfyClient(url, timeout=2) as comfy:
            path = await comfy.download(out, tmp_path / "clip.mp4")
    finally:
        server.close()
        await server.wait_closed()
    assert calls[:2] == [None, "bytes=2097152-"]
    assert path.read_bytes() == body
