"""A result store in a local directory: the embedded default, no cloud account needed.

Layout under `root`: `objects/<key>` (the bytes, served by `app.store.routes`), `meta/<key>.json`
(content type, metadata, size, etag), `tmp/` (uploads in progress, same filesystem so the final
`os.replace` is atomic: a reader sees the old object or the new one, never a torn file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import quote

from app.store.base import (
    InvalidKey,
    ObjectMissing,
    StoredObject,
    StoreError,
    validate_key,
    validate_metadata,
)

_CHUNK = 1024 * 1024


# The base URL the current HTTP request came in on (set by the API for each request). With no
# PUBLIC_BASE_URL configured, URLs made while answering a request use it, so `video_url` names the same
# host as `status_url` (what the client used), not a bind address.
REQUEST_BASE_URL: ContextVar[str | None] = ContextVar("request_base_url", default=None)


class LocalStore:
    """`Store` on a directory; URLs are `<public_base_url>/files/<key>` (see `local_files_router`)."""

    def __init__(
        self,
        root: Path,
        public_base_url: str,
        *,
        files_prefix: str = "/files",
        follow_request_base: bool = False,
    ) -> None:
        self.follow_request_base = follow_request_base  # no PUBLIC_BASE_URL: URLs use the request's base
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self.files_prefix = "/" + files_prefix.strip("/")
        self.objects_dir = self.root / "objects"
        self.meta_dir = self.root / "meta"
        self.tmp_dir = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self.root)!r})"

    # --- paths -----------------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        """The file holding `key`; raises InvalidKey for anything that would resolve outside objects/."""
        validate_key(key)
        path = (self.objects_dir / key).resolve()
        if not path.is_relative_to(self.objects_dir.resolve()):  # e.g. a symlink planted inside
            raise InvalidKey(f"object key {key[:80]!r} resolves outside the store")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.meta_dir / f"{key}.json"

    # --- Store -----------------------------------------------------------------------------------
    async def put(self, path: Path, key: str, content_type: str, metadata: dict[str, str]) -> StoredObject:
        target = self.path_for(key)
        meta = validate_metadata(metadata)
        return await asyncio.to_thread(self._put_sync, Path(path), key, target, content_type, meta)

    async def put_bytes(
        self, data: bytes, key: str, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        """`put` for a small body already in memory (cache manifests): no temp file on the caller's side."""
        target = self.path_for(key)
        meta = validate_metadata(metadata)
        return await asyncio.to_thread(self._put_sync, bytes(data), key, target, content_type, meta)

    def _put_sync(
        self, src: Path | bytes, key: str, target: Path, content_type: str, meta: dict[str, str]
    ) -> StoredObject:
        if not isinstance(src, bytes) and not src.is_file():
            raise ObjectMissing(f"cannot store {src}: not a file")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp_data = self.tmp_dir / f"{uuid.uuid4().hex}.data"
        tmp_meta = self.tmp_dir / f"{uuid.uuid4().hex}.meta"
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with contextlib.ExitStack() as files:
                fout = files.enter_context(tmp_data.open("wb"))
                if isinstance(src, bytes):
                    md5.update(src)
                    fout.write(src)
                    size = len(src)
                else:
                    fin = files.enter_context(src.open("rb"))
                    while chunk := fin.read(_CHUNK):
                        md5.update(chunk)
                        fout.write(chunk)
                        size += len(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            obj = StoredObject(
                key=key, size=size, content_type=content_type, metadata=meta, etag=md5.hexdigest()
            )
            tmp_meta.write_text(
                json.dumps({"content_type": content_type, "metadata": meta, "size": size, "etag": obj.etag})
            )
            meta_path = self._meta_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_meta, meta_path)
            os.replace(tmp_data, target)
        except OSError as exc:
            raise StoreError(f"cannot write {key} under {self.root}: {exc.strerror or exc}") from exc
        finally:
            for tmp in (tmp_data, tmp_meta):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return obj

    async def head(self, key: str) -> StoredObject | None:
        target = self.path_for(key)
        return await asyncio.to_thread(self._head_sync, key, target)

    def _head_sync(self, key: str, target: Path) -> StoredObject | None:
        try:
            st = target.stat()
        except FileNotFoundError:
            return None
        if not target.is_file():
            return None
        try:
            sidecar = json.loads(self._meta_path(key).read_text())
        except (FileNotFoundError, ValueError):
            sidecar = {}
        return StoredObject(
            key=key,
            size=st.st_size,
            content_type=sidecar.get("content_type", "application/octet-stream"),
            metadata=dict(sidecar.get("metadata", {})),
            etag=sidecar.get("etag", ""),
        )

    async def url(self, key: str) -> str:
        validate_key(key)
        base = (REQUEST_BASE_URL.get() if self.follow_request_base else None) or self.public_base_url
        return f"{base}{self.files_prefix}/{quote(key)}"

    async def delete(self, key: str) -> None:
        target = self.path_for(key)

        def _delete() -> None:
            for p in (target, self._meta_path(key)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

        await asyncio.to_thread(_delete)

    async def get_to_file(self, key: str, dest: Path) -> int:
        """Copy the object to `dest` (streamed, atomically via a .part file); returns its size."""
        source = self.path_for(key)

        def _copy() -> int:
            if not source.is_file():
                raise ObjectMissing(f"{key} is not in the local store")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
            return dest.stat().st_size

        return await asyncio.to_thread(_copy)

    # --- extras ----------------------------------------------------------------------------------
    async def check(self) -> None:
        """Fail fast if the directory cannot be written."""

        def _check() -> None:
            try:
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                probe = self.tmp_dir / f"probe-{uuid.uuid4().hex}"
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError as exc:
                raise StoreError(f"local store {self.root} is not writable: {exc.strerror or exc}") from exc

        await asyncio.to_thread(_check)

    async def close(self) -> None:
        return None
