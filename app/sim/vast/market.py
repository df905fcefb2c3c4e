"""A simulated Vast.ai marketplace: offer records with the real field names and units.

Units follow the real `/bundles/` record (reference vastai.md §3.1): `gpu_ram`/`gpu_total_ram`/`cpu_ram`
in MB, `disk_space` GB, `inet_*` Mb/s, `dph_*` $/h, `storage_cost` $/GB/month, `storage_total_cost` $/h
for the searched `allocated_storage`, `compute_cap` = capability x 100, `duration` seconds.
Query-dependent fields (prices with storage, `is_bid`, `rn`, ...) are recomputed per search by
`priced_offer`, so a stored offer only holds the host's own facts.
"""

from __future__ import annotations

import random
import time
from typing import Any

# name -> (gpu_ram MB, compute_cap, cuda ceiling, fp32 TFLOPS, dlperf per GPU, $/h range per GPU, mem bw GB/s)
GPU_CATALOG: dict[str, tuple[int, int, float, float, float, tuple[float, float], float]] = {
    "RTX 3090": (24576, 860, 12.8, 35.6, 28.0, (0.13, 0.26), 936.0),
    "RTX 4090": (24564, 890, 13.0, 82.6, 62.0, (0.28, 0.48), 1008.0),
    "RTX 5090": (32607, 1200, 13.0, 104.8, 85.0, (0.50, 0.90), 1792.0),
    "RTX A5000": (24564, 860, 12.8, 27.8, 24.0, (0.17, 0.30), 768.0),
    "RTX A6000": (49140, 860, 12.8, 38.7, 33.0, (0.40, 0.65), 768.0),
    "L40S": (46068, 890, 13.0, 91.6, 70.0, (0.60, 0.95), 864.0),
    "A100 PCIE": (40960, 800, 12.8, 19.5, 55.0, (0.75, 1.20), 1555.0),
    "A100 SXM4": (81920, 800, 12.8, 19.5, 68.0, (0.95, 1.60), 2039.0),
    "H100 PCIE": (81559, 900, 13.0, 51.2, 95.0, (1.55, 2.30), 2000.0),
    "H100 SXM": (81559, 900, 13.0, 66.9, 120.0, (1.80, 2.80), 3350.0),
    "RTX 4080": (16376, 890, 13.0, 48.7, 40.0, (0.15, 0.25), 716.0),
    "RTX 3080": (10240, 860, 12.8, 29.8, 20.0, (0.07, 0.14), 760.0),
    "Tesla T4": (15360, 750, 12.4, 8.1, 8.0, (0.08, 0.15), 320.0),
}

# Relative frequency in the default market (24 GB+ cards dominate, a few small ones to be filtered out).
_GPU_WEIGHTS = {
    "RTX 3090": 18,
    "RTX 4090": 24,
    "RTX 5090": 6,
    "RTX A5000": 8,
    "RTX A6000": 7,
    "L40S": 5,
    "A100 PCIE": 4,
    "A100 SXM4": 5,
    "H100 PCIE": 3,
    "H100 SXM": 5,
    "RTX 4080": 6,
    "RTX 3080": 5,
    "Tesla T4": 4,
}

# free-text geolocation ending in a 2-letter country code, as the real API returns it
_REGIONS = [
    "California, US",
    "Texas, US",
    "Washington, US",
    "Virginia, US",
    "Utah, US",
    ", US",
    "Quebec, CA",
    "Ontario, CA",
    "Bavaria, DE",
    "Hesse, DE",
    "Nord-Pas-de-Calais, FR",
    "North Holland, NL",
    "England, GB",
    "Mazowieckie, PL",
    "Stockholm County, SE",
    "Guangxi, CN",
    "Hong Kong, HK",
    "Tokyo, JP",
    "Gyeonggi-do, KR",
    "New South Wales, AU",
    "Sao Paulo, BR",
    "Kyiv City, UA",
]

