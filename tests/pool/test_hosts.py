"""Host learning: per-machine and per-GPU medians replace the static speed table, slow hosts are
excluded from ranking and replaced when idle, and what was learnt survives a restart (host_samples)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.db import init_db, make_engine, make_sessionmaker
from app.pool.hosts import HostBook, HostKnowledge, HostSample
from app.vast.offers import ClipProfile, OfferRequirements, rank_offers, table_speed


def offer(i: int, machine: int, gpu: str = "RTX 4090", price: float = 0.40) -> dict:
    return {
        "id": i,
        "machine_id": machine,
        "gpu_name": gpu,
        "dph_total": price,
        "gpu_ram": 24000,
        "disk_space": 100,
        "cuda_max_good": 12.8,
        "reliability2": 0.995,
        "inet_down": 900,
        "verified": True,
        "rentable": True,
        "rented": False,
        "num_gpus": 1,
    }


def samples(
    machine: str, gpu: str, s_per_step: float, n: int = 2, mbps: float | None = None
) -> list[HostSample]:
    one = HostSample(
        machine, gpu, gpu_s=s_per_step * 4, steps=4, frames=81, megapixels=0.4, download_mbps=mbps
    )
    return [one] * n


def test_slow_host_found_against_its_gpu_models_median():
    k = HostKnowledge(
        samples("1", "RTX 4090", 1.0) + samples("2", "RTX 4090", 1.1) + samples("3", "RTX 4090", 3.0),
        slow_factor=2.0,
    )
    assert k.slow_machines() == {"3"}
    st = k.machines()["3"]
    assert st.gpu_median_s_per_unit == pytest.approx(1.1 / 81 / 0.4) and st.ratio == pytest.approx(3.0 / 1.1)
    assert st.s_per_step == pytest.approx(3.0) and st.s_per_frame == pytest.approx(12.0 / 81)


def test_slow_host_jobs_of_different_sizes_are_compared_per_work():
    """A machine that ran big jobs is not slow: its time per step, frame and megapixel is what counts."""
    big = HostSample("1", "RTX 4090", gpu_s=40.0, steps=4, frames=81, megapixels=0.4)
    small = HostSample(
        "2", "RTX 4090", gpu_s=40.0 * (17 * 0.065) / (81 * 0.4), steps=4, frames=17, megapixels=0.065
    )
    slow = HostSample("3", "RTX 4090", gpu_s=3 * small.gpu_s, steps=4, frames=17, megapixels=0.065)
    k = HostKnowledge([big, small, slow], slow_factor=2.0)
    assert k.slow_machines() == {"3"}
    assert k.machines()["1"].s_per_step > 5 * k.machines()["3"].s_per_step  # s/step alone would say "1"


def test_slow_host_needs_peers_of_its_gpu_model():
    k = HostKnowledge(samples("1", "RTX 4090", 1.0) + samples("9", "RTX 3090", 5.0), slow_factor=2.0)
    assert k.slow_machines() == set()  # one machine per model: no median to be slow against


def test_slow_host_learnt_ranking_prefers_measured_machines():
    offers = [offer(1, 100, price=0.30), offer(2, 200, price=0.34), offer(3, 300, price=0.36)]
    req, profile = OfferRequirements(), ClipProfile(clips_per_instance=5)
    static, _ = rank_offers(offers, req, profile)
    assert [r.id for r in static] == [1, 2, 3]  # same GPU model: the cheapest wins
    k = HostKnowledge(
        samples("100", "RTX 4090", 3.0) + samples("200", "RTX 4090", 1.0) + samples("300", "RTX 4090", 1.0)
    )
    est = k.estimator(table_speed)
    assert est.slow == {"100"}
    learnt, _ = rank_offers(offers, req, profile, est)
    assert learnt[0].id == 2 and learnt[-1].id == 1  # the measured slow one falls to the end
    assert learnt[0].speed == pytest.approx(table_speed("RTX 4090") * 1.0 / 1.0)


def test_slow_host_per_gpu_median_ranks_unmeasured_machines():
    """An unmeasured machine gets its GPU model's measured speed; the table only calibrates the unit."""
    offers = [offer(1, 100, "RTX 4090", 0.40), offer(2, 200, "RTX 3090", 0.25)]
    req, profile = OfferRequirements(), ClipProfile()
    static, _ = rank_offers(offers, req, profile)
    # measured: the 3090s here run as fast as the 4090s (the table says 0.55x)
    k = HostKnowledge(samples("7", "RTX 4090", 1.0) + samples("8", "RTX 3090", 1.0))
    learnt, _ = rank_offers(offers, req, profile, k.estimator(table_speed))
    by_id = {r.id: r for r in learnt}
    assert by_id[2].speed > {r.id: r for r in static}[2].speed
    assert learnt[0].id == 2


