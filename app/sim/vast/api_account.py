"""Account endpoints: current user (credit) and account SSH keys (reference vastai.md §3.7, §3.9)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web

from app.sim.vast.http import EMU, error, int_id, json_body

if TYPE_CHECKING:
    from app.sim.vast.server import VastEmulator

USER_ID = 123456


async def current_user(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    await emu.advance_all()
    emu.bill()
    first_key = emu.account_keys[0]["public_key"] if emu.account_keys else None
    return web.json_response(
        {
            "id": USER_ID,
            "key_id": 789,
            "username": "simulated-user",
            "email": "simulated@comfyfleet.invalid",
            "fullname": "Simulated Vast.ai account",
            "credit": round(emu.credit, 6),
            "balance": 0.0,
            "balance_threshold": 5.0,
            "balance_threshold_enabled": False,
            "can_pay": True,
            "has_billing": True,
            "ssh_key": first_key,
            "sid": "simulated-session",
            "api_key": emu.api_key,
        }
    )


async def list_keys(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    return web.json_response(
        [
            {**{k: v for k, v in rec.items() if k != "public_key"}, "key": rec["public_key"]}
            for rec in emu.account_keys
        ]
    )


async def create_key(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    try:
        body = await json_body(request)
    except ValueError:
        return error(400, "invalid_request", "Invalid json body")
    key = str(body.get("ssh_key") or "").strip() if isinstance(body, dict) else ""
    if not key:
        return error(400, "no_ssh_key", "No ssh key provided")
    if not re.match(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-\S+|sk-\S+) \S+", key):
        return error(400, "invalid_args", "Invalid ssh key")
    record = emu.new_key_record(key)
    emu.account_keys.append(record)
    return web.json_response({"success": True, "key": record})


async def delete_key(request: web.Request) -> web.Response:
    emu: VastEmulator = request.app[EMU]
    key_id = int_id(request.match_info["id"])
    kept = [k for k in emu.account_keys if k["id"] != key_id]
    if len(kept) == len(emu.account_keys):
        return error(404, "no_such_ssh_key", "SSH key not found")
    emu.account_keys[:] = kept
    return web.json_response({"success": True})
