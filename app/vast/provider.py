"""`VastProvider`: rent, wait for, list, reconcile and destroy Vast.ai instances without losing money.

Rules this module exists to keep (each learnt from someone's bill):
- One label per create attempt (`comfyfleet-<deployment>-<hex>`), written to the ledger BEFORE the PUT.
  A create whose outcome is unknown is resolved by looking the label up, never by sending it again.
- The instance id is stored before `create` returns; a crash in between is healed by `reconcile`, which
  matches Vast's list to the ledger by label (unknown labels of ours are orphans, recorded so that cleanup
  can destroy them; ledger rows Vast no longer has are marked destroyed).
- `wait_ready` fails fast on states that never recover, and `acquire` destroys only what its own attempt
  created, remembers the bad machine, and tries once more elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.pool.ledger import InstanceLedger
from app.pool.provider import ComfyEndpoint, CreateRequest, Instance, InstanceState, SSHTarget
from app.redact import redact, register_secret
from app.vast.client import VastClient, host_port
from app.vast.errors import (
    AuthError,
    CreateAmbiguous,
    InstanceFailed,
    InsufficientCredit,
    NoOffers,
    OfferUnavailable,
    VastError,
)
from app.vast.offers import (
    ClipProfile,
    RankedOffer,
    build_query,
    explain,
    profile_from,
    rank_offers,
    requirements_from,
    table_speed,
)
from app.vast.probes import Probe, ssh_banner_probe
from app.vast.sshkey import ensure_keypair

log = logging.getLogger(__name__)

# Vast `actual_status` values that never turn into `running` on their own.
FAILED_STATUSES = frozenset({"exited", "offline", "unknown", "stopped", "frozen"})
BOOTING_STATUSES = frozenset({None, "", "created", "loading", "rebooting", "restarting", "scheduling"})
OCI_FAILURE = "OCI runtime create failed"
# Vast's images start Supervisor (and ComfyUI) from their entrypoint; ssh runtypes replace the
# entrypoint, so onstart runs it (as Vast's production ComfyUI template does).
ONSTART = "entrypoint.sh"


@dataclass
class ReconcileReport:
    adopted: list[Instance] = field(default_factory=list)  # ledger rows whose id we learnt from Vast
    orphans: list[Instance] = field(default_factory=list)  # ours by label, unknown (or "destroyed") here
    vanished: list[Instance] = field(default_factory=list)  # ledger rows Vast no longer has
    failed: list[Instance] = field(default_factory=list)  # ours, in a state that never recovers (offline...)
    tracked: int = 0


def vast_state(actual_status: str | None, status_msg: str | None = None) -> InstanceState:
    """Provider-neutral state for a Vast `actual_status` (running is BOOTING until SSH answers)."""
    if actual_status in FAILED_STATUSES:
        return InstanceState.FAILED
    if actual_status == "created" and OCI_FAILURE in (status_msg or ""):
        return InstanceState.FAILED
    return InstanceState.BOOTING


def ssh_target_of(info: Mapping[str, Any]) -> SSHTarget | None:
    """Direct SSH (`public_ipaddr` + ports["22/tcp"]) when mapped, else Vast's proxy (ssh_host:ssh_port)."""
    ip = str(info.get("public_ipaddr") or "").strip()
    direct = host_port(info, "22/tcp")
    if ip and direct:
        return SSHTarget(host=ip, port=direct)
    host = str(info.get("ssh_host") or "").strip()
    try:
        port = int(info.get("ssh_port") or 0)
    except (TypeError, ValueError):
        port = 0
    if host and port > 0:
        return SSHTarget(host=host, port=port)
    return None


