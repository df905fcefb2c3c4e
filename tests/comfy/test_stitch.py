"""Joining segment MP4s by packet copy: frames and pixels kept, packets copied, mismatches refused."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from app.comfy.stitch import StitchError, stitch_videos, video_packets


def _encode(path, frames: int, *, preset: str = "medium", size=(128, 96), fps: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": preset, "crf": "19"}
        for i in range(frames):
            img = np.roll(base, 3 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])  # medium: B-frames, negative start dts
def test_joined_video_has_every_frame_pixel_for_pixel_from_copied_packets(tmp_path, preset):
    parts = [_encode(tmp_path / f"s{i}.mp4", n, preset=preset, seed=i) for i, n in enumerate((9, 8, 8))]
    result = stitch_videos(parts, tmp_path / "out" / "story.mp4")
    assert result.frames == result.packets == 25
    assert abs(result.duration_s - 25 / 16) < 1e-6
    assert [s.frames for s in result.segments] == [9, 8, 8]
    assert video_packets(result.path) == [p for part in parts for p in video_packets(part)]
    expected = [f for part in parts for f in _decoded(part)]
    joined = _decoded(result.path)
    assert len(joined) == 25 and all((a == b).all() for a, b in zip(joined, expected, strict=True))
    with av.open(str(result.path)) as c:
        assert c.streams.video[0].average_rate == 16
    assert not (tmp_path / "out" / "story.mp4.part").exists()


def test_segment_of_another_size_is_refused_not_joined(tmp_path):
    a = _encode(tmp_path / "a.mp4", 5)
    b = _encode(tmp_path / "b.mp4", 5, size=(160, 96))
    with pytest.raises(StitchError, match="segment 2 was encoded differently"):
        stitch_videos([a, b], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.mp4.part").exists()


def test_segment_with_other_encoder_settings_is_refused(tmp_path):
    a = _encode(tmp_path / "a.mp4", 5, preset="medium")
    b = _encode(tmp_path / "b.mp4", 5, preset="ultrafast")  # other profile: other SPS/PPS
    with pytest.raises(StitchError, match="encoder settings"):
        stitch_videos([a, b], tmp_path / "out.mp4")


def test_segment_at_another_frame_rate_is_refused(tmp_path):
    a = _encode(tmp_path / "a.mp4", 5, fps=16)
    b = _encode(tmp_path / "b.mp4", 5, fps=24)
    with pytest.raises(StitchError):
        stitch_videos([a, b], tmp_path / "out.mp4")


def test_missing_segment_is_refused(tmp_path):
    a = _encode(tmp_path / "a.mp4", 5)
    with pytest.raises(StitchError, match="missing"):
        stitch_videos([a, tmp_path / "gone.mp4"], tmp_path / "out.mp4")


def test_no_segments_is_refused(tmp_path):
    with pytest.raises(StitchError, match="nothing to join"):
        stitch_videos([], tmp_path / "out.mp4")


def test_a_file_that_is_not_a_video_is_refused(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(StitchError):
        stitch_videos([junk], tmp_path / "out.mp4")
