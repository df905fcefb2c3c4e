"""The HTTP routes of the emulator, mirroring ComfyUI 0.3.64's server.py handler for handler."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app.comfy.graph_check import validate_prompt
from app.sim.comfyui.executor import QueueItem
from app.sim.comfyui.files import content_type_for, reencode, resolve_view, save_upload

if TYPE_CHECKING:
    from app.sim.comfyui.server import ComfyEmulator

SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
SIM_VRAM = 24 * 1024**3


def _server_error() -> web.Response:
    return web.Response(status=500, text=SERVER_ERROR_TEXT, content_type="text/plain")


def _ram() -> tuple[int, int]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return total, free
    except (ValueError, OSError):
        return 0, 0


def build_routes(emu: ComfyEmulator) -> list[web.RouteDef]:
    install = emu.install
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def ws(request: web.Request) -> web.StreamResponse:
        return await emu.websocket(request)

    @routes.get("/system_stats")
    async def system_stats(request: web.Request) -> web.Response:
        total, free = _ram()
        used = 512 * 1024**2 if emu.running is not None else 0
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", emu.host, "--port", str(emu.port)],
                },
                "devices": [
                    {
                        "name": "cuda:0 NVIDIA GeForce RTX 4090 (simulated by comfyfleet) : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": SIM_VRAM,
                        "vram_free": SIM_VRAM - used,
                        "torch_vram_total": SIM_VRAM,
                        "torch_vram_free": SIM_VRAM - used,
                    }
                ],
            }
        )

    @routes.get("/features")
    async def features(request: web.Request) -> web.Response:
        return web.json_response(emu.features())

    @routes.get("/embeddings")
    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response(install.filenames("embeddings", None))

    @routes.get("/extensions")
    async def extensions(request: web.Request) -> web.Response:
        return web.json_response([])

    @routes.get("/settings")
    async def settings(request: web.Request) -> web.Response:
        return web.json_response({})

    @routes.get("/users")
    async def users(request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    @routes.get("/userdata")
    async def userdata(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Directory not found")

    @routes.get("/models")
    async def models(request: web.Request) -> web.Response:
        return web.json_response(install.model_folders())

    @routes.get("/models/{folder}")
    async def models_folder(request: web.Request) -> web.Response:
        files = install.list_folder(request.match_info["folder"])
        if files is None:
            return web.Response(status=404)
        return web.json_response(files)

    @routes.get("/object_info")
    async def object_info(request: web.Request) -> web.Response:
        return web.json_response(install.effective_object_info())

    @routes.get("/object_info/{node_class}")
    async def object_info_one(request: web.Request) -> web.Response:
        cls = request.match_info["node_class"]
        info = install.node_info(cls)
        return web.json_response({cls: info} if info is not None else {})

    @routes.get("/prompt")
    async def get_prompt(request: web.Request) -> web.Response:
        return web.json_response(emu.queue_info())

    @routes.post("/prompt")
    async def post_prompt(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _server_error()
        if not isinstance(body, dict):
            return _server_error()
        if "number" in body:
            try:
                number: int | float = float(body["number"])
            except (TypeError, ValueError):
                return _server_error()
        else:
            number = emu.number
            if body.get("front"):
                number = -number
            emu.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return _server_error()
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        kwargs: dict[str, Any] = {"file_exists": emu.file_exists}
        if body.get("partial_execution_targets") is not None:
            kwargs["partial_execution_targets"] = body["partial_execution_targets"]
        try:
            check = validate_prompt(prompt, install.effective_object_info(), **kwargs)
        except Exception:
            return _server_error()
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not check.ok:
            return web.json_response({"error": check.error, "node_errors": check.node_errors}, status=400)
        for key in ("auth_token_comfy_org", "api_key_comfy_org"):
            extra_data.pop(key, None)
        item = QueueItem(
            number, prompt_id, emu.prepare_prompt(prompt, check), extra_data, list(check.outputs)
        )
        await emu.enqueue(item)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": check.node_errors})

    @routes.get("/queue")
    async def get_queue(request: web.Request) -> web.Response:
        running = [emu.running.as_list()] if emu.running is not None else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [i.as_list() for i in emu.sorted_pending()]}
        )

    async def _json_or_empty(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @routes.post("/queue")
    async def post_queue(request: web.Request) -> web.Response:
        data = await _json_or_empty(request)
        if data.get("clear"):
            emu.pending.clear()
            await emu.queue_updated()
        if "delete" in data:
            doomed = set(data.get("delete") or [])
            emu.pending[:] = [i for i in emu.pending if i.prompt_id not in doomed]
            await emu.queue_updated()
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def post_interrupt(request: web.Request) -> web.Response:
        data = await _json_or_empty(request)
        emu.interrupt(data.get("prompt_id"))
        return web.Response(status=200)

    @routes.post("/free")
    async def post_free(request: web.Request) -> web.Response:
        data = await _json_or_empty(request)
        if data.get("free_memory"):  # ComfyUI resets its executor (and the output cache) on free_memory
            emu.executor.reset_cache()
        return web.Response(status=200)

    @routes.get("/history")
    async def get_history(request: web.Request) -> web.Response:
        history = emu.visible_history()
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        if max_items is None:
            return web.json_response(history)
        count = int(max_items)
        if offset < 0:
            offset = len(history) - count
        items = list(history.items())[max(0, offset) : max(0, offset) + count]
        return web.json_response(dict(items))

    @routes.get("/history/{prompt_id}")
    async def get_history_one(request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        entry = emu.visible_history().get(pid)
        return web.json_response({pid: entry} if entry is not None else {})

    @routes.post("/history")
    async def post_history(request: web.Request) -> web.Response:
        data = await _json_or_empty(request)
        if data.get("clear"):
            emu.history.clear()
        for pid in data.get("delete") or []:
            emu.history.pop(pid, None)
        return web.Response(status=200)

    @routes.post("/upload/image")
    async def upload_image(request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        raw_type = post.get("type")
        kind = "input" if raw_type is None else str(raw_type)
        upload_dir = install.dir_for_type(kind)
        if upload_dir is None:  # ComfyUI's get_dir_by_type hits an UnboundLocalError here
            return _server_error()
        subfolder = str(post.get("subfolder", ""))
        overwrite = post.get("overwrite") in ("true", "1")
        content = image.file.read()
        name = await asyncio.to_thread(save_upload, upload_dir, subfolder, image.filename, content, overwrite)
        if name is None:
            return web.Response(status=400)
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    @routes.get("/view")
    async def view(request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        base_dir: Path | None = None
        for kind in ("input", "output", "temp"):
            if filename.endswith(f" [{kind}]"):
                filename, base_dir = filename[: -len(kind) - 3], install.dir_for_type(kind)
        if base_dir is None:
            base_dir = install.dir_for_type(query.get("type", "output"))
        target = await asyncio.to_thread(resolve_view, base_dir, filename, query.get("subfolder"))
        if target.status != 200:
            return web.Response(status=target.status)
        disposition = {"Content-Disposition": f'filename="{target.filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await asyncio.to_thread(reencode, target.path, query.get("preview"), channel)
            return web.Response(body=body, content_type=content_type, headers=disposition)
        headers = {**disposition, "Content-Type": content_type_for(target.filename)}
        return web.FileResponse(target.path, headers=headers)

    @routes.get("/internal/folder_paths")
    async def folder_paths(request: web.Request) -> web.Response:
        return web.json_response(
            {k: [str(p) for p in install.folder_dirs(k)] for k in install.model_folders()}
        )

    sim = web.RouteTableDef()

    @sim.get("/__sim/faults")
    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(emu.faults.as_dict())

    @sim.post("/__sim/faults")
    async def post_faults(request: web.Request) -> web.Response:
        try:
            values = await request.json()
            if not isinstance(values, dict):
                raise ValueError("expected a JSON object")
            emu.faults.update(values)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(emu.faults.as_dict())

    @sim.post("/__sim/restart")
    async def post_restart(request: web.Request) -> web.Response:
        await emu.restart(hard=False)
        return web.json_response(
            {
                "restarted": True,
                "custom_nodes": sorted(install.custom_nodes.values()),
                "simulated": True,
                "platform": platform.system(),
            }
        )

    defs: list[web.RouteDef] = []
    for route in routes:
        assert isinstance(route, web.RouteDef)
        defs.append(route)
        defs.append(web.RouteDef(route.method, "/api" + route.path, route.handler, route.kwargs))
    defs.extend(r for r in sim if isinstance(r, web.RouteDef))
    return defs
