"""File-system halves of `/upload/image` and `/view`, with ComfyUI's exact path rules.

Kept synchronous (the routes run them in a thread) so the event loop never blocks on disk.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

mimetypes.add_type("image/webp", ".webp")
mimetypes.add_type("video/mp4", ".mp4")
mimetypes.add_type("video/webm", ".webm")

_FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


def save_upload(
    upload_dir: Path, subfolder: str, filename: str, content: bytes, overwrite: bool
) -> str | None:
    """Store an upload; returns the name used, or None when the subfolder escapes upload_dir (400).
    Without overwrite an existing name with identical content is reused, otherwise "name (1).ext"."""
    folder = Path(os.path.abspath(os.path.join(upload_dir, os.path.normpath(subfolder))))
    filename = os.path.basename(filename)
    filepath = folder / filename
    if os.path.commonpath((str(upload_dir), str(filepath))) != str(upload_dir):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        digest = hashlib.sha256(content).digest()
        i = 1
        while filepath.exists():
            if hashlib.sha256(filepath.read_bytes()).digest() == digest:
                return filename
            filename = f"{stem} ({i}){ext}"
            filepath = folder / filename
            i += 1
    tmp = filepath.with_name(f".{filepath.name}.{uuid.uuid4().hex}.upload")
    tmp.write_bytes(content)
    tmp.replace(filepath)
    return filename


@dataclass
class ViewTarget:
    status: int
    path: str = ""
    filename: str = ""


def resolve_view(base_dir: Path | None, filename: str, subfolder: str | None) -> ViewTarget:
    """ComfyUI's /view checks: 400 for '/x' or '..', 403 for an escaping subfolder, 404 if missing."""
    if not filename:
        return ViewTarget(400)
    if filename[0] == "/" or ".." in filename:
        return ViewTarget(400)
    if base_dir is None:
        return ViewTarget(400)
    output_dir = str(base_dir)
    if subfolder is not None:
        full = os.path.join(output_dir, subfolder)
        if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
            return ViewTarget(403)
        output_dir = full
    filename = os.path.basename(filename)
    path = os.path.join(output_dir, filename)
    if not os.path.isfile(path):
        return ViewTarget(404)
    return ViewTarget(200, path, filename)


def content_type_for(filename: str) -> str:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return "application/octet-stream" if content_type in _FORCE_DOWNLOAD else content_type


def reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """`preview=webp;50` -> webp/jpeg; `channel=rgb|a` -> png. Returns (bytes, content type)."""
    with Image.open(path) as img:
        buf = io.BytesIO()
        if preview is not None:
            fmt, _, quality = preview.partition(";")
            fmt = fmt if fmt in ("webp", "jpeg") else "webp"
            img.convert("RGB").save(buf, format=fmt, quality=int(quality or 90))
            return buf.getvalue(), f"image/{fmt}"
        rgba = img.convert("RGBA")
        if channel == "rgb":
            out = rgba.convert("RGB")
        else:
            black = Image.new("L", rgba.size)
            out = Image.merge("RGBA", (black, black, black, rgba.getchannel("A")))
        out.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
