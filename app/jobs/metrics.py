"""Prometheus metrics: jobs by state, stage durations, instances, spend, webhook outcomes.

A registry per service (not the global one) so tests and several apps in one process never collide.
Gauges that mirror the database and the pool are refreshed when /metrics is scraped.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.jobs.models import Job

CONTENT_TYPE = CONTENT_TYPE_LATEST
_STAGE_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_by_state = Gauge("comfyfleet_jobs", "Jobs in the database by state", ["state"], registry=r)
        self.jobs_finished = Counter(
            "comfyfleet_jobs_finished", "Jobs that ended in this process", ["state", "cached"], registry=r
        )
        self.stage_seconds = Histogram(
            "comfyfleet_job_stage_seconds",
            "Time jobs spent in each state",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.instances = Gauge("comfyfleet_instances", "Pool instances by state", ["state"], registry=r)
        self.waiting = Gauge("comfyfleet_jobs_waiting_for_instance", "Jobs waiting for a slot", registry=r)
        self.spent = Gauge("comfyfleet_spend_usd", "Money spent so far by live pool instances", registry=r)
        self.projected = Gauge("comfyfleet_projected_spend_usd", "Spend including each idle TTL", registry=r)
        self.job_cost = Counter("comfyfleet_job_cost_usd", "Sum of per-job GPU cost", registry=r)
        self.webhooks = Counter("comfyfleet_webhook_deliveries", "Webhook attempts", ["outcome"], registry=r)
        self.cleanup = Counter("comfyfleet_cleanup_actions", "Cleanup actions", ["kind"], registry=r)

    def job_finished(self, job: Job) -> None:
        cached = bool((job.result or {}).get("cached"))
        self.jobs_finished.labels(job.state, str(cached).lower()).inc()
        for stage, seconds in (job.timings or {}).items():
            self.stage_seconds.labels(stage).observe(float(seconds))
        if job.cost_usd:
            self.job_cost.inc(job.cost_usd)

    async def render(self, repo: Any, pool: Any | None) -> bytes:
        for state, n in (await repo.counts_by_state()).items():
            self.jobs_by_state.labels(state).set(n)
        if pool is not None:
            snap = pool.snapshot()
            self.instances.clear()
            for state, n in snap["instances"].items():
                self.instances.labels(state).set(n)
            self.waiting.set(snap["waiting"])
            self.spent.set(snap["spent_usd"])
            self.projected.set(snap["projected_spend_usd"])
        return generate_latest(self.registry)
