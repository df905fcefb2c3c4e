"""The reaper: money and disk that nothing uses any more.

One pass destroys instances idle past the TTL, instances stuck short of ready past their deadline, and
instances carrying our label that the ledger does not know (orphans: a crash between create and record,
or someone else's process); fails jobs stuck past the job timeout; prunes old temp files. Every action is
logged and written to `cleanup_actions`, with `--dry-run` writing what would have happened. A failure to
list the provider's instances is an alarm, never "there are none".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.jobs.repo import JobRepo
from app.pool.ports import Ledger
from app.pool.provider import PENDING_STATES, Instance, InstanceState, Provider
from app.redact import redact

log = logging.getLogger(__name__)


@dataclass
class Action:
    # idle_instance | stuck_instance | orphan_instance | stuck_job | temp_file | input_file | list_failed
    kind: str
    target: str
    reason: str
    dry_run: bool = False
    ok: bool = True
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cleaner:
    def __init__(
        self,
        repo: JobRepo,
        provider: Provider | None,
        ledger: Ledger | None,
        *,
        pool: Any | None = None,
        manager: Any | None = None,
        idle_ttl_s: float = 600.0,
        instance_deadline_s: float = 1800.0 + 3600.0,
        job_timeout_s: float = 1800.0,
        tmp_dirs: tuple[Path, ...] = (),
        tmp_max_age_s: float = 6 * 3600.0,
        inputs_dir: Path | None = None,
        inputs_max_age_s: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        on_action: Callable[[Action], None] | None = None,
    ) -> None:
        self.repo, self.provider, self.ledger = repo, provider, ledger
        self.pool, self.manager = pool, manager
        self.idle_ttl_s = idle_ttl_s
        self.instance_deadline_s = instance_deadline_s
        self.job_timeout_s = job_timeout_s
        self.tmp_dirs = tmp_dirs
        self.tmp_max_age_s = tmp_max_age_s
        self.inputs_dir = inputs_dir
        self.inputs_max_age_s = inputs_max_age_s
        self._clock = clock
        self.on_action = on_action
        self._lock = asyncio.Lock()
        # Replicas: the periodic pass runs only while this one holds the cleanup lease (app.pool.locks).
        self.gate: Callable[[], Awaitable[bool]] | None = None

    async def run_once(self, *, dry_run: bool = False) -> list[Action]:
        async with self._lock:
            actions: list[Action] = []
            for step in (self._instances, self._orphans, self._jobs, self._temp_files):
                try:
                    actions.extend(await step(dry_run))
                except Exception as exc:  # one failing rule must not stop the others
                    actions.append(
                        Action(
                            "error",
                            step.__name__.strip("_"),
                            "cleanup rule failed",
                            dry_run,
                            ok=False,
                            error=redact(str(exc)),
                        )
                    )
            for a in actions:
                await self._record(a)
            return actions

    async def run_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self.gate is not None and not await self.gate():
                    continue  # another replica runs the cleanup
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("cleanup pass failed: %s", redact(str(exc)))

    # --- rules -------------------------------------------------------------------------------------
    async def _instances(self, dry_run: bool) -> list[Action]:
        out: list[Action] = []
        if (
            self.provider is None
        ):  # e.g. `comfyfleet cleanup` with no running simulated world: no instance outlived its process
            return out
        now = self._clock()
        members = getattr(self.pool, "members", {}) if self.pool is not None else {}
        if self.pool is not None and self.provider.can_create:
            if not dry_run:
                await self.pool.touch_busy()  # heartbeat for a cron `comfyfleet cleanup` reading the ledger
            for m in self.pool.idle_members(self.idle_ttl_s):
                last = m.instance.last_used_at or m.instance.ready_at or m.instance.created_at
                reason = f"idle for {now - last:.0f} s (TTL {self.idle_ttl_s:.0f} s)"
                out.append(
                    await self._act(
                        "idle_instance",
                        m.instance,
                        reason,
                        dry_run,
                        lambda m=m, r=reason: self.pool.retire(m.id, reason=r),
                    )
                )
        if self.ledger is None or not self.provider.can_create:
            return out
        for inst in await self.ledger.list(alive_only=True):
            if inst.id in members or any(a.target == inst.id for a in out):
                continue
            if inst.provider != self.provider.name:
                continue
            # Once ready, an instance provisioned again (another workflow, after a restart) is judged by
            # the idle rule, not by its boot deadline counted from creation.
            was_ready = inst.ready_at is not None
            if inst.state is InstanceState.FAILED or (
                inst.state in PENDING_STATES
                and not was_ready
                and now - inst.created_at > self.instance_deadline_s
            ):
                reason = (
                    f"{inst.state.value} for {now - inst.created_at:.0f} s "
                    f"(deadline {self.instance_deadline_s:.0f} s)"
                )
                out.append(
                    await self._act("stuck_instance", inst, reason, dry_run, lambda i=inst: self._destroy(i))
                )
            elif inst.state is InstanceState.READY or (inst.state in PENDING_STATES and was_ready):
                last = inst.last_used_at or inst.ready_at or inst.created_at
                if now - last > self.idle_ttl_s:
                    reason = (
                        f"idle for {now - last:.0f} s (TTL {self.idle_ttl_s:.0f} s), not in use by a pool"
                    )
                    out.append(
                        await self._act(
                            "idle_instance", inst, reason, dry_run, lambda i=inst: self._destroy(i)
                        )
                    )
        return out

    async def _orphans(self, dry_run: bool) -> list[Action]:
        if self.provider is None or not self.provider.can_create or self.ledger is None:
            return []
        try:
            listed = await self.provider.list()
        except Exception as exc:
            msg = redact(str(exc))
            log.error("cleanup: ALARM: could not list %s instances: %s", self.provider.name, msg)
            return [
                Action(
                    "list_failed",
                    self.provider.name,
                    "could not list instances; orphans unknown",
                    dry_run,
                    ok=False,
                    error=msg,
                )
            ]
        out = []
        for inst in listed:
            if inst.state is InstanceState.DESTROYED:
                continue
            if await self.ledger.get(inst.id) is None:
                reason = f"labelled {inst.label} but unknown to the ledger (orphan)"
                out.append(
                    await self._act(
                        "orphan_instance", inst, reason, dry_run, lambda i=inst: self._destroy(i, known=False)
                    )
                )
        return out

    async def _jobs(self, dry_run: bool) -> list[Action]:
        out = []
        for job in await self.repo.stuck(self._clock() - self.job_timeout_s):
            reason = (
                f"still {job.state} {self._clock() - job.created_at:.0f} s after submission "
                f"(JOB_TIMEOUT_S {self.job_timeout_s:.0f})"
            )
            message = (
                f"the job did not finish within {self.job_timeout_s:.0f} s (it was {job.state}); try again"
            )

            async def fail(job_id=job.id, message=message) -> bool:
                if self.manager is not None:
                    return await self.manager.fail(job_id, "timeout", message)
                from app.jobs.models import JobState

                await self.repo.transition(
                    job_id, JobState.FAILED, error_kind="timeout", error_message=message
                )
                return True

            out.append(await self._act("stuck_job", job.id, reason, dry_run, fail))
        return out

    async def _temp_files(self, dry_run: bool) -> list[Action]:
        out = []
        now = self._clock()
        active_jobs = await self.repo.active()
        active = {j.id for j in active_jobs}
        in_use = {str((j.request or {}).get("image_path", "")) for j in active_jobs}
        in_use |= {  # end images and audio (issue 11)
            str(f.get("path", ""))
            for j in active_jobs
            for f in ((j.request or {}).get("files") or {}).values()
        }
        if self.inputs_dir is not None and self.inputs_dir.is_dir():
            for entry in self.inputs_dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if not entry.is_file() or str(entry) in in_use:
                        continue
                    age = now - entry.stat().st_mtime
                    if age <= self.inputs_max_age_s:
                        continue
                    reason = f"input image {age:.0f} s old (max {self.inputs_max_age_s:.0f} s), no active job"

                    async def rm_input(p=entry) -> bool:
                        p.unlink(missing_ok=True)
                        return True

                    out.append(await self._act("input_file", str(entry), reason, dry_run, rm_input))
        for root in self.tmp_dirs:
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    age = now - entry.stat().st_mtime
                    if entry.name in active or age <= self.tmp_max_age_s:
                        continue
                    reason = f"temp entry {age:.0f} s old (max {self.tmp_max_age_s:.0f} s)"

                    async def rm(p=entry) -> bool:
                        if p.is_dir():
                            await asyncio.to_thread(shutil.rmtree, p, True)
                        else:
                            p.unlink(missing_ok=True)
                        return True

                    out.append(await self._act("temp_file", str(entry), reason, dry_run, rm))
        return out

    # --- helpers -----------------------------------------------------------------------------------
    async def _destroy(self, inst: Instance, *, known: bool = True) -> bool:
        await self.provider.destroy(inst)
        if known and self.ledger is not None:
            with contextlib.suppress(Exception):
                await self.ledger.mark_destroyed(inst.id or inst.label)  # no id yet: by label
        return True

    async def _act(self, kind: str, target: Any, reason: str, dry_run: bool, do) -> Action:
        name = target.id if isinstance(target, Instance) else str(target)
        action = Action(kind, name, reason, dry_run)
        if not dry_run:
            try:
                done = await do()
                if done is False:
                    action.ok, action.error = False, "skipped: in use or already gone"
            except Exception as exc:
                action.ok, action.error = False, redact(str(exc)) or type(exc).__name__
        return action

    async def _record(self, a: Action) -> None:
        level = logging.INFO if a.ok else logging.WARNING
        log.log(
            level,
            "cleanup%s: %s %s: %s%s",
            " (dry run)" if a.dry_run else "",
            a.kind,
            a.target,
            a.reason,
            f" -> {a.error}" if a.error else "",
        )
        try:
            await self.repo.record_cleanup(
                kind=a.kind, target=a.target[:200], reason=a.reason, dry_run=a.dry_run, ok=a.ok, error=a.error
            )
        except Exception as exc:
            log.warning("cleanup: could not record action: %s", redact(str(exc)))
        if self.on_action is not None:
            with contextlib.suppress(Exception):
                self.on_action(a)
