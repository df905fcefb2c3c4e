"""Benchmark: cost per clip over 200 simulated jobs on a market with 20% slow hosts, static ranking vs
learnt ranking, in one run (issue 9).

Both arms use the product's own code: the simulated Vast market (`default_market`, 200 offers), the
product's offer filter and ranking (`rank_offers` with the settings' requirements), and, for the learnt
arm, `HostKnowledge` fed one sample per finished job (its per-machine / per-GPU medians, slow hosts
excluded, an idle slow host replaced). The market's slow hosts are the simulated world's
(`is_slow_host`, SIM_SLOW_HOST_FRACTION), sampling SIM_SLOW_HOST_FACTOR x slower.

The world is a cost model, not a GPU: a clip takes `reference_clip_s / true speed` seconds (true speed =
the static table's speed, / the slow factor on a slow host, x a fixed per-machine spread of +-10%),
a rental's cold start is model bytes over the host's real link (70% of its advertised `inet_down`) plus
the boot overhead. `--pool` instances run at once; each rental serves `--clips-per-rental` jobs, then
its machine goes back to the market. Cost per clip = $/h x (clip seconds + cold start share).

    python bench/host_ranking.py [--jobs 200] [--slow-fraction 0.2] [--slow-factor 3] [--pool 4]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.config import Settings  # noqa: E402
from app.pool.hosts import HostKnowledge, HostSample  # noqa: E402
from app.pool.provider import CreateRequest  # noqa: E402
from app.sim.vast import default_market  # noqa: E402
from app.sim.vast.market import priced_offer  # noqa: E402
from app.sim.world import is_slow_host  # noqa: E402
from app.vast.offers import ClipProfile, gpu_speed, rank_offers, requirements_from, table_speed  # noqa: E402

STEPS = 4
FRAMES = 81
MEGAPIXELS = 832 * 480 / 1e6


def spread(machine: str) -> float:
    """A fixed +-10% per-machine variation (cooling, clocks), the same in both arms."""
    h = int.from_bytes(hashlib.sha256(f"spread:{machine}".encode()).digest()[:8], "big") / 2**64
    return 0.9 + 0.2 * h


def run(learn: bool, args: argparse.Namespace) -> dict[str, float]:
    settings = Settings(_env_file=None, host_slow_factor=args.host_slow_factor)
    market = [priced_offer(o, allocated_storage=41.0, offer_type="on-demand") for o in default_market()]
    profile = ClipProfile(clips_per_instance=args.clips_per_rental)
    request = CreateRequest(workflow="wan", disk_gb=41.0, min_gpu_ram_gb=24.0)
    knowledge = HostKnowledge(slow_factor=settings.host_slow_factor)
    rented: set[str] = set()
    done = cost = gpu_s_total = 0.0
    slow_jobs = rentals = replaced = 0
    # one rental per pool slot at a time; slots take turns job by job
    slots: list[dict | None] = [None] * args.pool
    while done < args.jobs:
        for i in range(args.pool):
            if done >= args.jobs:
                break
            slot = slots[i]
            if slot is None:
                learnt = knowledge.estimator(table_speed) if learn else None
                exclude = rented | (learnt.slow if learnt else set())
                req = requirements_from(settings, request, extra_exclude=exclude)
                ranked, _ = rank_offers(market, req, profile, learnt)
                best = ranked[0]
                machine = best.machine_id
                slow = is_slow_host(machine, args.slow_fraction)
                true_speed = gpu_speed(best.offer) / (args.slow_factor if slow else 1.0) * spread(machine)
                mbps = 0.7 * float(best.offer.get("inet_down") or 100.0)
                cold = profile.model_bytes * 8 / (mbps * 1e6) + profile.boot_overhead_s
                slot = slots[i] = {
                    "machine": machine,
                    "gpu": best.offer.get("gpu_name"),
                    "price": best.price_per_hour,
                    "clip_s": profile.reference_clip_s / true_speed,
                    "slow": slow,
                    "mbps": mbps,
                    "left": args.clips_per_rental,
                }
                rented.add(machine)
                rentals += 1
                cost += best.price_per_hour / 3600 * cold  # the rental's cold start, paid once
            clip_s = slot["clip_s"]
            cost += slot["price"] / 3600 * clip_s
            gpu_s_total += clip_s
            done += 1
            slow_jobs += int(slot["slow"])
            slot["left"] -= 1
            if learn:
                knowledge.add(
                    HostSample(
                        slot["machine"],
                        slot["gpu"],
                        clip_s,
                        steps=STEPS,
                        frames=FRAMES,
                        megapixels=MEGAPIXELS,
                        download_mbps=slot["mbps"],
                    )
                )
                if slot["left"] > 0 and slot["machine"] in knowledge.slow_machines():
                    slot["left"] = 0  # idle and measured slow: replaced
                    replaced += 1
            if slot["left"] <= 0:
                rented.discard(slot["machine"])
                slots[i] = None
    return {
        "cost_per_clip": cost / args.jobs,
        "gpu_s_per_clip": gpu_s_total / args.jobs,
        "jobs_on_slow_hosts": slow_jobs,
        "rentals": rentals,
        "replaced": replaced,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--slow-fraction", type=float, default=0.2)
    ap.add_argument("--slow-factor", type=float, default=3.0)
    ap.add_argument("--host-slow-factor", type=float, default=2.0)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--clips-per-rental", type=int, default=5)
    args = ap.parse_args()
    market = default_market()
    slow = sum(is_slow_host(str(o["machine_id"]), args.slow_fraction) for o in market)
    print(
        f"market: {len(market)} offers, {slow} on slow hosts ({slow / len(market):.0%}), "
        f"slow factor {args.slow_factor:g}"
    )
    print(f"{args.jobs} jobs, {args.pool} instances at once, {args.clips_per_rental} clips per rental\n")
    print(
        "| ranking | cost per clip ($) | GPU s per clip | jobs on slow hosts | rentals "
        "| slow hosts replaced |"
    )
    print("|---|---|---|---|---|---|")
    results = {}
    for learn in (False, True):
        r = results[learn] = run(learn, args)
        print(
            f"| {'learnt' if learn else 'static'} | {r['cost_per_clip']:.4f} | {r['gpu_s_per_clip']:.1f} | "
            f"{r['jobs_on_slow_hosts']} | {r['rentals']} | {r['replaced']} |"
        )
    saving = 1 - results[True]["cost_per_clip"] / results[False]["cost_per_clip"]
    print(f"\nlearnt ranking: {saving:.1%} cheaper per clip")


if __name__ == "__main__":
    main()
