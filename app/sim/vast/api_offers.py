"""Search offers (`/bundles/`) and rent one (`PUT /asks/{id}/`), as the real API answers them."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app.sim.vast.http import EMU, error, int_id, json_body
from app.sim.vast.instances import SimInstance, normalize_runtype
from app.sim.vast.market import priced_offer
from app.sim.vast.search import SearchError, matches, parse_search, sort_offers

if TYPE_CHECKING:
    from app.sim.vast.server import VastEmulator

log = logging.getLogger(__name__)

MIN_DISK_GB = 8.0
MAX_LABEL = 256
MAX_ONSTART = 4048
MAX_ARGS_ONSTART = 4096
MAX_IMAGE = 1024
MAX_ENV_VALUE = 256
MAX_ENV_TOTAL = 32768
MIN_PRICE, MAX_PRICE = 0.001, 128.0


def _search(emu: VastEmulator, body: Any) -> web.Response:
    try:
        filters, order, limit, offer_type, storage = parse_search(body)
    except SearchError as exc:
        return error(400, "invalid_request", str(exc) or "Invalid json body")
    rented_clause = filters.pop("rented", None)
    wants_own = isinstance(rented_clause, dict) and str(rented_clause.get("eq")).lower() == "true"
    rows: list[dict[str, Any]] = []
    for offer_id, offer in emu.market.items():
        own = offer_id in emu.rented_by
        if offer_id in emu.taken or (own and not wants_own):
            continue
        priced = priced_offer(offer, allocated_storage=storage, offer_type=offer_type)
        if own:
            priced["rented"], priced["rentable"] = True, False
        if float(priced.get("disk_space") or 0.0) < storage:
            continue
        try:
            if not matches(priced, filters):
                continue
        except SearchError as exc:
            return error(400, "invalid_request", str(exc))
        rows.append(priced)
    rows = sort_offers(rows, order)
    if limit is not None and limit >= 0:
        rows = rows[:limit]
    for rn, row in enumerate(rows, start=1):
        row["rn"] = rn
    return web.json_response({"offers": rows})


async def search_post(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    return _search(emu, body)


async def search_get(request: web.Request) -> web.Response:
    """Legacy `GET /bundles/?q=<json>`."""
    emu: VastEmulator = request.app[EMU]
    try:
        body = json.loads(request.query.get("q") or "{}")
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    return _search(emu, body)


class _Invalid(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code


def _validate_create(body: dict[str, Any]) -> dict[str, Any]:
    """Check the create body like the real API (raises `_Invalid`); returns the normalised fields."""
    env = body.get("env")
    if env is None:
        env = {}
    if not isinstance(env, dict):
        raise _Invalid("invalid_args", "invalid env type: env must be a dict")
    if any(len(str(v)) > MAX_ENV_VALUE for v in env.values()):
        raise _Invalid("invalid_args", f"env values are limited to {MAX_ENV_VALUE} characters")
    if len(json.dumps(env)) > MAX_ENV_TOTAL:
        raise _Invalid("invalid_args", f"env is limited to {MAX_ENV_TOTAL} characters in total")
    image = body.get("image")
    if not image and not body.get("template_hash_id"):
        raise _Invalid("invalid_args", "error 400/3467: Invalid args: 'image' is required")
    if image is not None and (not isinstance(image, str) or len(image) > MAX_IMAGE):
        raise _Invalid("invalid_args", f"image must be a string of at most {MAX_IMAGE} characters")
    disk_raw = body.get("disk", 10)
    try:
        disk = float(disk_raw if disk_raw is not None else 10)
    except (TypeError, ValueError):
        raise _Invalid("invalid_args", "disk must be a number (GB)") from None
    if disk < MIN_DISK_GB:
        raise _Invalid("invalid_args", f"disk must be at least {MIN_DISK_GB:g} GB")
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
        raise _Invalid("invalid_args", f"label must be a string of at most {MAX_LABEL} characters")
    onstart = body.get("onstart") or ""
    if not isinstance(onstart, str) or len(onstart) > MAX_ONSTART:
        raise _Invalid(
            "invalid_args", f"onstart is limited to {MAX_ONSTART} characters -- gzip+base64 longer scripts"
        )
    args = body.get("args") or []
    args_len = len(" ".join(str(a) for a in args)) if isinstance(args, list) else len(str(args))
    if args_len + len(str(body.get("args_str") or "")) + len(onstart) > MAX_ARGS_ONSTART:
        raise _Invalid("invalid_args", f"args + args_str + onstart is limited to {MAX_ARGS_ONSTART}")
    runtype = normalize_runtype(body.get("runtype"), bool(body.get("args") or body.get("args_str")))
    if runtype is None:
        raise _Invalid("invalid_args", f"invalid runtype {body.get('runtype')!r}")
    price = body.get("price")
    if price is not None:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise _Invalid("invalid_price", "price must be a number ($/hr)") from None
        if not MIN_PRICE <= price <= MAX_PRICE:
            raise _Invalid("invalid_price", f"price must be between {MIN_PRICE:g} and {MAX_PRICE:g} $/hr")
    target = body.get("target_state") or "running"
    if target not in ("running", "stopped"):
        raise _Invalid("invalid_args", "target_state must be 'running' or 'stopped'")
    return {
        "env": {str(k): v for k, v in env.items()},
        "disk": disk,
        "label": label,
        "runtype": runtype,
        "price": price,
        "target": target,
    }


def _no_such_ask(offer_id: int, cancel_unavail: bool) -> web.Response:
    if cancel_unavail:
        return error(
            410,
            "no_such_ask",
            f"error 410/3907: no_such_ask Instance type {offer_id} is no longer available.",
            ask_id=offer_id,
        )
    return error(
        404,
        "invalid_args",
        f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available.",
        ask_id=offer_id,
    )


async def create(request: web.Request) -> web.StreamResponse:
    emu: VastEmulator = request.app[EMU]
    offer_id = int_id(request.match_info["id"])
    if offer_id is None:
        return error(
            400, "invalid_args", "error 400/3467: Invalid args: 'id' is required and must be a valid offer ID"
        )
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    if not isinstance(body, dict):
        return error(400, "invalid_request", "Invalid json body")
    try:
        fields = _validate_create(body)
    except _Invalid as exc:
        return error(400, exc.code, str(exc), ask_id=offer_id)
    cancel_unavail = bool(body.get("cancel_unavail"))
    offer = emu.market.get(offer_id)
    if offer is None or offer_id in emu.taken or offer_id in emu.rented_by:
        return _no_such_ask(offer_id, cancel_unavail)
    if emu.faults.take_offer(offer_id):
        emu.taken.add(offer_id)  # another customer rented it between our search and this create
        return _no_such_ask(offer_id, cancel_unavail)
    price = fields["price"]
    if price is not None and price < float(offer["min_bid"]):
        return error(
            400,
            "invalid_price",
            f"Bid price {price:g} is below the minimum bid {float(offer['min_bid']):g} for this offer.",
            ask_id=offer_id,
        )
    priced = priced_offer(
        offer,
        allocated_storage=fields["disk"],
        offer_type="bid" if price is not None else "on-demand",
        bid_price=price,
    )
    emu.bill()
    if emu.credit < float(priced["dph_total"]):
        # Vast's real body for this case is undocumented (reference vastai.md §3.2): this one is synthetic.
        return error(
            400,
            "insufficient_credit",
            f"Insufficient credit: ${emu.credit:.2f} left, this instance costs "
            f"${float(priced['dph_total']):.4f}/hr "
            "(simulated error shape: the real API's body for this case is undocumented)",
            ask_id=offer_id,
            simulated=True,
        )
    inst = SimInstance(
        id=emu.next_instance_id(),
        offer_id=offer_id,
        offer=priced,
        body=body,
        runtype=fields["runtype"],
        env=fields["env"],
        disk=fields["disk"],
        instance_api_key=secrets.token_hex(32),
        fault=emu.faults.fault_for_new_instance(offer_id),
        label=fields["label"],
        ssh_keys=[dict(k) for k in emu.account_keys],
        null_shows=emu.faults.null_shows_after_create,
    )
    if fields["target"] == "stopped":
        inst.intended_status = "stopped"
        inst.phase = "stopped"
    inst.log(f"[vast] created from offer {offer_id} image={body.get('image')} runtype={fields['runtype']}")
    emu.add_instance(inst)
    answer = {"success": True, "new_contract": inst.id, "instance_api_key": inst.instance_api_key}
    if emu.faults.take_create_timeout():
        log.info("sim vast: create of instance %s succeeded but its answer is withheld (fault)", inst.id)
        if emu.faults.create_timeout_mode == "drop":
            emu.dropped.add(id(request))  # the call log records no answer
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection die with no answer
            return web.Response(status=504)  # never reaches the client
        await asyncio.sleep(emu.faults.create_timeout_s)
    return web.json_response(answer)
