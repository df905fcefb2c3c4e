"""What we learnt about rented hosts: their measured speed and download throughput (issue 9).

Every finished job records one sample (`host_samples`): the machine, its GPU model, the sampling seconds
per step and per frame, and the download throughput its provisioning reached. Offer ranking then prefers
measured figures to the static GPU table: per machine when that machine has samples, else per GPU model
(medians). A machine measured more than HOST_SLOW_FACTOR x slower than its GPU model's median is "slow":
excluded from ranking and, when idle, replaced.

Measured seconds are turned into the static table's unit (relative speed, RTX 4090 = 1) through one
constant: K = median over the measured GPU models of (static speed x measured s per step-frame-megapixel), the
RTX 4090 figure the measurements imply; a machine's learnt speed is K / its own figure. With one GPU model
measured this keeps that model's table speed and only moves its machines relative to each other.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, String, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

MIN_SAMPLES_SLOW = 1  # a machine's samples needed before it can be called slow
MIN_MACHINES_SLOW = 2  # machines of the GPU model needed for a meaningful median
LOAD_LIMIT = 5000  # newest samples kept in memory


class HostSampleRow(Base):
    __tablename__ = "host_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32), index=True)
    machine_id: Mapped[str] = mapped_column(String(64), index=True)
    gpu_name: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    instance_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    workflow: Mapped[str | None] = mapped_column(String(128), nullable=True)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    megapixels: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_s: Mapped[float] = mapped_column(Float)
    s_per_step: Mapped[float | None] = mapped_column(Float, nullable=True)
    s_per_frame: Mapped[float | None] = mapped_column(Float, nullable=True)
    download_mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True)
class HostSample:
    machine_id: str
    gpu_name: str | None
    gpu_s: float
    steps: int | None = None
    frames: int | None = None
    megapixels: float | None = None  # width x height / 1e6 of the job's frames
    download_mbps: float | None = None
    provider: str = "vast"
    instance_id: str | None = None
    job_id: str | None = None
    workflow: str | None = None
    created_at: float = 0.0

    @property
    def s_per_step(self) -> float | None:
        return self.gpu_s / self.steps if self.steps else None

    @property
    def s_per_frame(self) -> float | None:
        return self.gpu_s / self.frames if self.frames else None

    @property
    def s_per_unit(self) -> float | None:
        """Seconds per step per frame per megapixel: comparable across jobs of different sizes (a Wan
        sampler's work grows with all three), so machines that ran different jobs can be compared."""
        if not (self.steps and self.frames and self.megapixels):
            return None
        return self.gpu_s / (self.steps * self.frames * self.megapixels)


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return statistics.median(vals) if vals else None


@dataclass(frozen=True)
class HostStats:
    machine_id: str
    gpu_name: str | None
    samples: int
    s_per_step: float | None
    s_per_frame: float | None
    s_per_unit: float | None
    download_mbps: float | None
    gpu_median_s_per_unit: float | None
    slow: bool

    @property
    def ratio(self) -> float | None:
        """This machine's work rate over its GPU model's median (2.0 = twice as slow)."""
        if self.s_per_unit is None or not self.gpu_median_s_per_unit:
            return None
        return self.s_per_unit / self.gpu_median_s_per_unit

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None, n: int = 4) -> float | None:
            return None if v is None else round(v, n)

        return {
            "machine_id": self.machine_id,
            "gpu_name": self.gpu_name,
            "samples": self.samples,
            "s_per_step": r(self.s_per_step),
            "s_per_frame": r(self.s_per_frame),
            "s_per_step_frame_mp": r(self.s_per_unit, 6),
            "download_mbps": r(self.download_mbps, 1),
            "gpu_median_s_per_step_frame_mp": r(self.gpu_median_s_per_unit, 6),
            "ratio": r(self.ratio, 2),
            "slow": self.slow,
        }


