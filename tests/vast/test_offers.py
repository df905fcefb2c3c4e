"""Offer requirements, the search query, and ranking by expected cost per clip (pure functions)."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.pool.provider import CreateRequest
from app.vast.errors import classify
from app.vast.offers import (
    ClipProfile,
    OfferRequirements,
    build_query,
    country_code,
    disk_gb_for,
    expected_cost_per_clip,
    explain,
    gpu_speed,
    rank_offers,
    rejection,
    requirements_from,
)


def offer(**kw):
    base = {
        "id": 1,
        "machine_id": 100,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram": 24564,
        "disk_space": 200.0,
        "cuda_max_good": 12.8,
        "reliability": 0.99,
        "reliability2": 0.99,
        "inet_down": 1000.0,
        "verified": True,
        "verification": "verified",
        "direct_port_count": 100,
        "dph_total": 0.40,
        "min_bid": 0.20,
        "storage_total_cost": 0.01,
        "geolocation": "California, US",
        "rentable": True,
        "rented": False,
        "dlperf": 106.0,
    }
    base.update(kw)
    return base


REQ = OfferRequirements(disk_gb=40, max_price_per_hour=1.0)
PROFILE = ClipProfile(model_bytes=26e9, reference_clip_s=180, boot_overhead_s=120, clips_per_instance=5)


def test_requirements_from_settings_and_request():
    s = Settings(
        vast_gpu_names="RTX 4090, RTX 3090",
        vast_regions="us,ca",
        comfy_access="direct",
        vast_max_price_per_hour=0.8,
    )
    req = requirements_from(
        s, CreateRequest(workflow="w", disk_gb=41.0, exclude_machines=frozenset({"7"})), extra_exclude={"9"}
    )
    assert req.gpu_names == ("RTX 4090", "RTX 3090")
    assert req.regions == ("US", "CA")
    assert req.min_direct_ports == 2  # 22 + 8188
    assert req.disk_gb == 41.0
    assert req.exclude_machines == {"7", "9"}
    assert requirements_from(Settings(), CreateRequest(workflow="w", disk_gb=5)).min_direct_ports == 0


def test_query_uses_api_units_and_operators():
    q = build_query(
        OfferRequirements(
            min_gpu_ram_gb=24, disk_gb=40, gpu_names=("RTX 4090",), regions=("US",), min_direct_ports=2
        )
    )
    assert q["gpu_ram"] == {"gte": 24000.0}  # GB x 1000 = MB
    assert q["disk_space"] == {"gte": 40}
    assert q["gpu_name"] == {"in": ["RTX 4090"]}  # spaces, not underscores
    assert q["geolocation"] == {"in": ["US"]}
    assert q["direct_port_count"] == {"gte": 2}
    assert q["dph_total"] == {"lte": 1.0}
    assert q["type"] == "on-demand" and q["verified"] == {"eq": True}


def test_query_interruptible_is_a_bid_search():
    q = build_query(OfferRequirements(interruptible=True, max_price_per_hour=1.1, bid_margin=1.1))
    assert q["type"] == "bid"
    assert q["min_bid"] == {"lte": pytest.approx(1.0)}
    assert "dph_total" not in q


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"gpu_ram": 16000}, "gpu_ram"),
        ({"disk_space": 30}, "disk"),
        ({"cuda_max_good": 11.8}, "cuda"),
        ({"reliability": 0.9, "reliability2": 0.9}, "reliability"),
        ({"inet_down": 50}, "inet_down"),
        ({"verified": False, "verification": "unverified"}, "not verified"),
        ({"dph_total": 1.5}, "$"),
        ({"machine_id": 666}, "machine failed before"),
        ({"rentable": False}, "not rentable"),
    ],
)
def test_requirement_filters_reject(override, reason):
    req = OfferRequirements(disk_gb=40, exclude_machines=frozenset({"666"}))
    why = rejection(offer(**override), req)
    assert why is not None and reason in why


def test_gpu_name_region_and_direct_port_filters():
    req = OfferRequirements(disk_gb=40, gpu_names=("RTX 3090",), regions=("DE",), min_direct_ports=2)
    assert "gpu" in rejection(offer(), req)
    assert "region" in rejection(offer(gpu_name="RTX 3090"), req)
    assert "direct ports" in rejection(
        offer(gpu_name="RTX 3090", geolocation="Hesse, DE", direct_port_count=1), req
    )
    assert rejection(offer(gpu_name="RTX 3090", geolocation="Hesse, DE"), req) is None


def test_country_code():
    assert country_code("Guangxi, CN") == "CN"
    assert country_code(", US") == "US"
    assert country_code("Somewhere") == ""
    assert country_code(None) == ""


def test_cost_per_clip_formula():
    r = expected_cost_per_clip(offer(dph_total=0.36, inet_down=800.0), REQ, PROFILE)
    cold = 26e9 * 8 / 800e6 + 120  # 260 s download + 120 s boot
    assert r.cold_start_s == pytest.approx(cold)
    assert r.clip_s == pytest.approx(180.0)
    assert r.cost_per_clip == pytest.approx(0.36 / 3600 * (cold / 5 + 180))


def test_slow_link_loses_to_slightly_pricier_fast_link():
    slow = offer(id=1, dph_total=0.30, inet_down=200.0)
    fast = offer(id=2, dph_total=0.33, inet_down=2000.0)
    ranked, _ = rank_offers([slow, fast], REQ, PROFILE)
    assert [r.id for r in ranked] == [2, 1]


def test_faster_gpu_wins_when_per_clip_it_is_cheaper():
    a3090 = offer(id=1, gpu_name="RTX 3090", dph_total=0.25)
    a4090 = offer(id=2, gpu_name="RTX 4090", dph_total=0.38)
    ranked, _ = rank_offers([a3090, a4090], REQ, PROFILE)
    assert ranked[0].id == 2
    assert ranked[0].cost_per_clip < ranked[1].cost_per_clip


def test_unknown_gpu_uses_dlperf_per_gpu():
    assert gpu_speed(offer(gpu_name="Mystery X", dlperf=53.0)) == pytest.approx(0.5)
    assert gpu_speed(offer(gpu_name="Mystery X", dlperf=212.0, num_gpus=2)) == pytest.approx(1.0)
    assert gpu_speed(offer(gpu_name="Mystery X", dlperf=None)) == 0.5


def test_interruptible_prices_at_min_bid_times_margin():
    req = OfferRequirements(disk_gb=40, interruptible=True, bid_margin=1.2)
    r = expected_cost_per_clip(offer(min_bid=0.2, storage_total_cost=0.01), req, PROFILE)
    assert r.bid_price == pytest.approx(0.24)
    assert r.price_per_hour == pytest.approx(0.25)


def test_rank_counts_rejections_and_explains_top_three():
    offers = [offer(id=i, dph_total=0.3 + i / 100) for i in range(1, 6)] + [offer(id=99, gpu_ram=8000)]
    ranked, rejected = rank_offers(offers, REQ, PROFILE)
    assert [r.id for r in ranked] == [1, 2, 3, 4, 5]
    assert rejected == {"gpu_ram": 1}
    text = explain(ranked)
    assert text.count("#") == 3 and text.split(";")[0].startswith("#1 offer 1 ") and "/clip" in text
    assert explain([]) == "no qualifying offers"


def test_ties_break_on_reliability_then_id():
    ranked, _ = rank_offers([offer(id=5, reliability2=0.99), offer(id=3, reliability2=0.995)], REQ, PROFILE)
    assert [r.id for r in ranked] == [3, 5]


def test_disk_for_models_plus_headroom():
    s = Settings(vast_disk_headroom_gb=15)
    assert disk_gb_for(26e9, s) == pytest.approx(41.0)
    assert disk_gb_for(0, s) == 15.0


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, "API requests too frequent endpoint threshold=4.5", "RateLimited"),
        (429, '{"detail":"API requests too frequent endpoint threshold=4.5"}', "RateLimited"),
        (429, '{"error":"search_quota_exceeded"}', "SearchQuotaExceeded"),
        (404, '{"error":"auth_error","msg":"Invalid user key"}', "AuthError"),
        (401, '{"msg":"nope"}', "AuthError"),
        (404, '{"error":"invalid_args","msg":"error 404/3603: no_such_ask"}', "OfferUnavailable"),
        (410, '{"msg":"error 410/3907: gone"}', "OfferUnavailable"),
        (411, '{"success":false,"msg":"insufficient credit"}', "InsufficientCredit"),
        (500, "oops", "VastApiError"),
    ],
)
def test_classify(status, body, kind):
    assert type(classify(status, body, {})).__name__ == kind


def test_classify_404_is_offer_gone_only_for_create():
    assert type(classify(404, '{"error":"not_found"}', op="create")).__name__ == "OfferUnavailable"
    assert type(classify(404, '{"error":"not_found"}', op="destroy")).__name__ == "VastApiError"
