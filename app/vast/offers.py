"""Which offer to rent: requirements (settings + workflow), the search query, and ranking by cost per clip.

The cheapest $/h is often not the cheapest clip: a slow link spends paid minutes downloading ~26 GB of
models, and a slow GPU bills more seconds per clip. `expected_cost_per_clip` prices both. Everything here
is pure (dicts in, numbers out), so the choice is unit-tested and explainable in one log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.pool.provider import CreateRequest

MIN_DISK_GB = 10.0

# Relative throughput for diffusion video (Wan 2.2 class, fp16/fp8 UNet), RTX 4090 = 1.0. Rough public
# benchmark ratios; unknown GPUs fall back to `dlperf` relative to the 4090's typical dlperf.
GPU_SPEED: dict[str, float] = {
    "H200": 2.1,
    "H100 SXM": 2.0,
    "H100 NVL": 1.8,
    "H100 PCIE": 1.6,
    "RTX 5090": 1.3,
    "A100 SXM4": 1.2,
    "A100X": 1.15,
    "A100 PCIE": 1.1,
    "L40S": 1.05,
    "RTX 4090": 1.0,
    "RTX 6000Ada": 0.95,
    "L40": 0.9,
    "RTX 4090D": 0.9,
    "RTX A6000": 0.6,
    "RTX 3090 Ti": 0.6,
    "RTX 3090": 0.55,
    "A40": 0.55,
    "RTX A5000": 0.45,
    "A10": 0.4,
}
REFERENCE_DLPERF = 106.0  # a typical RTX 4090 offer's dlperf


@dataclass(frozen=True)
class OfferRequirements:
    """Hard constraints on an offer. GB here; converted to the API's MB (x1000) in the query."""

    min_gpu_ram_gb: float = 24.0
    disk_gb: float = 40.0
    min_cuda: float = 12.4
    min_reliability: float = 0.98
    min_inet_down_mbps: float = 200.0
    verified_only: bool = True
    max_price_per_hour: float = 1.0
    gpu_names: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()  # 2-letter country codes
    interruptible: bool = False
    bid_margin: float = 1.10
    min_direct_ports: int = 0
    exclude_machines: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ClipProfile:
    """What one clip costs in time. `clips_per_instance` amortises the cold start over a rental."""

    model_bytes: float = 26e9
    reference_clip_s: float = 180.0  # GPU seconds for one clip on an RTX 4090
    boot_overhead_s: float = 120.0  # image pull + ComfyUI start, independent of bandwidth
    clips_per_instance: float = 5.0


@dataclass(frozen=True)
class RankedOffer:
    offer: Mapping[str, Any] = field(repr=False)
    price_per_hour: float  # what we would pay: dph_total, or our bid for interruptible
    bid_price: float | None
    speed: float
    cold_start_s: float
    clip_s: float
    cost_per_clip: float

    @property
    def id(self) -> int:
        return int(self.offer["id"])

    @property
    def machine_id(self) -> str:
        return str(self.offer.get("machine_id", ""))

    def summary(self) -> dict[str, Any]:
        return {
            "offer_id": self.id,
            "machine_id": self.machine_id,
            "gpu_name": self.offer.get("gpu_name"),
            "num_gpus": self.offer.get("num_gpus"),
            "price_per_hour": round(self.price_per_hour, 4),
            "bid_price": None if self.bid_price is None else round(self.bid_price, 4),
            "inet_down_mbps": self.offer.get("inet_down"),
            "reliability": _reliability(self.offer),
            "geolocation": self.offer.get("geolocation"),
            "speed": round(self.speed, 3),
            "cold_start_s": round(self.cold_start_s, 1),
            "clip_s": round(self.clip_s, 1),
            "cost_per_clip_usd": round(self.cost_per_clip, 5),
        }


def disk_gb_for(model_bytes: float, settings: Settings) -> float:
    """Disk to ask for: the models plus the configured headroom (ComfyUI, nodes, outputs)."""
    return max(MIN_DISK_GB, model_bytes / 1e9 + settings.vast_disk_headroom_gb)


def requirements_from(
    settings: Settings, request: CreateRequest, *, direct_ssh: bool = False, extra_exclude: Iterable[str] = ()
) -> OfferRequirements:
    """Settings + the workflow's request -> constraints. Direct ports: 8188 and 22 when ComfyUI is direct."""
    ports = 2 if settings.comfy_access == "direct" else (1 if direct_ssh else 0)
    return OfferRequirements(
        min_gpu_ram_gb=max(settings.vast_min_gpu_ram_gb, request.min_gpu_ram_gb),
        disk_gb=max(MIN_DISK_GB, request.disk_gb),
        min_cuda=settings.vast_min_cuda,
        min_reliability=settings.vast_min_reliability,
        min_inet_down_mbps=settings.vast_min_inet_down_mbps,
        verified_only=settings.vast_verified_only,
        max_price_per_hour=settings.vast_max_price_per_hour,
        gpu_names=tuple(settings.vast_gpu_names),
        regions=tuple(r.upper() for r in settings.vast_regions),
        interruptible=settings.vast_interruptible,
        bid_margin=settings.vast_bid_margin,
        min_direct_ports=ports,
        exclude_machines=frozenset(str(m) for m in request.exclude_machines)
        | frozenset(map(str, extra_exclude)),
    )


