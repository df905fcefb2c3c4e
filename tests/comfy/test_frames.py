"""Last-frame extraction (PyAV): the real last frame, atomically written, clear error on junk."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from app.comfy.frames import FrameExtractionError, extract_last_frame


def _write_video(path, frames, *, gop=4, size=(64, 48)):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=16)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 40 + i, dtype=np.uint8)
            if i == frames - 1:
                img[:] = (230, 20, 20)  # only the final frame is red
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _is_red(img):
    r, g, b = np.asarray(img.convert("RGB")).reshape(-1, 3).mean(axis=0)
    return r > 180 and g < 80 and b < 80


def test_last_frame_is_the_final_frame_not_a_keyframe(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, 33, gop=8)
    png = extract_last_frame(video, tmp_path / "out" / "last.png")
    img = Image.open(png)
    assert img.size == (64, 48)
    assert _is_red(img)
    assert not (tmp_path / "out" / "last.png.part").exists()


def test_last_frame_mid_gop(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, 30, gop=12)
    png = extract_last_frame(video, tmp_path / "last.png")
    assert _is_red(Image.open(png))


def test_not_a_video_raises_typed_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(FrameExtractionError):
        extract_last_frame(junk, tmp_path / "x.png")
