"""`comfyfleet store ...`: check the configured store, fetch fresh URLs, inspect and manage objects."""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from app.config import get_settings
from app.store.base import Store
from app.store.factory import make_store

T = TypeVar("T")
store_cli = typer.Typer(help="The result store (R2 or the local directory).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _run(fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = make_store(get_settings())
        try:
            return await fn(store)
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                await close()

    return asyncio.run(go())


def _describe(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": type(store).__name__}
    for attr in ("bucket", "endpoint_url", "public_base_url", "root"):
        if getattr(store, attr, None) is not None:
            out[attr] = str(getattr(store, attr))
    return out


def _emit(data: dict[str, Any], as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data) if as_json else human)


@store_cli.command("check")
def check_cmd(as_json: JsonOpt = False) -> None:
    """Verify the store works: bucket exists and credentials are accepted (or the dir is writable)."""

    async def go(store: Store) -> dict[str, Any]:
        await store.check()  # type: ignore[attr-defined]
        return _describe(store)

    info = _run(go)
    _emit({"ok": True, **info}, as_json, "ok: " + ", ".join(f"{k}={v}" for k, v in info.items()))


@store_cli.command("url")
def url_cmd(key: str, as_json: JsonOpt = False) -> None:
    """A URL for KEY that works now (public, or freshly presigned)."""

    async def go(store: Store) -> str:
        return await store.url(key)

    url = _run(go)
    _emit({"key": key, "url": url}, as_json, url)


@store_cli.command("head")
def head_cmd(key: str, as_json: JsonOpt = False) -> None:
    """Size, content type, etag and metadata of KEY (exit 1 when it does not exist)."""

    async def go(store: Store):
        return await store.head(key)

    obj = _run(go)
    if obj is None:
        _emit({"key": key, "exists": False}, as_json, f"{key}: not found")
        raise typer.Exit(1)
    data = {"exists": True, **asdict(obj)}
    meta = " ".join(f"{k}={v}" for k, v in obj.metadata.items())
    _emit(data, as_json, f"{key}: {obj.size} bytes, {obj.content_type}, etag {obj.etag} {meta}".rstrip())


@store_cli.command("put")
def put_cmd(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    key: str,
    content_type: Annotated[str | None, typer.Option(help="Default: guessed from the file name")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="name=value (repeatable)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload PATH as KEY and print its URL."""
    ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    metadata: dict[str, str] = {}
    for item in meta or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--meta {item!r}: expected name=value")
        metadata[name.strip()] = value

    async def go(store: Store):
        obj = await store.put(path, key, ctype, metadata)
        return obj, await store.url(key)

    obj, url = _run(go)
    _emit({**asdict(obj), "url": url}, as_json, f"stored {key} ({obj.size} bytes, {obj.content_type})\n{url}")


@store_cli.command("delete")
def delete_cmd(key: str, as_json: JsonOpt = False) -> None:
    """Delete KEY (no error when it does not exist)."""

    async def go(store: Store) -> None:
        await store.delete(key)

    _run(go)
    _emit({"key": key, "deleted": True}, as_json, f"deleted {key}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(store_cli, name="store")