class HostKnowledge:
    """Pure statistics over samples (no I/O): per machine, per GPU model, slow machines, learnt speeds.
    Speed comparisons use seconds per step per frame per megapixel (`HostSample.s_per_unit`), so jobs
    of different sizes are comparable; s/step and s/frame are kept for people to read."""

    def __init__(self, samples: Iterable[HostSample] = (), *, slow_factor: float = 2.0) -> None:
        self.slow_factor = slow_factor
        self.samples: list[HostSample] = list(samples)

    def add(self, sample: HostSample) -> None:
        self.samples.append(sample)
        if len(self.samples) > LOAD_LIMIT:
            del self.samples[: len(self.samples) - LOAD_LIMIT]

    def _by_machine(self) -> dict[str, list[HostSample]]:
        out: dict[str, list[HostSample]] = defaultdict(list)
        for s in self.samples:
            out[s.machine_id].append(s)
        return out

    def machines(self) -> dict[str, HostStats]:
        by_machine = self._by_machine()
        machine_step = {m: _median(s.s_per_unit for s in ss) for m, ss in by_machine.items()}
        gpu_of = {m: ss[-1].gpu_name for m, ss in by_machine.items()}
        # a GPU model's median is over its machines' medians (one busy machine does not dominate)
        per_gpu: dict[str | None, list[float]] = defaultdict(list)
        for m, v in machine_step.items():
            if v is not None:
                per_gpu[gpu_of[m]].append(v)
        gpu_median = {g: statistics.median(v) for g, v in per_gpu.items()}
        out = {}
        for m, ss in by_machine.items():
            g = gpu_of[m]
            med = gpu_median.get(g)
            step = machine_step[m]
            slow = (
                step is not None
                and med is not None
                and len(per_gpu.get(g, ())) >= MIN_MACHINES_SLOW
                and len(ss) >= MIN_SAMPLES_SLOW
                and step > self.slow_factor * med
            )
            out[m] = HostStats(
                machine_id=m,
                gpu_name=g,
                samples=len(ss),
                s_per_step=_median(s.s_per_step for s in ss),
                s_per_frame=_median(s.s_per_frame for s in ss),
                s_per_unit=step,
                download_mbps=_median(s.download_mbps for s in ss),
                gpu_median_s_per_unit=med,
                slow=slow,
            )
        return out

    def gpu_medians(self) -> dict[str, float]:
        per_gpu: dict[str, list[float]] = defaultdict(list)
        for st in self.machines().values():
            if st.s_per_unit is not None and st.gpu_name:
                per_gpu[st.gpu_name].append(st.s_per_unit)
        return {g: statistics.median(v) for g, v in per_gpu.items()}

    def slow_machines(self) -> set[str]:
        return {m for m, st in self.machines().items() if st.slow}

    def estimator(self, static_speed: Callable[[str | None], float]) -> OfferEstimator:
        return OfferEstimator(self, static_speed)


class OfferEstimator:
    """Learnt speed and download throughput of an offer's machine, in the static table's units; a
    snapshot (the ranking of one search sees one consistent view)."""

    def __init__(self, knowledge: HostKnowledge, static_speed: Callable[[str | None], float]) -> None:
        self.machines = knowledge.machines()
        self.gpu = knowledge.gpu_medians()
        self.slow = {m for m, st in self.machines.items() if st.slow}
        scaled = [static_speed(g) * v for g, v in self.gpu.items() if static_speed(g) > 0]
        self.k = statistics.median(scaled) if scaled else None  # implied RTX 4090 s/step

    def speed(self, machine_id: str, gpu_name: str | None) -> float | None:
        if self.k is None:
            return None
        st = self.machines.get(str(machine_id))
        if st is not None and st.s_per_unit:
            return self.k / st.s_per_unit
        med = self.gpu.get(gpu_name or "")
        return self.k / med if med else None

    def download_mbps(self, machine_id: str) -> float | None:
        st = self.machines.get(str(machine_id))
        return st.download_mbps if st is not None else None


class HostBook:
    """`HostKnowledge` kept in the database (`host_samples`), loaded once, appended as jobs finish."""

    def __init__(self, sessionmaker: async_sessionmaker | None, *, slow_factor: float = 2.0) -> None:
        self.sessionmaker = sessionmaker
        self.knowledge = HostKnowledge(slow_factor=slow_factor)
        self._loaded = sessionmaker is None

    async def load(self) -> HostKnowledge:
        if not self._loaded:
            async with self.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(HostSampleRow).order_by(HostSampleRow.id.desc()).limit(LOAD_LIMIT)
                    )
                ).scalars()
                samples = [
                    HostSample(
                        machine_id=r.machine_id,
                        gpu_name=r.gpu_name,
                        gpu_s=r.gpu_s,
                        steps=r.steps,
                        frames=r.frames,
                        megapixels=r.megapixels,
                        download_mbps=r.download_mbps,
                        provider=r.provider,
                        instance_id=r.instance_id,
                        job_id=r.job_id,
                        workflow=r.workflow,
                        created_at=r.created_at,
                    )
                    for r in rows
                ]
            self.knowledge.samples = list(reversed(samples)) + self.knowledge.samples
            self._loaded = True
        return self.knowledge

    async def record(self, sample: HostSample) -> None:
        if sample.created_at <= 0:
            sample = HostSample(**{**sample.__dict__, "created_at": time.time()})
        await self.load()
        if self.sessionmaker is not None:
            async with self.sessionmaker() as session, session.begin():
                session.add(
                    HostSampleRow(
                        provider=sample.provider,
                        machine_id=sample.machine_id,
                        gpu_name=sample.gpu_name,
                        instance_id=sample.instance_id,
                        job_id=sample.job_id,
                        workflow=sample.workflow,
                        steps=sample.steps,
                        frames=sample.frames,
                        gpu_s=sample.gpu_s,
                        megapixels=sample.megapixels,
                        s_per_step=sample.s_per_step,
                        s_per_frame=sample.s_per_frame,
                        download_mbps=sample.download_mbps,
                        created_at=sample.created_at,
                    )
                )
        self.knowledge.add(sample)

    async def report(self) -> list[dict[str, Any]]:
        """What was learnt, per machine (slowest relative to its GPU model first)."""
        k = await self.load()
        rows = [st.to_dict() for st in k.machines().values()]
        rows.sort(key=lambda r: (-(r["ratio"] or 0.0), r["gpu_name"] or "", r["machine_id"]))
        return rows
