"""Joining a 12-segment story (81 frames each, 832x480 H.264) by packet copy, against a decode + re-encode.

Setup (not measured): 12 segment MP4s encoded like VideoHelperSuite writes them (libx264, yuv420p, CRF 19,
preset medium: B-frames, High profile), the first one 81 frames and the others 80 (their repeated first
frame already dropped in the graph), from a detailed panning texture so the files have a realistic size.

Measured, each in a fresh child process (so one run's memory does not hide the other's):
- `stitch`: `app.comfy.stitch.stitch_videos`, the story's join;
- `reencode` (baseline, what the packet copy avoids): decode every segment and encode one new H.264 stream
  with the same settings.
For each: CPU seconds (user + sys of the child), wall seconds, and peak RSS growth over the child's RSS
just before the join (sampled every 5 ms), next to the joined file's size.

    python bench/story_stitch.py [--segments 12] [--frames 81] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WIDTH, HEIGHT, FPS = 832, 480, 16


def encode_segment(path: Path, frames: int, offset: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(offset)
    # a smooth random texture bigger than the frame, panned: detail that costs bits, like a real clip
    small = rng.integers(0, 255, (HEIGHT // 4 + 80, WIDTH // 4 + 160, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    texture = texture // 2 + rng.integers(0, 48, texture.shape, dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "medium", "crf": "19"}
        for i in range(frames):
            x, y = (offset * frames + i) * 3 % 600, i % 300
            frame = np.ascontiguousarray(texture[y % 300 : y % 300 + HEIGHT, x : x + WIDTH][:HEIGHT, :WIDTH])
            if frame.shape[:2] != (HEIGHT, WIDTH):
                frame = np.ascontiguousarray(texture[:HEIGHT, :WIDTH])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def reencode(inputs: list[Path], output: Path) -> int:
    """The baseline: decode everything, encode one stream (what a join without packet copy costs)."""
    import av

    frames = 0
    with av.open(str(output), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "medium", "crf": "19"}
        for path in inputs:
            with av.open(str(path)) as src:
                for frame in src.decode(video=0):
                    frame.pts, frame.time_base = frames, Fraction(1, FPS)
                    for packet in stream.encode(frame):
                        out.mux(packet)
                    frames += 1
        for packet in stream.encode():
            out.mux(packet)
    return frames


def child(mode: str, inputs: list[Path], output: Path) -> None:
    """Runs in a fresh process: measure one join and print JSON."""
    import psutil

    from app.comfy.stitch import stitch_videos

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    halt = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not halt.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, wall0 = os.times(), time.perf_counter()
    if mode == "stitch":
        frames = stitch_videos(inputs, output).frames
    else:
        frames = reencode(inputs, output)
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    halt.set()
    sampler.join()
    peak = max(peak, proc.memory_info().rss)
    print(
        json.dumps(
            {
                "mode": mode,
                "frames": frames,
                "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
                "wall_s": wall,
                "rss_growth_mb": (peak - base) / 2**20,
                "output_mb": output.stat().st_size / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, output, *inputs = args.child
        child(mode, [Path(p) for p in inputs], Path(output))
        return

    with tempfile.TemporaryDirectory(prefix="stitch-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        segments = []
        for i in range(args.segments):
            path = work / f"segment-{i + 1}.mp4"
            encode_segment(path, args.frames if i == 0 else args.frames - 1, i)
            segments.append(path)
        size = sum(p.stat().st_size for p in segments) / 2**20
        print(
            f"setup: {args.segments} segments, {WIDTH}x{HEIGHT}, {size:.1f} MB in all "
            f"(encoded in {time.perf_counter() - t0:.1f} s)"
        )
        modes = ["stitch"] if args.no_baseline else ["stitch", "reencode"]
        header = ("join", "frames", "CPU s", "wall s", "RSS growth MB", "output MB")
        print("{:<10} {:>6} {:>8} {:>8} {:>14} {:>10}".format(*header))
        for mode in modes:
            out = work / f"{mode}.mp4"
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(out), *map(str, segments)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{mode:<10} {r['frames']:>6} {r['cpu_s']:>8.3f} {r['wall_s']:>8.3f} "
                f"{r['rss_growth_mb']:>14.1f} {r['output_mb']:>10.1f}"
            )
        print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