def profile_from(request: CreateRequest, settings: Settings) -> ClipProfile:
    """Model bytes are what the disk request holds beyond the headroom."""
    return ClipProfile(model_bytes=max(0.0, request.disk_gb - settings.vast_disk_headroom_gb) * 1e9)


def build_query(req: OfferRequirements, *, limit: int = 200) -> dict[str, Any]:
    """The `POST /bundles/` body. The server filters coarsely; `rejection` re-checks every offer."""
    q: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "num_gpus": {"gte": 1},
        "gpu_ram": {"gte": req.min_gpu_ram_gb * 1000.0},
        "disk_space": {"gte": req.disk_gb},
        "cuda_max_good": {"gte": req.min_cuda},
        "reliability": {"gte": req.min_reliability},
        "inet_down": {"gte": req.min_inet_down_mbps},
        "order": [["dph_total", "asc"]],
        "type": "bid" if req.interruptible else "on-demand",
        "limit": limit,
        "allocated_storage": req.disk_gb,
    }
    if req.interruptible:
        q["min_bid"] = {"lte": req.max_price_per_hour / max(req.bid_margin, 1e-9)}
    else:
        q["dph_total"] = {"lte": req.max_price_per_hour}
    if req.verified_only:
        q["verified"] = {"eq": True}
    if req.min_direct_ports:
        q["direct_port_count"] = {"gte": req.min_direct_ports}
    if req.gpu_names:
        q["gpu_name"] = {"in": list(req.gpu_names)}
    if req.regions:
        q["geolocation"] = {"in": list(req.regions)}
    return q


