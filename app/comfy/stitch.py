"""Join a story's segment videos into one MP4 by copying their packets: no decode, no re-encode.

An H.264 stream cannot lose its first (key) frame by cutting packets, so the frame every later segment
repeats (its start image, which is the previous segment's last frame) is dropped earlier, in the graph
before the encoder (`app.workflows.trim`). What arrives here is a list of MP4s whose frames already
follow each other; joining them is a remux:

- every segment must carry the same stream parameters (codec, size, pixel format, frame rate and the
  same SPS/PPS in its `avcC` extradata), which holds when one workflow encoder with the same settings
  wrote them all. Anything else is refused with `StitchError` rather than written as a file that
  decodes wrongly after the first joint;
- packets are read one at a time and written straight out, each segment's timestamps shifted so it
  starts where the previous one ended. Memory stays flat whatever the length.

The output gets `+faststart` (index before the data, playable while it downloads) and the first
segment's container metadata (a simulated world's `comment` says so in the joined file too).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from app.comfy.errors import ComfyError


class StitchError(ComfyError):
    """The segment videos cannot be joined by copying packets (different encoder settings, no video)."""


@dataclass(frozen=True)
class SegmentStreamInfo:
    path: str
    packets: int
    frames: int
    duration_s: float


@dataclass
class StitchResult:
    path: Path
    frames: int
    packets: int
    duration_s: float
    size_bytes: int
    seconds: float
    segments: list[SegmentStreamInfo] = field(default_factory=list)


@dataclass(frozen=True)
class _Params:
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    rate: Fraction | None
    extradata: bytes

    def describe(self) -> str:
        return (
            f"{self.codec} {self.width}x{self.height} {self.pix_fmt} @ {self.rate} fps, "
            f"{len(self.extradata)} bytes of codec headers"
        )


def _params(stream: av.video.stream.VideoStream) -> _Params:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return _Params(
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        pix_fmt=ctx.pix_fmt,
        rate=Fraction(rate) if rate else None,
        extradata=bytes(ctx.extradata or b""),
    )


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise StitchError(f"{path.name} has no video stream")
    return container.streams.video[0]


def stitch_videos(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> StitchResult:
    """Write the concatenation of `inputs` to `output` (atomically, via a `.part` file).

    Raises `StitchError` when a segment is missing, is not a video, or was encoded with different
    parameters than the first one."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise StitchError("nothing to join: no segment videos")
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    started = time.process_time()
    try:
        result = _stitch(paths, tmp)
        os.replace(tmp, out_path)
    except (av.error.FFmpegError, OSError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StitchError(f"joining the segment videos failed: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    result.path = out_path
    result.size_bytes = out_path.stat().st_size
    result.seconds = time.process_time() - started
    return result


def _stitch(paths: list[Path], tmp: Path) -> StitchResult:
    with av.open(str(paths[0])) as first:
        reference = _params(_video_stream(first, paths[0]))
        metadata = dict(first.metadata)
    if reference.rate is None:
        raise StitchError(f"{paths[0].name} declares no frame rate")
    frame_s = 1 / reference.rate
    result = StitchResult(path=tmp, frames=0, packets=0, duration_s=0.0, size_bytes=0, seconds=0.0)
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata.update(metadata)
        out_stream = None
        offset_s = Fraction(0)  # where the next segment starts on the joined timeline
        last_dts_s: Fraction | None = None
        for index, path in enumerate(paths):
            if not path.is_file():
                raise StitchError(f"segment {index + 1}: {path.name} is missing")
            with av.open(str(path)) as src:
                stream = _video_stream(src, path)
                params = _params(stream)
                if params != reference:
                    raise StitchError(
                        f"segment {index + 1} was encoded differently from segment 1 "
                        f"({params.describe()} vs {reference.describe()}); every segment must use the same "
                        "encoder settings, size and frame rate to be joined without re-encoding"
                    )
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                tb = stream.time_base
                if tb is None:
                    raise StitchError(f"segment {index + 1}: {path.name} has no time base")
                start: int | None = stream.start_time
                packets = frames = 0
                end_s = offset_s
                for packet in src.demux(stream):
                    if packet.size == 0:  # the demuxer's end-of-stream marker
                        continue
                    if packet.pts is None or packet.dts is None:
                        raise StitchError(f"segment {index + 1}: a packet without timestamps")
                    if start is None:
                        start = packet.pts
                    pts_s = (packet.pts - start) * tb + offset_s
                    dts_s = (packet.dts - start) * tb + offset_s
                    if last_dts_s is not None and dts_s <= last_dts_s:
                        raise StitchError(
                            f"segment {index + 1}: its decode timestamps overlap the previous segment's"
                        )
                    last_dts_s = dts_s
                    # In the segment's own time base; the muxer rescales to the output stream's.
                    packet.pts = round(pts_s / tb)
                    packet.dts = round(dts_s / tb)
                    duration_s = packet.duration * tb if packet.duration else frame_s
                    end_s = max(end_s, pts_s + duration_s)
                    packet.stream = out_stream
                    out.mux(packet)
                    packets += 1
                    frames += 1
                result.segments.append(SegmentStreamInfo(str(path), packets, frames, float(end_s - offset_s)))
                result.packets += packets
                result.frames += frames
                offset_s = end_s
        result.duration_s = float(offset_s)
    return result


def video_packets(path: str | os.PathLike[str]) -> list[bytes]:
    """Every video packet's payload in decode order (for proving a join copied instead of re-encoding)."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, Path(path))
        return [bytes(p) for p in container.demux(stream) if p.size]