_CPUS = [
    ("AMD EPYC 7642 48-Core Processor", 96, 2.3, "H12SSL"),
    ("AMD EPYC 7543 32-Core Processor", 64, 2.8, "ROMED8-2T"),
    ("AMD Ryzen 9 7950X 16-Core Processor", 32, 4.5, "X670E AORUS MASTER"),
    ("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", 96, 3.0, "X11DPG-QT"),
    ("AMD EPYC 9354 32-Core Processor", 128, 3.25, "H13SSL-N"),
    ("Intel(R) Core(TM) i9-13900K", 32, 3.0, "PRIME Z790-P"),
]

_DISKS = ["INTEL SSDPE2KX080T8", "Samsung SSD 980 PRO 2TB", "SAMSUNG MZQL23T8HCLS", "WD_BLACK SN850X 4000GB"]

_DRIVERS = {12.4: "550.54.15", 12.6: "560.35.03", 12.8: "570.133.07", 13.0: "580.65.06", 12.2: "535.183.01"}


def _driver_vers(version: str) -> int:
    """`535.183.01` -> 535183001, the numeric form the API also returns."""
    parts = [int(p) for p in version.split(".")] + [0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1000 + parts[2]


def make_offer(**overrides: Any) -> dict[str, Any]:
    """One offer with every real field; `overrides` set any of them (e.g. `id`, `gpu_name`, `dph_base`).

    Useful in tests: `make_offer(id=1, gpu_name="RTX 4090", dph_base=0.3)`. `ask_contract_id` follows `id`
    unless given; GPU facts follow `gpu_name` from the catalog unless given.
    """
    gpu_name = overrides.get("gpu_name", "RTX 4090")
    ram, cap, cuda, tflops, dlperf, (lo, hi), mem_bw = GPU_CATALOG.get(
        gpu_name, (24564, 890, 12.8, 80.0, 60.0, (0.3, 0.4), 1000.0)
    )
    num_gpus = int(overrides.get("num_gpus", 1))
    offer_id = int(overrides.get("id", 11684738))
    now = time.time()
    driver = _DRIVERS.get(cuda, "570.133.07")
    base: dict[str, Any] = {
        "id": offer_id,
        "ask_contract_id": offer_id,
        "bundle_id": 1_598_539_855 + offer_id,
        "bundled_results": None,
        "machine_id": 22990 + offer_id % 100_000,
        "host_id": 125418,
        "hosting_type": 0,
        "hostname": None,
        "num_gpus": num_gpus,
        "gpu_name": gpu_name,
        "gpu_ram": ram,
        "gpu_total_ram": ram * num_gpus,
        "gpu_frac": 1.0,
        "gpu_ids": [82267 + i for i in range(num_gpus)],
        "gpu_lanes": 16,
        "gpu_mem_bw": mem_bw,
        "gpu_max_power": 450.0,
        "gpu_max_temp": 83.0,
        "gpu_arch": "nvidia",
        "gpu_display_active": False,
        "compute_cap": cap,
        "cuda_max_good": cuda,
        "driver_version": driver,
        "driver_vers": _driver_vers(driver),
        "cpu_arch": "amd64",
        "cpu_name": "AMD EPYC 7642 48-Core Processor",
        "cpu_cores": 96,
        "cpu_cores_effective": 24.0 * num_gpus,
        "cpu_ghz": 2.3,
        "cpu_ram": 64393 * num_gpus,
        "has_avx": 1,
        "mobo_name": "H12SSL",
        "os_version": "22.04",
        "ubuntu_version": "22.04",
        "pci_gen": 4.0,
        "pcie_bw": 12.3,
        "bw_nvlink": 0.0,
        "disk_name": "INTEL SSDPE2KX080T8",
        "disk_space": 1607.875,
        "disk_bw": 2545.294,
        "inet_down": 905.9,
        "inet_up": 677.7,
        "inet_down_cost": 0.0,
        "inet_up_cost": 0.0,
        "internet_down_cost_per_tb": 0.0,
        "internet_up_cost_per_tb": 0.0,
        "direct_port_count": 249,
        "public_ipaddr": "203.0.113.10",
        "static_ip": False,
        "geolocation": "California, US",
        "geolocode": 921675020,
        "dph_base": round((lo + hi) / 2 * num_gpus, 4),
        "min_bid": round(lo * 0.8 * num_gpus, 4),
        "credit_discount_max": 0.4,
        "discount_rate": 0.0,
        "discounted_hourly": 0.0,
        "storage_cost": 0.15,
        "vram_costperhour": 0.0102828,
        "dlperf": round(dlperf * num_gpus, 3),
        "total_flops": round(tflops * num_gpus, 3),
        "reliability": 0.995,
        "reliability2": None,
        "reliability_mult": 0.96,
        "expected_reliability": None,
        "rentable": True,
        "rented": False,
        "external": None,
        "verification": "verified",
        "vericode": 1,
        "is_vm_deverified": False,
        "vms_enabled": False,
        "resource_type": "gpu",
        "cluster_id": None,
        "avail_vol_ask_id": None,
        "avail_vol_dph": None,
        "avail_vol_size": None,
        "nw_disk_min_bw": None,
        "nw_disk_max_bw": None,
        "nw_disk_avg_bw": None,
        "platform_fee": 0.0,
        "start_date": now - 86400 * 30,
        "end_date": now + 86400 * 120,
        "time_remaining": "",
        "time_remaining_isbid": "",
        "logo": "/static/logos/vastai_small2.png",
        "webpage": None,
    }
    base.update(overrides)
    base["ask_contract_id"] = overrides.get("ask_contract_id", base["id"])
    if base.get("reliability2") is None:
        base["reliability2"] = base["reliability"]
    if base.get("expected_reliability") is None:
        base["expected_reliability"] = base["reliability"]
    base.pop("verified", None)  # not a record field: the `verified` filter reads `verification`
    return base


def priced_offer(
    offer: dict[str, Any],
    *,
    allocated_storage: float,
    offer_type: str,
    rn: int = 0,
    bid_price: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The offer as one search (or a create with `bid_price`) prices it: storage included, bid or not."""
    out = dict(offer)  # shallow: nested values are never mutated, and deep copies made search slow
    now = time.time() if now is None else now
    is_bid = offer_type == "bid" or bid_price is not None
    gpu_hour = float(bid_price if bid_price is not None else (out["min_bid"] if is_bid else out["dph_base"]))
    storage_hour = float(allocated_storage) * float(out["storage_cost"]) / 720.0
    total = gpu_hour + storage_hour
    discount = float(out.get("discount_rate") or 0.0) if offer_type == "reserved" else 0.0
    discounted = total * (1.0 - discount)
    out.update(
        {
            "is_bid": is_bid,
            "storage_total_cost": storage_hour,
            "dph_total": total,
            "dph_total_adj": total,
            "discounted_dph_total": discounted,
            "discounted_hourly": total - discounted,
            "dlperf_per_dphtotal": float(out["dlperf"]) / total if total else 0.0,
            "flops_per_dphtotal": float(out["total_flops"]) / total if total else 0.0,
            "duration": max(0.0, float(out["end_date"]) - now),
            "search": {
                "gpuCostPerHour": gpu_hour,
                "diskHour": storage_hour,
                "totalHour": total,
                "discountTotalHour": total - discounted,
                "discountedTotalPerHour": discounted,
            },
            "instance": {
                "gpuCostPerHour": 0,
                "diskHour": storage_hour,
                "totalHour": storage_hour,
                "discountTotalHour": 0,
                "discountedTotalPerHour": storage_hour,
            },
            "rn": rn,
        }
    )
    # `score` is the marketplace's default ranking: performance per dollar, weighted by reliability.
    out["score"] = out.get("score") or (
        float(out["dlperf"]) * float(out["reliability"]) ** 4 / max(total, 0.01)
    )
    return out


def default_market(n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """A realistic, reproducible market of `n` offers (same seed, same market)."""
    rng = random.Random(seed)
    names = list(_GPU_WEIGHTS)
    weights = [_GPU_WEIGHTS[k] for k in names]
    offers: list[dict[str, Any]] = []
    now = time.time()
    next_id = 11_684_000 + rng.randrange(1000)
    for _ in range(n):
        gpu_name = rng.choices(names, weights)[0]
        ram, cap, cuda_top, _tf, _dl, (lo, hi), _bw = GPU_CATALOG[gpu_name]
        num_gpus = rng.choices([1, 2, 4, 8], [70, 15, 10, 5])[0]
        cuda = rng.choice([c for c in (12.2, 12.4, 12.6, 12.8, 13.0) if c <= cuda_top])
        driver = _DRIVERS[cuda]
        cpu_name, cpu_cores, cpu_ghz, mobo = rng.choice(_CPUS)
        datacenter = rng.random() < 0.2
        verification = rng.choices(["verified", "unverified", "deverified"], [75, 20, 5])[0]
        reliability = round(min(0.9999, max(0.80, 1.0 - rng.expovariate(1 / 0.015))), 7)
        per_gpu = rng.uniform(lo, hi)
        direct = 0 if rng.random() < 0.15 else rng.choice([20, 50, 100, 249, 500, 1000])
        inet_down = round(
            rng.choice([rng.uniform(50, 300), rng.uniform(300, 1000), rng.uniform(1000, 8000)]), 1
        )
        next_id += rng.randrange(3, 4000)
        offer = make_offer(
            id=next_id,
            bundle_id=1_598_000_000 + rng.randrange(10**6),
            machine_id=10_000 + rng.randrange(60_000),
            host_id=1000 + rng.randrange(300_000),
            hosting_type=1 if datacenter else 0,
            num_gpus=num_gpus,
            gpu_name=gpu_name,
            gpu_ram=ram,
            gpu_total_ram=ram * num_gpus,
            gpu_frac=1.0,
            gpu_ids=[rng.randrange(10_000, 900_000) for _ in range(num_gpus)],
            gpu_lanes=rng.choice([8, 16]),
            compute_cap=cap,
            cuda_max_good=cuda,
            driver_version=driver,
            driver_vers=_driver_vers(driver),
            cpu_name=cpu_name,
            cpu_cores=cpu_cores,
            cpu_cores_effective=float(min(cpu_cores, 8 * num_gpus + rng.randrange(0, 8))),
            cpu_ghz=cpu_ghz,
            cpu_ram=rng.choice([32, 64, 128, 256]) * 1000 * num_gpus + rng.randrange(0, 999),
            mobo_name=mobo,
            pci_gen=rng.choice([3.0, 4.0, 4.0, 5.0]),
            pcie_bw=round(rng.uniform(5.0, 26.0), 1),
            disk_name=rng.choice(_DISKS),
            disk_space=round(
                rng.choice([rng.uniform(30, 120), rng.uniform(120, 800), rng.uniform(800, 4000)]), 3
            ),
            disk_bw=round(rng.uniform(300, 6000), 3),
            inet_down=inet_down,
            inet_up=round(inet_down * rng.uniform(0.3, 1.0), 1),
            inet_down_cost=round(rng.choice([0.0, 0.0, 0.002, 0.005]), 4),
            inet_up_cost=round(rng.choice([0.0, 0.0, 0.002, 0.005]), 4),
            direct_port_count=direct,
            public_ipaddr=f"203.0.{rng.randrange(113, 114)}.{rng.randrange(1, 254)}",
            static_ip=datacenter,
            geolocation=rng.choice(_REGIONS),
            geolocode=rng.randrange(10**8, 10**9),
            dph_base=round(per_gpu * num_gpus, 6),
            min_bid=round(per_gpu * num_gpus * rng.uniform(0.45, 0.75), 6),
            storage_cost=round(rng.uniform(0.05, 0.3), 4),
            dlperf=round(_dl * num_gpus * rng.uniform(0.85, 1.1), 3),
            total_flops=round(_tf * num_gpus * rng.uniform(0.95, 1.02), 3),
            reliability=reliability,
            reliability2=reliability,
            reliability_mult=round(reliability**8, 7),
            verification=verification,
            vericode={"verified": 1, "unverified": 0, "deverified": -1}[verification],
            start_date=now - 86400 * rng.uniform(1, 300),
            end_date=now + 86400 * rng.uniform(3, 365),
        )
        offers.append(offer)
    return offers