def _num(offer: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    try:
        value = offer.get(key)
        return default if value is None else float(value)
    except (TypeError, ValueError):
        return default


def _reliability(offer: Mapping[str, Any]) -> float:
    """`reliability2` when present (what Vast shows), else `reliability`."""
    if offer.get("reliability2") is not None:
        return _num(offer, "reliability2")
    return _num(offer, "reliability")


def country_code(geolocation: str | None) -> str:
    """`"Guangxi, CN"` -> "CN"; `", US"` -> "US"; "" when unknown."""
    if not geolocation:
        return ""
    tail = str(geolocation).strip().rsplit(",", 1)[-1].strip()
    return tail.upper() if len(tail) == 2 else ""


def offer_price(offer: Mapping[str, Any], req: OfferRequirements) -> tuple[float, float | None]:
    """($/h we would pay, bid or None). Interruptible: min_bid x margin (plus the storage share)."""
    if req.interruptible:
        bid = _num(offer, "min_bid") * req.bid_margin
        storage = _num(offer, "storage_total_cost")
        return bid + storage, bid
    return _num(offer, "dph_total", float("inf")), None


def rejection(offer: Mapping[str, Any], req: OfferRequirements) -> str | None:
    """Why this offer does not qualify, or None if it does (client-side re-check of every filter)."""
    if str(offer.get("machine_id", "")) in req.exclude_machines:
        return "machine failed before"
    if offer.get("rentable") is False or offer.get("rented") is True:
        return "not rentable"
    if _num(offer, "gpu_ram") < req.min_gpu_ram_gb * 1000.0:
        return f"gpu_ram {_num(offer, 'gpu_ram'):.0f} MB < {req.min_gpu_ram_gb * 1000:.0f}"
    if _num(offer, "disk_space") < req.disk_gb:
        return f"disk {_num(offer, 'disk_space'):.0f} GB < {req.disk_gb:.0f}"
    if _num(offer, "cuda_max_good") < req.min_cuda:
        return f"cuda {_num(offer, 'cuda_max_good')} < {req.min_cuda}"
    if _reliability(offer) < req.min_reliability:
        return f"reliability {_reliability(offer):.3f} < {req.min_reliability}"
    if _num(offer, "inet_down") < req.min_inet_down_mbps:
        return f"inet_down {_num(offer, 'inet_down'):.0f} < {req.min_inet_down_mbps:.0f} Mb/s"
    if req.verified_only and not (offer.get("verified") is True or offer.get("verification") == "verified"):
        return "not verified"
    if req.min_direct_ports and _num(offer, "direct_port_count") < req.min_direct_ports:
        return "too few direct ports"
    if req.gpu_names and offer.get("gpu_name") not in req.gpu_names:
        return f"gpu {offer.get('gpu_name')} not wanted"
    if req.regions and country_code(offer.get("geolocation")) not in req.regions:
        return f"region {offer.get('geolocation')} not wanted"
    price, _ = offer_price(offer, req)
    if price > req.max_price_per_hour:
        return f"${price:.3f}/h > max ${req.max_price_per_hour:.3f}/h"
    return None


def table_speed(gpu_name: str | None) -> float:
    """The static table's relative speed of a GPU model (0 when not in the table)."""
    return GPU_SPEED.get(str(gpu_name or "").strip(), 0.0)


def gpu_speed(offer: Mapping[str, Any]) -> float:
    """Relative clip throughput (RTX 4090 = 1). One clip runs on one GPU, so num_gpus does not help."""
    name = str(offer.get("gpu_name") or "").strip()
    if name in GPU_SPEED:
        return GPU_SPEED[name]
    dlperf = _num(offer, "dlperf")
    gpus = max(1.0, _num(offer, "num_gpus", 1.0))
    if dlperf > 0:
        return max(0.05, dlperf / gpus / REFERENCE_DLPERF)
    return 0.5  # unknown and no dlperf: assume a slowish card rather than a fast one


def expected_cost_per_clip(
    offer: Mapping[str, Any],
    req: OfferRequirements,
    profile: ClipProfile,
    *,
    speed: float | None = None,
    mbps: float | None = None,
) -> RankedOffer:
    """USD per clip = $/s x (cold start / clips per rental + GPU seconds per clip).

    cold start = model bytes x 8 / (inet_down Mb/s x 1e6) + fixed boot overhead; GPU seconds per clip =
    reference seconds / relative speed (table, else dlperf). Ties are broken by the caller's sort.
    """
    price, bid = offer_price(offer, req)
    speed = speed if speed is not None and speed > 0 else gpu_speed(offer)  # measured (hosts) or table
    mbps = max(1.0, mbps if mbps is not None and mbps > 0 else _num(offer, "inet_down", 1.0))
    cold = profile.model_bytes * 8.0 / (mbps * 1e6) + profile.boot_overhead_s
    clip = profile.reference_clip_s / speed
    cost = price / 3600.0 * (cold / max(profile.clips_per_instance, 1e-9) + clip)
    return RankedOffer(
        offer=offer,
        price_per_hour=price,
        bid_price=bid,
        speed=speed,
        cold_start_s=cold,
        clip_s=clip,
        cost_per_clip=cost,
    )


def rank_offers(
    offers: Iterable[Mapping[str, Any]], req: OfferRequirements, profile: ClipProfile, learnt: Any = None
) -> tuple[list[RankedOffer], dict[str, int]]:
    """Qualifying offers, cheapest expected clip first; plus a count of rejections by reason kind.

    `learnt` (an `app.pool.hosts.OfferEstimator`): measured speed per machine, else per GPU model, and
    measured download throughput, used instead of the static table and the advertised `inet_down`."""
    ranked: list[RankedOffer] = []
    rejected: dict[str, int] = {}
    for offer in offers:
        if "id" not in offer:
            continue
        why = rejection(offer, req)
        if why is not None:
            kind = why.split(" ")[0]
            rejected[kind] = rejected.get(kind, 0) + 1
            continue
        if learnt is None:
            ranked.append(expected_cost_per_clip(offer, req, profile))
            continue
        machine = str(offer.get("machine_id", ""))
        ranked.append(
            expected_cost_per_clip(
                offer,
                req,
                profile,
                speed=learnt.speed(machine, offer.get("gpu_name")),
                mbps=learnt.download_mbps(machine),
            )
        )
    ranked.sort(key=lambda r: (r.cost_per_clip, -_reliability(r.offer), r.price_per_hour, r.id))
    return ranked, rejected


def explain(ranked: list[RankedOffer], top: int = 3) -> str:
    """One log line: why the winner won (top N with their numbers)."""
    if not ranked:
        return "no qualifying offers"
    parts = []
    for i, r in enumerate(ranked[:top], 1):
        parts.append(
            f"#{i} offer {r.id} {r.offer.get('gpu_name')} ${r.price_per_hour:.3f}/h speed {r.speed:.2f} "
            f"{_num(r.offer, 'inet_down'):.0f}Mb/s cold {r.cold_start_s:.0f}s clip {r.clip_s:.0f}s "
            f"=> ${r.cost_per_clip:.4f}/clip"
        )
    return "; ".join(parts)