class VastProvider:
    """`app.pool.provider.Provider` on Vast.ai. Probes default to reading the SSH banner."""

    name = "vast"
    can_create = True

    def __init__(
        self,
        client: VastClient,
        ledger: InstanceLedger,
        settings: Settings,
        *,
        ssh_probe: Probe | None = None,
        comfy_probe: Probe | None = None,
        require_direct_ssh: bool = False,
        clip_profile: ClipProfile | None = None,
        offers_per_search: int = 5,
        poll_initial_s: float = 0.5,
        poll_max_s: float = 5.0,
        ssh_timeout_s: float = 300.0,
        null_grace_s: float = 60.0,
        ambiguous_lookups: int = 3,
        ambiguous_lookup_interval_s: float = 2.0,
        reconcile_grace_s: float = 120.0,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings
        self.ssh_probe: Probe = ssh_probe or ssh_banner_probe
        self.comfy_probe = comfy_probe
        self.require_direct_ssh = require_direct_ssh
        self.clip_profile = clip_profile
        self.offers_per_search = offers_per_search
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.ssh_timeout_s = ssh_timeout_s
        self.null_grace_s = null_grace_s
        self.ambiguous_lookups = ambiguous_lookups
        self.ambiguous_lookup_interval_s = ambiguous_lookup_interval_s
        self.reconcile_grace_s = reconcile_grace_s
        self.bad_machines: set[str] = set()
        self.hosts: Any = None  # an app.pool.hosts.HostBook: measured hosts rank offers (set by wiring)
        self._bad_loaded = False
        self._account_key_checked = False
        self._public_key: str | None = None
        self._key_lock = asyncio.Lock()
        self.last_search: dict[str, Any] = {}  # what the last search returned and why offers were rejected

    # --- naming ------------------------------------------------------------------------------------

    @property
    def label_prefix(self) -> str:
        return f"comfyfleet-{self.settings.deployment}-"

    def new_label(self) -> str:
        return f"{self.label_prefix}{secrets.token_hex(6)}"

    def is_ours(self, label: str | None) -> bool:
        # The suffix is our id (no "-"): deployment "prod" must not claim "comfyfleet-prod-eu-<id>".
        label = str(label or "")
        rest = label[len(self.label_prefix) :] if label.startswith(self.label_prefix) else ""
        return bool(rest) and "-" not in rest

    # --- offers ------------------------------------------------------------------------------------

    async def _load_bad_machines(self) -> None:
        if not self._bad_loaded:
            self.bad_machines |= await self.ledger.failed_machines(self.name)
            self._bad_loaded = True

    async def search(
        self, request: CreateRequest, *, exclude_offers: frozenset[int] = frozenset()
    ) -> list[RankedOffer]:
        """Qualifying offers, best expected cost per clip first; logs why the winner won."""
        await self._load_bad_machines()
        learnt = None
        slow: set[str] = set()
        if self.hosts is not None:  # measured hosts (app.pool.hosts): learnt speeds, slow ones excluded
            knowledge = await self.hosts.load()
            learnt = knowledge.estimator(table_speed)
            slow = learnt.slow
        req = requirements_from(
            self.settings,
            request,
            direct_ssh=self.require_direct_ssh,
            extra_exclude=self.bad_machines | slow,
        )
        offers = await self.client.search_offers(build_query(req))
        profile = self.clip_profile or profile_from(request, self.settings)
        ranked, rejected = rank_offers(offers, req, profile, learnt)
        ranked = [r for r in ranked if r.id not in exclude_offers]
        self.last_search = {"returned": len(offers), "qualifying": len(ranked), "rejected": rejected}
        log.info(
            "vast offers: %d returned, %d qualify (rejected: %s); %s",
            len(offers),
            len(ranked),
            rejected or "none",
            explain(ranked),
        )
        return ranked

    # --- create ------------------------------------------------------------------------------------

    async def _ensure_public_key(self) -> str:
        async with self._key_lock:  # concurrent creates must not register the key twice
            return await self._ensure_public_key_locked()

    async def _ensure_public_key_locked(self) -> str:
        if self._public_key is None:
            self._public_key = await asyncio.to_thread(ensure_keypair, self.settings.effective_ssh_key_path)
        if not self._account_key_checked:
            # Account keys reach instances created afterwards; per-instance attach below covers the rest.
            try:
                keys = await self.client.list_ssh_keys()
                body = self._public_key.split()[:2]
                if not any(str(k.get("key") or k.get("public_key") or "").split()[:2] == body for k in keys):
                    await self.client.add_ssh_key(self._public_key)
                self._account_key_checked = True
            except AuthError:
                raise
            except VastError as exc:
                log.warning(
                    "vast: could not register the SSH key on the account (%s); attaching per instance", exc
                )
        return self._public_key

    async def _check_credit(self) -> None:
        """Refuse before renting when the account has no credit left (clearer than a failed create)."""
        try:
            credit = await self.client.balance()
        except AuthError:
            raise
        except VastError as exc:
            log.warning("vast: could not read the account credit (%s); trying anyway", exc)
            return
        if credit <= 0:
            raise InsufficientCredit(
                402, "insufficient_credit", f"account credit is ${credit:.2f}; add credit"
            )

    def create_body(self, ranked: RankedOffer, label: str, token: str, disk_gb: float) -> dict[str, Any]:
        """The `PUT /asks/{id}/` body. ComfyUI stays on the instance's loopback unless access is direct."""
        internal = self.settings.comfy_internal_port
        env: dict[str, str] = {
            "WEB_PASSWORD": token,
            "COMFYUI_ARGS": f"--disable-auto-launch --port {internal} --enable-cors-header",
        }
        # The image starts ComfyUI only when PORTAL_CONFIG names it (`exit_portal.sh`), in EVERY access
        # mode; without the -p mapping Caddy publishes nothing for it, so tunnel mode stays closed.
        env["PORTAL_CONFIG"] = f"localhost:8188:{internal}:/:ComfyUI"
        if self.settings.comfy_access == "direct":
            env["-p 8188:8188"] = "1"
        direct_ssh = float(ranked.offer.get("direct_port_count") or 0) > 0
        body: dict[str, Any] = {
            "client_id": "me",
            "image": self.settings.vast_image,
            "disk": round(max(10.0, disk_gb), 1),
            "label": label,
            "onstart": ONSTART,
            "env": env,
            "runtype": "ssh_direc ssh_proxy" if direct_ssh else "ssh_proxy",
            "target_state": "running",
            "cancel_unavail": True,
        }
        if ranked.bid_price is not None:
            body["price"] = round(ranked.bid_price, 4)
        return body

    def _comfy_endpoint(self, token: str) -> ComfyEndpoint:
        return ComfyEndpoint(
            url=None,
            via_tunnel=self.settings.comfy_access != "direct",
            remote_host="127.0.0.1",
            remote_port=self.settings.comfy_internal_port,
            token=token,
        )

    async def create(self, request: CreateRequest) -> Instance:
        """Rent the best offer; OfferUnavailable -> next offer; one fresh search when a page runs out."""
        public_key = await self._ensure_public_key()
        await self._check_credit()
        tried: set[int] = set()
        last: Exception | None = None
        for _round in range(2):
            ranked = await self.search(request, exclude_offers=frozenset(tried))
            for offer in ranked[: self.offers_per_search]:
                tried.add(offer.id)
                try:
                    return await self._create_from(offer, request, public_key)
                except OfferUnavailable as exc:
                    log.info("vast: offer %s is gone (%s); trying the next", offer.id, exc.msg)
                    last = exc
        if last is not None:
            raise NoOffers(f"every offer tried was taken before we could rent it (last: {last})")
        raise NoOffers(
            "no Vast.ai offer matches the requirements; loosen VAST_* settings (price, GPU, regions)"
        )

    async def _create_from(self, ranked: RankedOffer, request: CreateRequest, public_key: str) -> Instance:
        label = self.new_label()
        token = secrets.token_urlsafe(24)
        register_secret(token)
        inst = Instance(
            provider=self.name,
            id="",
            label=label,
            state=InstanceState.CREATING,
            price_per_hour=ranked.price_per_hour,
            comfy=self._comfy_endpoint(token),
            comfy_dir=self.settings.comfy_dir,
            machine_id=ranked.machine_id or None,
            offer_id=str(ranked.id),
            gpu_name=ranked.offer.get("gpu_name"),
            simulated=self.settings.simulated,
            meta={
                "offer": ranked.summary(),
                "workflow": request.workflow,
                "deployment": self.settings.deployment,
            },
        )
        await self.ledger.record(inst)  # the intent is durable before any money can move
        body = self.create_body(ranked, label, token, request.disk_gb)
        try:
            instance_id = await self.client.create_instance(ranked.id, body)
        except CreateAmbiguous as exc:
            log.warning("vast: %s; looking the label up before deciding anything", exc)
            instance_id = await self._resolve_ambiguous(inst, exc)
        except VastError as exc:
            # A definite refusal: nothing was rented. Close the ledger row and let the caller decide.
            inst.state = InstanceState.DESTROYED
            inst.destroyed_at = inst.created_at
            inst.status_msg = f"create refused: {exc}"
            await self.ledger.update(inst)
            raise
        inst.id = str(instance_id)
        inst.state = InstanceState.BOOTING
        try:
            await self.ledger.update(inst)
        except Exception as exc:
            # Money has moved and the label row exists (list/reconcile adopt it by label; the next
            # write records the id): raising here would make the caller forget a rented GPU.
            log.error("vast: recording the id of %s (%s) failed: %s", inst.id, label, redact(str(exc)))
        log.info(
            "vast: rented instance %s (%s) offer %s at $%.3f/h",
            inst.id,
            label,
            ranked.id,
            inst.price_per_hour,
        )
        try:  # never raise from here: the instance is rented and the caller must get it back
            await self.client.attach_ssh_key(instance_id, public_key)
        except VastError as exc:
            log.warning(
                "vast: attaching the SSH key to %s failed (%s); relying on the account key", inst.id, exc
            )
        return inst

    async def _resolve_ambiguous(self, inst: Instance, exc: CreateAmbiguous) -> int:
        """Find the instance an ambiguous create may have made. Raise OfferUnavailable if surely not made."""
        lookups_ok = 0
        for attempt in range(self.ambiguous_lookups):
            if attempt:
                await asyncio.sleep(self.ambiguous_lookup_interval_s)
            try:
                rows = await self.client.find_by_label(inst.label)
            except VastError as lookup_exc:
                log.warning("vast: label lookup for %s failed: %s", inst.label, lookup_exc)
                continue
            lookups_ok += 1
            if rows:
                ids = sorted(int(r["id"]) for r in rows if r.get("id") is not None)
                if len(ids) > 1:
                    log.error("vast: %d instances carry label %s: %s", len(ids), inst.label, ids)
                    for extra in ids[1:]:
                        await self._record_orphan(next(r for r in rows if int(r["id"]) == extra))
                log.info("vast: ambiguous create of %s did rent instance %s", inst.label, ids[0])
                inst.meta["create_ambiguous"] = True
                return ids[0]
        if lookups_ok == 0:
            # We cannot tell whether a GPU is billing, and nobody will wait for it: FAILED with no id means
            # "destroy whatever carries this label" to cleanup (and reconcile/list adopt it as FAILED), so
            # it neither bills until the stuck deadline nor sits outside the pool's maximum.
            inst.state = InstanceState.FAILED
            inst.status_msg = f"create outcome unknown: {exc.cause}"
            inst.meta["create_ambiguous"] = True
            await self.ledger.update(inst)
            raise exc
        inst.state = InstanceState.DESTROYED
        inst.destroyed_at = time.time()
        inst.status_msg = f"create failed ({exc.cause}); label not found on Vast"
        inst.meta["create_ambiguous"] = True
        await self.ledger.update(inst)  # reconcile adopts it should it appear after all
        raise OfferUnavailable(0, "create_not_found", f"create of {inst.label} did not happen ({exc.cause})")

    # --- wait --------------------------------------------------------------------------------------

    async def wait_ready(self, instance: Instance, deadline: float) -> Instance:
        """Poll until running, SSH answers (and ComfyUI, with a comfy_probe). Never destroys.

        Raises `InstanceFailed` on exited/offline/unknown/OCI errors (at once), on SSH that never
        answers (`ssh_timeout_s` after running), or at `deadline` (monotonic).
        """
        started = time.monotonic()
        running_since: float | None = None
        interval = self.poll_initial_s
        status: str | None = None
        while True:
            if time.monotonic() >= deadline:
                last = (instance.status_msg or "").strip()[:200]
                raise await self._failed(
                    instance, f"not ready before the deadline (last status {status!r}: {last})", status
                )
            try:
                info = await self.client.show_instance(instance.id)
            except AuthError:
                raise
            except VastError as exc:
                if not exc.retryable:
                    raise
                log.warning("vast: polling %s failed (%s); will retry", instance.id, exc)
                info = {"actual_status": status, "_poll_failed": True}
            if info is None:
                if time.monotonic() - started > self.null_grace_s:
                    raise await self._failed(
                        instance, "instance no longer exists on Vast.ai", None, machine_fault=False
                    )
            elif not info.get("_poll_failed"):
                status = info.get("actual_status")
                msg = str(info.get("status_msg") or "")
                await self._observe(instance, info)
                if vast_state(status, msg) == InstanceState.FAILED:
                    raise await self._failed(instance, f"status {status}: {msg[:300]}", status)
                if status == "running":
                    running_since = running_since or time.monotonic()
                    if await self._answers(instance, info):
                        instance.state = InstanceState.PROVISIONING
                        instance.meta["ssh_ready_at"] = time.time()
                        instance.status_msg = msg or "running"
                        await self.ledger.update(instance)
                        return instance
                    if time.monotonic() - running_since > self.ssh_timeout_s:
                        raise await self._failed(
                            instance,
                            f"SSH did not answer within {self.ssh_timeout_s:.0f}s of running",
                            status,
                        )
            remaining = deadline - time.monotonic()
            await asyncio.sleep(max(0.0, min(interval, remaining)))
            interval = min(self.poll_max_s, interval * 1.5)

    async def _observe(self, instance: Instance, info: Mapping[str, Any]) -> None:
        """Copy what Vast says into the instance (and the ledger when something changed)."""
        before = (instance.status_msg, instance.state, instance.machine_id)
        instance.status_msg = str(info.get("status_msg") or info.get("actual_status") or "")[:1024] or None
        if info.get("machine_id") is not None:
            instance.machine_id = str(info["machine_id"])
        if info.get("gpu_name"):
            instance.gpu_name = str(info["gpu_name"])
        if instance.state == InstanceState.CREATING:
            instance.state = InstanceState.BOOTING
        instance.meta["vast_status"] = info.get("actual_status")
        if (instance.status_msg, instance.state, instance.machine_id) != before:
            await self.ledger.update(instance)

    async def _answers(self, instance: Instance, info: Mapping[str, Any]) -> bool:
        target = ssh_target_of(info)
        if target is None:
            return False  # ports / ssh_port appear late
        if instance.ssh is None or (instance.ssh.host, instance.ssh.port) != (target.host, target.port):
            target.host_key = instance.ssh.host_key if instance.ssh else None
            instance.ssh = target
        if self.settings.comfy_access == "direct" and instance.comfy is not None:
            ip = str(info.get("public_ipaddr") or "").strip()
            port = host_port(info, "8188/tcp")
            if not (ip and port):
                return False
            instance.comfy.url = f"http://{ip}:{port}"
            instance.comfy.via_tunnel = False
        if not await self.ssh_probe(instance):
            return False
        return self.comfy_probe is None or await self.comfy_probe(instance)

    async def _failed(
        self, instance: Instance, reason: str, status: str | None, *, machine_fault: bool = True
    ) -> InstanceFailed:
        """Record the failure (ledger state FAILED, so cleanup destroys it whoever the caller is) and
        remember a host at fault, so no later create rents that machine again."""
        exc = InstanceFailed(
            instance.id or instance.label,
            reason,
            status=status,
            machine_id=instance.machine_id,
            machine_fault=machine_fault,
        )
        instance.state = InstanceState.FAILED
        instance.status_msg = exc.reason
        instance.meta["failure"] = exc.reason
        if machine_fault and instance.machine_id:
            instance.meta["machine_fault"] = True
            self.bad_machines.add(instance.machine_id)
        await self.ledger.update(instance)
        log.warning("vast: instance %s failed: %s", instance.id or instance.label, exc.reason)
        return exc

    # --- acquire (create + wait + one retry elsewhere) ---------------------------------------------

    async def acquire(self, request: CreateRequest, deadline: float) -> Instance:
        """An instance whose SSH answers, or an error. A bad host is destroyed and avoided once."""
        exclude = set(request.exclude_machines)
        for attempt in range(2):
            inst = await self.create(dataclasses.replace(request, exclude_machines=frozenset(exclude)))
            try:
                return await self.wait_ready(inst, deadline)
            except InstanceFailed as exc:
                if exc.machine_fault and inst.machine_id:
                    exclude.add(inst.machine_id)
                await self.destroy(inst)  # only what this attempt created
                log.warning(
                    "vast: instance %s failed (%s); attempt %d of 2", inst.id, exc.reason, attempt + 1
                )
                if attempt == 1 or time.monotonic() >= deadline:
                    raise
            except BaseException:
                try:  # cancelled or broken mid-wait: what this attempt rented must not keep billing
                    await asyncio.shield(self.destroy(inst))
                except Exception as destroy_exc:
                    log.error(
                        "vast: could not destroy %s (%s); reconcile/cleanup must", inst.label, destroy_exc
                    )
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- destroy, list, reconcile ------------------------------------------------------------------

    async def destroy(self, instance: Instance) -> None:
        """Destroy at Vast, then mark the ledger. Already gone is success. Unknown id -> by label.
        An instance whose host was found at fault (`meta.machine_fault`, e.g. ComfyUI never started) makes
        later creates avoid that machine."""
        if instance.meta.get("machine_fault") and instance.machine_id:
            self.bad_machines.add(str(instance.machine_id))
        ids: list[str] = [instance.id] if instance.id else []
        if not ids:
            ids = [str(r["id"]) for r in await self.client.find_by_label(instance.label)]
        for instance_id in ids:
            gone_now = await self.client.destroy_instance(instance_id)
            log.info(
                "vast: %s instance %s (%s)",
                "destroyed" if gone_now else "already gone:",
                instance_id,
                instance.label,
            )
        if ids and not instance.id:
            instance.id = ids[0]
        instance.state = InstanceState.DESTROYED
        instance.destroyed_at = instance.destroyed_at or time.time()
        await self.ledger.update(instance)

    def _from_vast(self, row: Mapping[str, Any], known: Instance | None) -> Instance:
        status = row.get("actual_status")
        msg = str(row.get("status_msg") or "") or None
        if known is not None:
            inst = dataclasses.replace(known, meta=dict(known.meta))
            inst.id = str(row["id"])
        else:
            try:
                created_at = float(row.get("start_date") or time.time())
            except (TypeError, ValueError):
                created_at = time.time()
            inst = Instance(
                provider=self.name,
                id=str(row["id"]),
                label=str(row.get("label") or ""),
                created_at=created_at,
                simulated=self.settings.simulated,
            )
            try:
                inst.price_per_hour = float(row.get("dph_total") or 0.0)
            except (TypeError, ValueError):
                inst.price_per_hour = 0.0
        mapped = vast_state(status, msg)
        if mapped == InstanceState.FAILED or inst.state in (InstanceState.CREATING, InstanceState.DESTROYED):
            inst.state = mapped
        inst.status_msg = msg or status
        inst.machine_id = str(row["machine_id"]) if row.get("machine_id") is not None else inst.machine_id
        inst.gpu_name = row.get("gpu_name") or inst.gpu_name
        inst.meta["vast_status"] = status
        return inst

    async def list(self) -> list[Instance]:
        """Our instances as Vast reports them now, merged with what the ledger knows (tokens, SSH)."""
        rows = [r for r in await self.client.list_instances() if self.is_ours(r.get("label"))]
        out = []
        for row in rows:
            known = await self.ledger.by_label(str(row["label"]))
            inst = self._from_vast(row, known)
            if known is not None and known.state == InstanceState.DESTROYED:
                # We gave up on it (or destroyed it) but it still bills: FAILED, so cleanup destroys it.
                inst.state = InstanceState.FAILED
                inst.destroyed_at = None
            if known is not None and known.id != inst.id:
                inst.meta["adopted"] = True  # a create whose answer never arrived (crash, timeout)
            if known is not None and (known.id != inst.id or known.state == InstanceState.DESTROYED):
                await self.ledger.update(inst)
            out.append(inst)
        return out

    async def _record_orphan(self, row: Mapping[str, Any]) -> Instance:
        inst = self._from_vast(row, None)
        inst.meta["orphan"] = True
        if inst.state == InstanceState.BOOTING:
            inst.state = InstanceState.FAILED  # not ours to use: cleanup destroys it
        if await self.ledger.by_label(inst.label) is None:
            await self.ledger.record(inst)
        return inst

    async def reconcile(self) -> ReconcileReport:
        """Make the ledger agree with Vast. A failed list raises: never read a failure as 'none'."""
        rows = await self.client.list_instances()
        ours = {str(r["label"]): r for r in rows if self.is_ours(r.get("label"))}
        ledger_rows = {i.label: i for i in await self.ledger.list(alive_only=False, provider=self.name)}
        report = ReconcileReport(tracked=len(ours))
        for label, row in ours.items():
            known = ledger_rows.get(label)
            if known is None:
                orphan = await self._record_orphan(row)
                report.orphans.append(orphan)
                log.warning("vast: orphan instance %s (%s) has our label but no ledger row", row["id"], label)
            elif not known.id or known.id != str(row["id"]):
                inst = self._from_vast(row, known)
                inst.meta["adopted"] = True
                if known.state == InstanceState.DESTROYED:
                    inst.state = InstanceState.FAILED  # we gave up on it, but it bills: destroy it
                    inst.destroyed_at = None
                await self.ledger.update(inst)
                report.adopted.append(inst)
                log.warning("vast: adopted instance %s for ledger row %s", inst.id, label)
            elif known.state == InstanceState.DESTROYED:
                inst = self._from_vast(row, known)
                inst.state = InstanceState.FAILED
                inst.destroyed_at = None
                inst.meta["orphan"] = True
                await self.ledger.update(inst)
                report.orphans.append(inst)
                log.warning("vast: instance %s (%s) still exists although marked destroyed", inst.id, label)
            elif known.state != InstanceState.FAILED:
                status = row.get("actual_status")
                if vast_state(status, row.get("status_msg")) == InstanceState.FAILED:
                    inst = self._from_vast(row, known)
                    inst.status_msg = f"Vast reports {status}: {inst.status_msg or ''}".strip()[:1024]
                    await self.ledger.update(inst)  # FAILED: cleanup destroys it
                    report.failed.append(inst)
                    log.warning("vast: instance %s (%s) is %s", inst.id, label, status)
        now = time.time()
        for label, known in ledger_rows.items():
            if label in ours or not self.is_ours(label) or not known.alive:
                continue
            if now - known.created_at < self.reconcile_grace_s:
                continue  # a create may be in flight, or Vast's list may not show it yet
            await self.ledger.mark_destroyed(known.id or label, reason="no longer on Vast.ai")
            known.state = InstanceState.DESTROYED
            report.vanished.append(known)
        return report
