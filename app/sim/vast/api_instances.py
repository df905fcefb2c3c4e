"""Instance endpoints: show, the paginated v1 list (and the deprecated v0 list), manage, destroy, per-instance
SSH keys and logs, in the real API's shapes (reference vastai.md §3.3-3.8)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app.sim.vast.http import EMU, error, int_id, json_body, json_param
from app.sim.vast.instances import STORED_COLUMNS
from app.sim.vast.search import OPERATORS, SearchError, matches

if TYPE_CHECKING:
    from app.sim.vast.instances import SimInstance
    from app.sim.vast.server import VastEmulator

PAGE_MAX = 25
PAGE_DEFAULT = 25
PAGE_NONPOSITIVE = 5
MAX_MANAGE_LABEL = 1024


def _not_found() -> web.Response:
    return error(404, "not_found", "Instance not found")


async def _live(emu: VastEmulator, raw_id: str) -> tuple[int | None, SimInstance | None]:
    instance_id = int_id(raw_id)
    if instance_id is None:
        return None, None
    inst = emu.instances.get(instance_id)
    if inst is not None:
        await emu.lifecycle.advance(inst)
    return instance_id, inst


async def show(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None:
        return error(400, "invalid_args", "invalid instance_id")
    emu.bill()
    if inst is not None and inst.null_shows > 0:
        inst.null_shows -= 1
        return web.json_response({"instances": None})
    return web.json_response({"instances": inst.render() if inst is not None else None})


async def list_v0(request: web.Request) -> web.Response:
    return error(
        410, "deprecated_endpoint", "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead."
    )


def _encode_token(values: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps({"values": values}).encode()).decode()


def _decode_token(token: str, columns: list[str]) -> dict[str, Any]:
    try:
        data = json.loads(base64.b64decode(token.encode(), validate=True))
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid after_token") from exc
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, dict) or any(c not in values for c in columns):
        raise ValueError("invalid after_token")
    return values


def _after(row: dict[str, Any], cursor: dict[str, Any], order: list[tuple[str, bool]]) -> bool:
    """Whether `row` sorts after the cursor row (nulls sort last in both directions, as the list does)."""
    for col, desc in order:
        a, b = row.get(col), cursor.get(col)
        if a == b:
            continue
        if a is None:
            return True
        if b is None:
            return False
        return (a < b) if desc else (a > b)
    return False


def _parse_order(raw: Any) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        if isinstance(item, dict):
            col, direction = item.get("col"), str(item.get("dir", "asc")).lower()
        elif isinstance(item, list | tuple) and item:
            col, direction = item[0], str(item[1] if len(item) > 1 else "asc").lower()
        else:
            raise ValueError("invalid order_by")
        if col not in STORED_COLUMNS or direction not in ("asc", "desc"):
            raise ValueError(f"invalid order_by column {col!r}")
        order.append((str(col), direction == "desc"))
    if all(col != "id" for col, _ in order):
        order.append(("id", False))  # id is always the tie-breaker
    return order


async def list_v1(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    try:
        filters = json_param(request, "select_filters", {})
        order_raw = json_param(request, "order_by", [{"col": "id", "dir": "asc"}])
        select_cols = json_param(request, "select_cols", ["*"])
    except ValueError:
        return error(400, "invalid_args", "query parameters must be valid JSON")
    if not isinstance(filters, dict):
        return error(400, "invalid_args", "select_filters must be a JSON object")
    for col, clause in filters.items():
        if col not in STORED_COLUMNS:
            return error(
                400, "invalid_args", f"Cannot filter on column '{col}': only stored columns are filterable"
            )
        if isinstance(clause, dict) and any(op not in OPERATORS for op in clause):
            return error(400, "invalid_args", f"invalid operator in filter on '{col}'")
    try:
        order = _parse_order(order_raw)
    except ValueError as exc:
        return error(400, "invalid_args", str(exc))
    if not isinstance(select_cols, list):
        return error(400, "invalid_args", "select_cols must be a JSON list")
    try:
        limit = int(request.query.get("limit", PAGE_DEFAULT))
    except ValueError:
        return error(400, "invalid_args", "limit must be an integer")
    limit = PAGE_NONPOSITIVE if limit <= 0 else min(limit, PAGE_MAX)
    cursor = None
    if request.query.get("after_token"):
        try:
            cursor = _decode_token(request.query["after_token"], [c for c, _ in order])
        except ValueError as exc:
            return error(400, "invalid_args", str(exc))

    await emu.advance_all()
    emu.bill()
    everything = [inst.render() for inst in emu.instances.values()]
    try:
        found = [row for row in everything if matches(row, filters)]
    except SearchError as exc:
        return error(400, "invalid_args", str(exc))
    rows = found
    for col, desc in reversed(order):
        present = [r for r in rows if r.get(col) is not None]
        missing = [r for r in rows if r.get(col) is None]
        present.sort(key=lambda r, c=col: r[c], reverse=desc)
        rows = present + missing
    if cursor is not None:
        rows = [r for r in rows if _after(r, cursor, order)]
    page = rows[:limit]
    next_token = None
    if len(rows) > limit and page:
        next_token = _encode_token({col: page[-1].get(col) for col, _ in order})
    if select_cols != ["*"]:
        page = [{c: r.get(c) for c in select_cols} for r in page]
    label_counts: dict[str, int] = {}
    for row in everything:
        key = row.get("label") or ""
        label_counts[key] = label_counts.get(key, 0) + 1
    return web.json_response(
        {
            "success": True,
            "instances_found": len(found),
            "total_instances": len(everything),
            "label_counts": label_counts,
            "next_token": next_token,
            "instances": page,
        }
    )


async def _apply_manage(emu: VastEmulator, inst: SimInstance, body: dict[str, Any]) -> web.Response | None:
    state = body.get("state")
    if "label" in body:
        label = body["label"]
        if label is not None and (not isinstance(label, str) or len(label) > MAX_MANAGE_LABEL):
            return error(
                400, "invalid_args", f"label must be a string of at most {MAX_MANAGE_LABEL} characters"
            )
        inst.label = label
    if state is not None:
        if state == "stopped":
            await emu.lifecycle.stop(inst)
        elif state == "running":
            await emu.lifecycle.start(inst)
        else:
            return error(400, "invalid_args", "state must be 'running' or 'stopped'")
    if state is None and "label" not in body:
        return error(400, "invalid_args", "nothing to change: send 'state' or 'label'")
    return None


async def manage(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None:
        return error(400, "invalid_args", "invalid instance_id")
    if inst is None:
        return _not_found()
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    if not isinstance(body, dict):
        return error(400, "invalid_request", "Invalid json body")
    emu.bill()
    problem = await _apply_manage(emu, inst, body)
    return problem or web.json_response({"success": True})


async def manage_bulk(request: web.Request) -> web.Response:
    """`PUT /api/v0/instances/` with `{"ids": [...], "state": ...}`."""
    emu: VastEmulator = request.app[EMU]
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        return error(400, "invalid_args", "ids must be a non-empty list of instance ids")
    emu.bill()
    done: list[int] = []
    for raw in ids:
        inst = emu.instances.get(int_id(str(raw)) or -1)
        if inst is None:
            return _not_found()
        problem = await _apply_manage(emu, inst, {k: v for k, v in body.items() if k != "ids"})
        if problem is not None:
            return problem
        done.append(inst.id)
    return web.json_response({"success": True, "ids": done})


async def destroy(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id = int_id(request.match_info["id"])
    if instance_id is None:
        return error(400, "invalid_args", "invalid instance_id")
    if instance_id not in emu.instances:
        return _not_found()
    await emu.destroy_instance(instance_id)
    return web.json_response({"success": True, "msg": "Instance destroyed successfully"})


async def destroy_bulk(request: web.Request) -> web.Response:
    """`DELETE /api/v0/instances/` with `{"instance_ids": [...]}`."""
    emu: VastEmulator = request.app[EMU]
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    ids = body.get("instance_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        return error(400, "invalid_args", "instance_ids must be a non-empty list")
    destroyed, missing = [], []
    for raw in ids:
        instance_id = int_id(str(raw))
        if instance_id is not None and instance_id in emu.instances:
            await emu.destroy_instance(instance_id)
            destroyed.append(instance_id)
        else:
            missing.append(raw)
    return web.json_response(
        {
            "success": True,
            "msg": f"{len(destroyed)} instance(s) destroyed",
            "destroyed": destroyed,
            "missing": missing,
        }
    )


async def attach_ssh(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None or inst is None:
        return error(404, "no_such_instance", "Instance not found")
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    key = str((body or {}).get("ssh_key") or "").strip() if isinstance(body, dict) else ""
    if not key:
        return error(400, "no_ssh_key", "No ssh key provided")
    if not re.match(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-\S+|sk-\S+) \S+", key):
        return error(400, "invalid_args", "Invalid ssh key")
    record = emu.new_key_record(key)
    inst.ssh_keys.append(record)
    await emu.push_key(inst, key)
    return web.json_response({"success": True, "msg": "SSH key attached successfully"})


async def list_instance_ssh(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None or inst is None:
        return error(404, "no_such_instance", "Instance not found")
    keys = [{**k, "key": k["public_key"]} for k in inst.ssh_keys]
    return web.json_response({"success": True, "ssh_keys": json.dumps(keys)})


async def detach_ssh(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None or inst is None:
        return error(404, "no_such_instance", "Instance not found")
    key_id = int_id(request.match_info["key_id"])
    kept = [k for k in inst.ssh_keys if k["id"] != key_id]
    if len(kept) == len(inst.ssh_keys):
        return error(404, "no_such_ssh_key", "SSH key not found on this instance")
    inst.ssh_keys = kept
    return web.json_response({"success": True, "msg": "SSH key removed from instance."})


async def request_logs(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    instance_id, inst = await _live(emu, request.match_info["id"])
    if instance_id is None or inst is None:
        return error(404, "invalid_id", "Invalid instance id.")
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    body = body if isinstance(body, dict) else {}
    lines = list(inst.log_lines)
    extra = await emu.backend_logs(inst)
    if extra:
        lines.extend(extra.splitlines())
    pattern = body.get("filter")
    if pattern:
        try:
            rx = re.compile(str(pattern))
            lines = [ln for ln in lines if rx.search(ln)]
        except re.error:
            lines = [ln for ln in lines if str(pattern) in ln]
    tail = body.get("tail")
    if tail not in (None, ""):
        try:
            n = int(str(tail))
        except ValueError:
            return error(400, "invalid_args", "tail must be an integer (sent as a string)")
        lines = lines[-n:] if n > 0 else []
    token = secrets.token_hex(16)
    emu.log_uploads[token] = (time.monotonic() + emu.logs_delay_s, "\n".join(lines) + ("\n" if lines else ""))
    return web.json_response(
        {
            "success": True,
            "result_url": f"{emu.url}/__sim/instance_logs/{token}.log",
            "msg": "Logs will be uploaded to the result_url shortly.",
        }
    )


async def fetch_logs(request: web.Request) -> web.Response:
    """The `result_url` stand-in for S3: 404 until the 'upload' finished, then the text (no auth)."""
    emu: VastEmulator = request.app[EMU]
    entry = emu.log_uploads.get(request.match_info["token"])
    if entry is None or time.monotonic() < entry[0]:
        return web.Response(
            status=404,
            text='<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
            "<Message>The specified key does not exist.</Message></Error>",
            content_type="application/xml",
        )
    return web.Response(text=entry[1], content_type="text/plain")