def test_slow_host_measured_download_replaces_advertised():
    offers = [offer(1, 100, price=0.40), offer(2, 200, price=0.40)]
    k = HostKnowledge(
        samples("100", "RTX 4090", 1.0, mbps=50.0) + samples("200", "RTX 4090", 1.0, mbps=2000.0)
    )
    learnt, _ = rank_offers(offers, OfferRequirements(), ClipProfile(), k.estimator(table_speed))
    assert learnt[0].id == 2 and learnt[1].cold_start_s > learnt[0].cold_start_s


async def test_slow_host_samples_survive_a_restart(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    try:
        await init_db(engine)
        book = HostBook(make_sessionmaker(engine))
        for s in (
            samples("1", "RTX 4090", 1.0) + samples("2", "RTX 4090", 1.0) + samples("3", "RTX 4090", 2.5)
        ):
            await book.record(s)
        again = HostBook(make_sessionmaker(engine))
        assert (await again.load()).slow_machines() == {"3"}
        report = await again.report()
        assert report[0]["machine_id"] == "3" and report[0]["slow"] and report[0]["samples"] == 2
    finally:
        await engine.dispose()


def test_slow_host_cli_shows_what_was_learnt(tmp_path: Path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"

    async def seed() -> None:
        engine = make_engine(url)
        try:
            await init_db(engine)
            book = HostBook(make_sessionmaker(engine))
            for s in (
                samples("1", "RTX 4090", 1.0) + samples("2", "RTX 4090", 1.0) + samples("3", "RTX 4090", 2.5)
            ):
                await book.record(s)
        finally:
            await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(cli, ["instances", "hosts", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [h["machine_id"] for h in data["hosts"] if h["slow"]] == ["3"]
    out = CliRunner().invoke(cli, ["instances", "hosts"])
    assert out.exit_code == 0 and "SLOW" in out.output


class _Member:
    def __init__(self, busy: bool) -> None:
        self.jobs = {"job-x"} if busy else set()


class _Pool:
    def __init__(self, members: dict) -> None:
        self.members = members
        self.retired: list[tuple[str, str]] = []

    async def retire(self, instance_id: str, *, reason: str, force: bool = False) -> bool:
        self.retired.append((instance_id, reason))
        return True


class _Params:
    steps = 4
    num_frames = 81
    width = 800
    height = 500  # 0.4 megapixels, as samples() records


async def test_slow_host_idle_instance_is_replaced_busy_one_kept():
    from app.jobs.wiring import HostRecorder
    from app.pool.provider import Instance

    book = HostBook(None)
    for s in samples("1", "RTX 4090", 1.0) + samples("2", "RTX 4090", 1.0):
        await book.record(s)
    pool = _Pool({"a": _Member(busy=False), "b": _Member(busy=True)})
    record = HostRecorder(book, pool)
    slow = Instance(provider="vast", id="a", label="l", machine_id="3", gpu_name="RTX 4090")
    slow.meta.update(download_mbps=420.0, warmup={"wf": 1.0})
    await record(slow, "job-1", "wf", _Params(), 12.0)  # 3 s/step against a 1 s/step median
    assert pool.retired == [("a", "slow host: machine 3")] and slow.meta["slow_host"] is True
    assert book.knowledge.machines()["3"].download_mbps == 420.0
    busy = Instance(provider="vast", id="b", label="m", machine_id="4", gpu_name="RTX 4090")
    busy.meta["warmup"] = {"wf": 1.0}
    await record(busy, "job-2", "wf", _Params(), 12.0)
    assert [r[0] for r in pool.retired] == ["a"]  # a busy instance is left to finish its job
    fast = Instance(provider="vast", id="c", label="n", machine_id="5", gpu_name="RTX 4090")
    await record(fast, "job-3", "wf", _Params(), 40.0)  # not warmed up: its first job paid the model load
    assert "5" not in book.knowledge.machines()
    await record(fast, "job-4", "wf", _Params(), 4.0)
    assert book.knowledge.machines()["5"].samples == 1 and "slow_host" not in fast.meta
