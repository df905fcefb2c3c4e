"""The simulated video: a slow pan/zoom over the start image with a drifting "SIMULATED" mark, encoded as a
real H.264 MP4 (yuv420p) with PyAV, frame by frame so memory stays flat whatever the length."""

from __future__ import annotations

import contextlib
import math
import struct
import threading
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

from app.sim.comfyui.nodes_base import Frames

METADATA_COMMENT = "comfyfleet simulated"
_PAD_CHUNK = 1 << 20


def solid_frames(width: int, height: int, count: int, color: int) -> Frames:
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return Frames(count, width, height, lambda _i: Image.new("RGB", (width, height), rgb))


def still_frames(image: Image.Image, count: int = 1) -> Frames:
    image = image.convert("RGB")
    return Frames(count, image.width, image.height, lambda _i: image)


def _gradient(width: int, height: int) -> Image.Image:
    base = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (base, base.rotate(90).resize((width, height)), base.transpose(0)))


def moving_frames(start: Frames | None, width: int, height: int, count: int, *, variation: int = 0) -> Frames:
    """Frames that visibly move: a slow zoom and diagonal pan over the start image, with a SIMULATED label
    and a filling bar so nobody mistakes it for a real generation.

    Frame 0 is the start image itself, resized to cover the output and centre-cropped, without a label:
    Wan's image-to-video keeps the start image as the first frame (its latent mask pins it; see the
    reference's ti2v notes), which is what lets a story chain clips on each one's last frame. The pan's
    direction comes from `variation` (the prompt and seed), so different requests give different clips."""
    angle = math.radians(variation % 360)
    dir_x, dir_y = math.cos(angle), math.sin(angle)
    source = start.frame(0) if start is not None and start.count > 0 else _gradient(width, height)
    pinned_first = start is not None and start.count > 0
    cover = max(width / source.width, height / source.height)
    big = source.convert("RGB").resize(
        (max(width, round(source.width * cover)), max(height, round(source.height * cover))),
        Image.Resampling.BILINEAR,
    )
    first = big.crop(
        (
            (big.width - width) // 2,
            (big.height - height) // 2,
            (big.width - width) // 2 + width,
            (big.height - height) // 2 + height,
        )
    )
    font = ImageFont.load_default(size=max(8, min(width, height) // 10))
    last = max(1, count - 1)

    def render(index: int) -> Image.Image:
        if index == 0 and pinned_first:
            return first.copy()
        t = index / last
        zoom = 1.0 - 0.15 * t  # the window shrinks to 85 % of the cover: a slow push-in
        crop_w, crop_h = width * zoom, height * zoom
        slack_x, slack_y = big.width - crop_w, big.height - crop_h
        # from the centre, drifting within the room the zoom makes: a slow camera move
        x0 = min(max(0.0, slack_x / 2 * (1 + 0.8 * t * dir_x)), slack_x)
        y0 = min(max(0.0, slack_y / 2 * (1 + 0.8 * t * dir_y)), slack_y)
        frame = big.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
        draw = ImageDraw.Draw(frame)
        # the label drifts and a bar fills up, so even a flat start image gives a moving video
        text_w = draw.textlength("SIMULATED", font=font)
        x = width // 20 + (width - text_w - width // 10) * t
        draw.text(
            (x, height // 20),
            "SIMULATED",
            font=font,
            fill=(255, 255, 255),
            stroke_width=max(1, font.size // 12),
            stroke_fill=(0, 0, 0),
        )
        bar = max(2, height // 40)
        draw.rectangle((0, height - bar, round(width * (index + 1) / count), height), fill=(255, 255, 255))
        return frame

    return Frames(count, width, height, render)


def ending_on(frames: Frames, end: Frames) -> Frames:
    """First-last-frame: the clip blends into `end` over its second half and its last frame IS `end`
    (resized to cover and centre-cropped, like the start image)."""
    width, height, count = frames.width, frames.height, frames.count
    source = end.frame(end.count - 1).convert("RGB")
    cover = max(width / source.width, height / source.height)
    big = source.resize((max(width, round(source.width * cover)), max(height, round(source.height * cover))))
    left, top = (big.width - width) // 2, (big.height - height) // 2
    target = big.crop((left, top, left + width, top + height))
    last = max(1, count - 1)

    def render(index: int) -> Image.Image:
        if index >= count - 1:
            return target.copy()
        t = index / last
        if t <= 0.5:
            return frames.frame(index)
        return Image.blend(frames.frame(index).convert("RGB"), target, (t - 0.5) * 2)

    return Frames(count, width, height, render)


class Mp4Writer:
    """Incremental video writer; `add(frame)` per tick so the caller can report progress per frame.
    H.264 in MP4 by default, VP9 in WebM with `container="webm"`; with `audio_path` the file's audio is
    muxed in (AAC in MP4, Opus in WebM), cut to the video's duration."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        crf: int = 19,
        *,
        audio_path: Path | None = None,
        container: str = "mp4",
    ) -> None:
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        self.container = av.open(str(path), "w", format=container)
        self.container.metadata["comment"] = METADATA_COMMENT
        self.rate = Fraction(fps).limit_denominator(1001)
        codec = "libvpx-vp9" if container == "webm" else "libx264"
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        crf_value = str(max(0, min(63 if container == "webm" else 51, int(crf))))
        if container == "webm":
            self.stream.options = {"crf": crf_value, "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            self.stream.options = {"preset": "ultrafast", "crf": crf_value}
        self.frames = 0
        self.audio_path = audio_path
        self.audio_stream = None
        if audio_path is not None:
            with av.open(str(audio_path)) as src:
                rate = int(src.streams.audio[0].codec_context.sample_rate or 48000)
            audio_codec = "libopus" if container == "webm" else "aac"
            rate = 48000 if audio_codec == "libopus" else rate
            self.audio_stream = self.container.add_stream(audio_codec, rate=rate)
        self._lock = threading.Lock()
        self._closed = False

    # One lock around every use of the container: a cancelled render calls abort() while the frame its
    # worker thread is encoding is still in flight, and closing the container under libav's feet crashed
    # the whole process (segfault). abort() now waits for that frame; later calls find it closed.

    def add(self, image: Image.Image) -> None:
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height))
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        with self._lock:
            if self._closed:
                raise RuntimeError("the video writer is closed")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames += 1

    def _mux_audio(self) -> None:
        stream = self.audio_stream
        assert stream is not None and self.audio_path is not None
        ctx = stream.codec_context
        limit = math.ceil(self.frames / self.rate * ctx.sample_rate)  # cut to the video's duration
        resampler = av.AudioResampler(format=ctx.format.name, layout=ctx.layout.name, rate=ctx.sample_rate)
        fifo = av.AudioFifo()
        written = 0
        size = ctx.frame_size or 1024

        def drain(final: bool) -> None:
            nonlocal written
            while fifo.samples >= size or (final and fifo.samples > 0):
                chunk = fifo.read(min(size, fifo.samples) if final else size)
                if chunk is None:
                    break
                chunk.pts = written
                written += chunk.samples
                for packet in stream.encode(chunk):
                    self.container.mux(packet)

        with av.open(str(self.audio_path)) as src:
            consumed = 0
            for frame in src.decode(src.streams.audio[0]):
                frame.pts = None
                for out in resampler.resample(frame):
                    if consumed >= limit:
                        break
                    if consumed + out.samples > limit:  # only the part inside the video
                        keep = limit - consumed
                        arr = (
                            out.to_ndarray()[:, :keep]
                            if out.format.is_planar
                            else out.to_ndarray()[:, : keep * len(out.layout.channels)]
                        )
                        cut = av.AudioFrame.from_ndarray(arr, format=out.format.name, layout=out.layout.name)
                        cut.sample_rate = out.sample_rate
                        out = cut
                    consumed += out.samples
                    out.pts = None
                    fifo.write(out)
                drain(False)
                if consumed >= limit:
                    break
        drain(True)
        for packet in stream.encode(None):
            self.container.mux(packet)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the video writer is closed")
            self._closed = True
            for packet in self.stream.encode():
                self.container.mux(packet)
            if self.audio_stream is not None:
                self._mux_audio()
            self.container.close()

    def abort(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):  # already broken; the file is removed by the caller
                self.container.close()


def pad_with_free_box(path: Path, target_size: int) -> None:
    """Grow an MP4 to target_size bytes with a trailing `free` box (players skip it), written in chunks."""
    size = path.stat().st_size
    pad = target_size - size
    if pad < 8:
        return
    with path.open("ab") as fh:
        if pad < 2**32:
            fh.write(struct.pack(">I4s", pad, b"free"))
            remaining = pad - 8
        else:
            if pad < 16:
                return
            fh.write(struct.pack(">I4sQ", 1, b"free", pad))
            remaining = pad - 16
        zeros = bytes(_PAD_CHUNK)
        while remaining > 0:
            n = min(remaining, _PAD_CHUNK)
            fh.write(zeros[:n])
            remaining -= n
