"""The fleet as the API shows and steers it: instances, their files, destroying one, and the money.

Read side: the pool (what this process holds: leases, prepared workflows), the ledger (every instance
ever rented, with price and lifetime) and the job rows (which job runs where, what each cost). Steering:
`verify` re-hashes model files on the machine (and refetches what differs), `destroy` takes an instance
away after putting its jobs back in the queue, so no job is lost with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from app.errors import ComfyfleetError
from app.jobs.repo import JobRepo
from app.pool.provider import Instance, InstanceState
from app.redact import redact

log = logging.getLogger(__name__)


class InstanceNotFound(LookupError):
    """No instance with that id in the pool or the ledger."""


class FleetConflict(ComfyfleetError):
    """The instance cannot do that now (a static endpoint cannot be destroyed, a busy one refetched)."""


class Fleet:
    def __init__(
        self,
        *,
        pool: Any,
        provider: Any,
        ledger: Any | None,
        repo: JobRepo,
        manager: Any,
        preparer: Any,
        workflows: Callable[[str], Any],
        default_workflow: str,
        spend_cap_usd: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool, self.provider, self.ledger, self.repo = pool, provider, ledger, repo
        self.manager, self.preparer, self.workflows = manager, preparer, workflows
        self.default_workflow = default_workflow
        self.spend_cap_usd = spend_cap_usd
        self._clock = clock

    # --- reading -----------------------------------------------------------------------------------
    async def _instances(self) -> list[Instance]:
        """Pool members (live objects) first, then the ledger's other live rows (booting, failed...)."""
        seen: dict[str, Instance] = {m.id: m.instance for m in self.pool.members.values()}
        if self.ledger is not None:
            for inst in await self.ledger.list(alive_only=True):
                if inst.id and inst.id not in seen:
                    seen[inst.id] = inst
        return sorted(seen.values(), key=lambda i: i.created_at)

    async def list(self) -> list[dict[str, Any]]:
        return [await self._view(inst, detail=False) for inst in await self._instances()]

    async def get(self, instance_id: str) -> dict[str, Any]:
        return await self._view(await self._find(instance_id), detail=True)

    async def _find(self, instance_id: str) -> Instance:
        if "\x00" in instance_id:  # never a key; PostgreSQL would refuse the parameter rather than miss
            raise InstanceNotFound(instance_id)
        member = self.pool.members.get(instance_id)
        if member is not None:
            return member.instance
        inst = await self.ledger.get(instance_id) if self.ledger is not None else None
        if inst is None or not inst.id:
            raise InstanceNotFound(instance_id)
        return inst

    async def _view(self, inst: Instance, *, detail: bool) -> dict[str, Any]:
        now = self._clock()
        member = self.pool.members.get(inst.id)
        jobs = await self.repo.active_on(inst.id)
        job_ids = [j.id for j in jobs]
        for job_id in sorted(member.jobs) if member is not None else ():
            if job_id not in job_ids:
                job_ids.append(job_id)  # leased, not yet written as placed there
        out: dict[str, Any] = {
            "id": inst.id,
            "label": inst.label,
            "provider": inst.provider,
            "state": str(inst.state),
            "gpu_name": inst.gpu_name,
            "price_per_hour": round(inst.price_per_hour, 4),
            "uptime_s": round(max(0.0, (inst.destroyed_at or now) - inst.created_at), 1),
            "spent_usd": round(inst.spent_usd(now), 6),
            "in_pool": member is not None,
            "workflows": sorted(member.prepared) if member is not None else [],
            "current_job": job_ids[0] if job_ids else None,
            "jobs": job_ids,
            "jobs_served": member.jobs_served if member is not None else None,
            "paused": member.paused if member is not None else None,
            "created_at": inst.created_at,
            "ready_at": inst.ready_at,
            "last_used_at": inst.last_used_at,
            "simulated": inst.simulated,
        }
        if detail:
            out.update(
                machine_id=inst.machine_id,
                offer_id=inst.offer_id,
                ssh=str(inst.ssh) if inst.ssh else None,
                status_msg=redact(inst.status_msg or "") or None,
                # measurements other rooms record on the instance (timings, host numbers) as they are
                meta={k: v for k, v in inst.meta.items() if isinstance(v, str | int | float | bool | dict)},
                provisioning=self._provisioning(inst.id),
            )
        return out

    def _provisioning(self, instance_id: str) -> list[dict[str, Any]]:
        getter = getattr(self.preparer, "provisioning_of", None)
        return getter(instance_id) if getter is not None else []

    # --- steering ----------------------------------------------------------------------------------
    async def verify(self, instance_id: str, *, refetch: bool = False) -> dict[str, Any]:
        """Re-hash every model file the instance holds for its workflows (and refetch what differs)."""
        inst = await self._find(instance_id)
        member = self.pool.members.get(inst.id)
        if member is None or inst.state not in (InstanceState.READY, InstanceState.PROVISIONING):
            raise FleetConflict(f"instance {inst.id} is {inst.state} and not in this server's pool")
        verify = getattr(self.preparer, "verify", None)
        if verify is None:
            raise FleetConflict("this deployment's instances cannot be reached over SSH to check their files")
        names = sorted(member.prepared) or [self.default_workflow]
        workflows = [self.workflows(n) for n in names]
        if refetch and member.leases:
            raise FleetConflict(
                f"instance {inst.id} is running {', '.join(sorted(member.jobs)) or 'a job'}; refetching "
                "would pull model files from under it. Try again when it is idle (or verify without refetch)"
            )
        started = time.monotonic()
        if refetch:
            self.pool.pause(inst.id, "model files being refetched")
        try:
            async with member.prep_lock:  # never while a preparation of it runs
                reports = await verify(inst, workflows, refetch=refetch)
        finally:
            if refetch:
                self.pool.resume(inst.id)
        return {
            "instance_id": inst.id,
            "ok": all(r["ok"] or (refetch and _all_fixed(r)) for r in reports),
            "refetch": refetch,
            "seconds": round(time.monotonic() - started, 3),
            "workflows": reports,
        }

    async def destroy(self, instance_id: str, reason: str = "destroyed through the API") -> dict[str, Any]:
        """Put the instance's jobs back in the queue, then destroy it (and mark the ledger row)."""
        inst = await self._find(instance_id)
        if not getattr(self.provider, "can_create", True):
            raise FleetConflict(f"instance {inst.id} is a static endpoint; comfyfleet never destroys those")
        if inst.state is InstanceState.DESTROYED:
            raise FleetConflict(f"instance {inst.id} is already destroyed")
        member = self.pool.pause(inst.id, reason)
        requeued = []
        jobs = {j.id for j in await self.repo.active_on(inst.id)} | (member.jobs if member else set())
        for job_id in sorted(jobs):
            job = await self.manager.requeue(job_id, f"instance {inst.id} {reason}")
            requeued.append({"job_id": job_id, "state": job.state})
        if member is not None:
            await self.pool.retire(inst.id, reason=reason, force=True)
        else:
            await self.provider.destroy(inst)
            if self.ledger is not None:
                with contextlib.suppress(Exception):
                    await self.ledger.mark_destroyed(inst.id, reason=reason)
        log.info("instance %s %s; %d job(s) requeued", inst.id, reason, len(requeued))
        return {"instance_id": inst.id, "destroyed": True, "requeued_jobs": requeued}

    # --- money -------------------------------------------------------------------------------------
    async def spend(self) -> dict[str, Any]:
        now = self._clock()
        today = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        month = today.replace(day=1)
        t_day, t_month = today.timestamp(), month.timestamp()
        rows = await self.ledger.list(alive_only=False) if self.ledger is not None else []
        live = {m.id: m.instance for m in self.pool.members.values()}
        per_instance = []
        total_day = total_month = 0.0
        for inst in rows:
            inst = live.get(inst.id, inst)
            in_month = _cost_between(inst, t_month, now)
            if in_month <= 0 and not inst.alive:
                continue
            in_day = _cost_between(inst, t_day, now)
            total_day += in_day
            total_month += in_month
            per_instance.append(
                {
                    "id": inst.id or inst.label,
                    "gpu_name": inst.gpu_name,
                    "state": str(inst.state),
                    "price_per_hour": round(inst.price_per_hour, 4),
                    "today_usd": round(in_day, 6),
                    "month_usd": round(in_month, 6),
                    "total_usd": round(inst.spent_usd(now), 6),
                }
            )
        by_day = await self.repo.cost_by_workflow(t_day)
        by_month = await self.repo.cost_by_workflow(t_month)
        per_workflow = [
            {
                "workflow": wf,
                "today_usd": round(by_day.get(wf, (0.0, 0))[0], 6),
                "month_usd": round(cost, 6),
                "jobs_today": by_day.get(wf, (0.0, 0))[1],
                "jobs_month": n,
            }
            for wf, (cost, n) in sorted(by_month.items())
        ]
        attributed = sum(w["month_usd"] for w in per_workflow)
        return {
            "currency": "USD",
            "today_usd": round(total_day, 6),
            "month_usd": round(total_month, 6),
            "day_start": today.isoformat(),
            "month_start": month.isoformat(),
            "cap_usd": self.spend_cap_usd,
            "projected_usd": round(self.pool.projected_spend(), 6),
            "live_per_hour_usd": round(sum(i.price_per_hour for i in rows if i.alive), 4),
            "per_instance": per_instance,
            "per_workflow": per_workflow,
            # money of instances not charged to any job: boot, provisioning of unused workflows, idling
            "unattributed_month_usd": round(max(0.0, total_month - attributed), 6),
        }


def _cost_between(inst: Instance, start: float, now: float) -> float:
    begin = max(inst.created_at, start)
    end = min(inst.destroyed_at or now, now)
    return max(0.0, end - begin) / 3600.0 * inst.price_per_hour


def _all_fixed(report: dict[str, Any]) -> bool:
    return all(f["status"] in ("ok", "unknown") for f in report["files"])
