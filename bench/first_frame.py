"""Benchmark: the first job on a fresh instance, with and without warm-up (issue 9).

Each run starts a fresh simulated world (instances boot like Vast's ComfyUI image) and a control plane,
submits one README-sized request (examples/lighthouse.png, default 81 frames) and reads back:
- time to first frame (TTFF): the instance's `meta.ttff_s`, from renting it to its first video made;
- submit -> video: the user's wait for that first job;
- the first job's GPU seconds (`timings.gpu_s`) and cost, and the instance's warm-up time.
The simulated ComfyUI pays --model-load-s on its first run after a start (model loading on a real one).
Runs alternate warm/cold; medians are printed.

    python bench/first_frame.py [--runs 3] [--model-load-s 6]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.conftest import b64, sim_api  # noqa: E402

LIGHTHOUSE = REPO_ROOT / "examples" / "lighthouse.png"


async def one(warmup: bool, load_s: float, data: Path) -> dict[str, float]:
    async with sim_api(
        data, comfy_warmup=warmup, sim_model_load_s=load_s, sim_step_delay_s=0.25, sim_time_scale=0.05
    ) as sim:
        t0 = time.monotonic()
        job = await sim.submit({"image_base64": b64(LIGHTHOUSE.read_bytes()), "prompt": "waves", "seed": 7})
        job = await sim.finished(job["job_id"], within_s=600)
        wait_s = time.monotonic() - t0
        assert job["state"] == "succeeded", job["error"]
        meta = (await sim.client.get(f"/instances/{job['result']['instance_id']}")).json()["meta"]
        return {
            "ttff_s": meta["ttff_s"],
            "wait_s": wait_s,
            "gpu_s": job["result"]["timings"]["gpu_s"],
            "cost_usd": job["result"]["cost_usd"],
            "warmup_s": float(meta.get("warmup_s", 0.0)),
        }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model-load-s", type=float, default=6.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-ttff-") as tmp:
        for i in range(args.runs):
            for warm in (True, False):
                r = await one(warm, args.model_load_s, Path(tmp) / f"{i}-{warm}")
                results[warm].append(r)
                print(
                    f"run {i + 1} warm-up={'on ' if warm else 'off'}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in r.items())
                )
    print(f"\nmedians over {args.runs} runs each (model load {args.model_load_s:.1f} s):")
    print(
        "| warm-up | TTFF (s) | submit -> video (s) | first job GPU s | first job cost ($) "
        "| instance warm-up (s) |"
    )
    print("|---|---|---|---|---|---|")
    for warm in (True, False):
        m = {k: statistics.median(r[k] for r in results[warm]) for k in results[warm][0]}
        print(
            f"| {'on' if warm else 'off'} | {m['ttff_s']:.2f} | {m['wait_s']:.2f} | {m['gpu_s']:.2f} | "
            f"{m['cost_usd']:.5f} | {m['warmup_s']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
