"""Extract the last frame of a video as PNG without holding the video in memory.

Used to chain clips (the last frame of one is the start image of the next). PyAV decodes frame by
frame; only the most recent frame is kept. It first seeks near the end (to the last keyframe before the
stream's duration) so long videos decode a few frames, not all of them; if the seek yields nothing
(no duration, odd container) it decodes from the start.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from app.comfy.errors import ComfyError


class FrameExtractionError(ComfyError):
    """The video has no decodable frame (empty, truncated or not a video)."""


def _last_frame(path: Path, seek: bool) -> av.VideoFrame | None:
    last = None
    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek:
            if stream.duration is None or stream.time_base is None:
                return None
            container.seek(
                int(stream.start_time or 0) + int(stream.duration),
                stream=stream,
                backward=True,
                any_frame=False,
            )
        for frame in container.decode(stream):
            last = frame
    return last


def extract_last_frame(video_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> Path:
    """Write the video's last frame to `png_path` (atomically, via a .part file) and return it."""
    video_path, png_path = Path(video_path), Path(png_path)
    try:
        frame = _last_frame(video_path, seek=True)
        if frame is None:
            frame = _last_frame(video_path, seek=False)
    except (av.error.FFmpegError, OSError) as exc:
        raise FrameExtractionError(f"cannot decode {video_path.name}: {exc}") from exc
    if frame is None:
        raise FrameExtractionError(f"{video_path.name} has no video frame")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.name + ".part")
    frame.to_image().save(tmp, format="PNG")
    os.replace(tmp, png_path)
    return png_path
