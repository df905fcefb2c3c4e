"""Taking an input image from a caller safely: URL fetch with an SSRF guard, size and pixel caps, and a
real decode.

The guard resolves the host itself and connects to the address it checked (Host header and TLS SNI keep
the name), so DNS rebinding between check and connect cannot reach an internal address; every redirect is
checked the same way. Only globally routable addresses pass (loopback optionally, for tests and local
setups). Images are staged under a private name and only committed to the inputs folder, named by their
sha256, when the request is accepted, so a rejected request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError

from app.errors import ValidationError

Resolver = Callable[[str, int], Awaitable[list[str]]]
_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
# Cloud metadata endpoints; most are link-local or private already, listed so the intent is explicit.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(addr: str, *, allow_loopback: bool = False) -> str | None:
    """Why connecting to `addr` is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        # 6to4 (2002::/16) carries an IPv4 address that a relay or a local sit tunnel delivers to:
        # judge that address (Python 3.11 counts all of 2002::/16 as global).
        return address_problem(str(ip.sixtofour), allow_loopback=allow_loopback)
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "not a public address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


@dataclass
class InputImage:
    sha256: str
    path: Path  # staged until `commit`
    width: int
    height: int
    format: str
    size_bytes: int

    def commit(self, inputs_dir: Path) -> Path:
        """Move the staged file to its content-addressed name (idempotent for identical images)."""
        self.path = _commit_staged(
            self.path, inputs_dir / f"{self.sha256}.{_FORMATS.get(self.format, 'img')}"
        )
        return self.path

    def discard(self) -> None:
        _discard_staged(self.path)


class ImageIntake:
    def __init__(
        self,
        inputs_dir: Path,
        *,
        max_bytes: int,
        max_pixels: int,
        allow_loopback: bool = False,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 20.0,
        total_timeout_s: float = 60.0,
        max_redirects: int = 5,
        max_audio_bytes: int = 50 * 1024 * 1024,
        max_audio_seconds: float = 120.0,
    ) -> None:
        self.max_audio_bytes, self.max_audio_seconds = max_audio_bytes, max_audio_seconds
        self.inputs_dir = inputs_dir
        self.staging = inputs_dir / ".staging"
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.allow_loopback = allow_loopback
        self.resolver = resolver or system_resolver
        self.transport = transport
        self.timeout_s = timeout_s
        self.total_timeout_s = total_timeout_s  # a host trickling bytes inside each read timeout
        self.max_redirects = max_redirects

    # --- URL safety --------------------------------------------------------------------------------
    async def check_url(self, url: str, field: str) -> tuple[str, int, str]:
        """Validate scheme/host and resolve; returns (host, port, the address to connect to)."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ValidationError(field, f"not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise ValidationError(field, "must be an http:// or https:// URL")
        host = parts.hostname
        if not host:
            raise ValidationError(field, "the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValidationError(field, "the URL has an invalid port") from None
        try:
            addrs = await asyncio.wait_for(self.resolver(host, port), 10)
        except (OSError, TimeoutError) as exc:
            raise ValidationError(field, f"cannot resolve host {host!r} ({type(exc).__name__})") from None
        if not addrs:
            raise ValidationError(field, f"host {host!r} has no address")
        for addr in addrs:
            problem = address_problem(addr, allow_loopback=self.allow_loopback)
            if problem:
                raise ValidationError(field, f"host {host!r} resolves to {problem} ({addr}); refused")
        return host, port, addrs[0]

    async def guard(self, url: str) -> None:
        """For other outbound URLs (webhooks): the same address rules, raising ValidationError."""
        await self.check_url(url, "webhook_url")

    async def pinned_request(
        self, client: httpx.AsyncClient, method: str, url: str, field: str, **kwargs: Any
    ) -> httpx.Request:
        """A request to `url` that connects to the address just checked (Host header and TLS SNI keep the
        name), so a DNS answer that changes between check and connect cannot redirect it inward."""
        host, port, addr = await self.check_url(url, field)
        parts = urlsplit(url)
        ip_host = f"[{addr}]" if ":" in addr else addr
        pinned = urlunsplit((parts.scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Host"] = host if parts.port is None else f"{host}:{parts.port}"
        return client.build_request(
            method, pinned, headers=headers, extensions={"sni_hostname": host}, **kwargs
        )

    async def pinned_post(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict
    ) -> httpx.Request:
        return await self.pinned_request(client, "POST", url, "webhook_url", content=body, headers=headers)

    # --- sources -----------------------------------------------------------------------------------
    async def from_url(self, url: str, field: str = "image_url") -> InputImage:
        try:
            async with asyncio.timeout(self.total_timeout_s):
                return await self._fetch(url, field)  # type: ignore[return-value]
        except TimeoutError:
            raise ValidationError(
                field, f"fetching the image took longer than {self.total_timeout_s:.0f} s"
            ) from None

    async def _fetch(self, url: str, field: str, *, audio: bool = False) -> InputImage | InputAudio:
        max_bytes = self.max_audio_bytes if audio else self.max_bytes
        too_big = self._audio_too_big if audio else self._too_big
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / uuid.uuid4().hex
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout_s, follow_redirects=False, transport=self.transport, trust_env=False
            ) as client:
                current = url
                for _ in range(self.max_redirects + 1):
                    req = await self.pinned_request(
                        client, "GET", current, field, headers={"Accept": "audio/*" if audio else "image/*"}
                    )
                    resp = await client.send(req, stream=True)
                    try:
                        if resp.status_code in (301, 302, 303, 307, 308):
                            location = resp.headers.get("location")
                            if not location:
                                raise ValidationError(field, "the server sent a redirect without a location")
                            current = urljoin(current, location)
                            continue
                        if resp.status_code != 200:
                            raise ValidationError(
                                field,
                                f"fetching the {'audio' if audio else 'image'} failed: "
                                f"HTTP {resp.status_code}",
                            )
                        declared = resp.headers.get("content-length")
                        if declared and declared.isdigit() and int(declared) > max_bytes:
                            raise ValidationError(field, too_big())
                        digest, size = hashlib.sha256(), 0
                        with open(staged, "wb") as fh:  # noqa: ASYNC230 - <= max_bytes, 64 KiB writes
                            async for chunk in resp.aiter_bytes(65536):
                                size += len(chunk)
                                if size > max_bytes:
                                    raise ValidationError(field, too_big())
                                digest.update(chunk)
                                fh.write(chunk)
                    finally:
                        await resp.aclose()
                    if audio:
                        return await self._decode_audio(staged, digest.hexdigest(), size, field)
                    return await self._decode(staged, digest.hexdigest(), size, field)
                raise ValidationError(field, f"more than {self.max_redirects} redirects")
        except ValidationError:
            staged.unlink(missing_ok=True)
            raise
        except httpx.HTTPError as exc:
            staged.unlink(missing_ok=True)
            what = "audio" if audio else "image"
            raise ValidationError(field, f"fetching the {what} failed ({type(exc).__name__})") from None
        except BaseException:  # the total deadline, a client gone: no staged file left behind
            staged.unlink(missing_ok=True)
            raise

    async def from_base64(self, data: str, field: str = "image_base64") -> InputImage:
        return await self.from_bytes(_decode_base64(data, self.max_bytes, field, self._too_big()), field)

    async def from_bytes(self, raw: bytes, field: str) -> InputImage:
        if len(raw) > self.max_bytes:
            raise ValidationError(field, self._too_big())
        staged, sha = self._stage(raw)
        return await self._decode(staged, sha, len(raw), field)

    async def from_path(self, path: Path, field: str = "image") -> InputImage:
        return await self.from_bytes(await _read_file(path, self.max_bytes, field, self._too_big()), field)

    def _stage(self, raw: bytes) -> tuple[Path, str]:
        """The bytes in a fresh staging file, and their sha256."""
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / uuid.uuid4().hex
        staged.write_bytes(raw)
        return staged, hashlib.sha256(raw).hexdigest()

    # --- decoding ----------------------------------------------------------------------------------
    async def _decode(self, staged: Path, sha: str, size: int, field: str) -> InputImage:
        try:
            width, height, fmt = await asyncio.to_thread(self._decode_sync, staged, field)
        except BaseException:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            raise
        return InputImage(sha, staged, width, height, fmt, size)

    def _decode_sync(self, path: Path, field: str) -> tuple[int, int, str]:
        try:
            with Image.open(path) as img:
                width, height = img.size
                fmt = img.format or ""
                if width * height > self.max_pixels:
                    raise ValidationError(
                        field, f"the image is {width}x{height}, more than the {self.max_pixels} pixel limit"
                    )
                if fmt not in _FORMATS:
                    raise ValidationError(
                        field, f"unsupported image format {fmt or 'unknown'}; use PNG/JPEG/WEBP"
                    )
                img.load()  # a real decode: truncated or corrupt data fails here
        except ValidationError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise ValidationError(field, "is not a decodable image (PNG, JPEG or WEBP expected)") from None
        if width < 16 or height < 16:
            raise ValidationError(field, f"the image is {width}x{height}; at least 16x16 is needed")
        return width, height, fmt

    def _too_big(self) -> str:
        return f"the image is larger than the {self.max_bytes} byte limit"

    def _audio_too_big(self) -> str:
        return f"the audio is larger than the {self.max_audio_bytes} byte limit"

    # --- audio -------------------------------------------------------------------------------------
    async def audio_from_url(self, url: str, field: str = "audio_url") -> InputAudio:
        """Fetch audio under the same SSRF rules as images, then check it like `audio_from_bytes`."""
        try:
            async with asyncio.timeout(self.total_timeout_s):
                return await self._fetch(url, field, audio=True)  # type: ignore[return-value]
        except TimeoutError:
            raise ValidationError(
                field, f"fetching the audio took longer than {self.total_timeout_s:.0f} s"
            ) from None

    async def audio_from_base64(self, data: str, field: str = "audio_base64") -> InputAudio:
        raw = _decode_base64(data, self.max_audio_bytes, field, self._audio_too_big())
        return await self.audio_from_bytes(raw, field)

    async def audio_from_bytes(self, raw: bytes, field: str) -> InputAudio:
        if len(raw) > self.max_audio_bytes:
            raise ValidationError(field, self._audio_too_big())
        staged, sha = self._stage(raw)
        return await self._decode_audio(staged, sha, len(raw), field)

    async def audio_from_path(self, path: Path, field: str = "audio") -> InputAudio:
        raw = await _read_file(path, self.max_audio_bytes, field, self._audio_too_big())
        return await self.audio_from_bytes(raw, field)

    async def _decode_audio(self, staged: Path, sha: str, size: int, field: str) -> InputAudio:
        try:
            seconds, rate, channels, ext = await asyncio.to_thread(
                decode_audio, staged, field, self.max_audio_seconds
            )
        except BaseException:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            raise
        return InputAudio(sha, staged, seconds, ext, size, rate, channels)


# PyAV container format names -> the file extension ComfyUI's LoadAudio (PyAV too) is given.
_AUDIO_EXT = {"mp3": "mp3", "wav": "wav", "flac": "flac", "ogg": "ogg", "mov,mp4,m4a,3gp,3g2,mj2": "m4a"}


def decode_audio(path: Path, field: str, max_seconds: float) -> tuple[float, int, int, str]:
    """Decode every audio frame (a real decode: truncated or corrupt data fails) and measure the duration
    from the samples; stops as soon as the duration passes `max_seconds`. (seconds, rate, channels, ext)."""
    import av  # PyAV: the same decoder ComfyUI's LoadAudio uses

    try:
        with av.open(str(path), "r") as container:
            ext = _AUDIO_EXT.get(container.format.name)
            if ext is None:
                raise ValidationError(
                    field,
                    f"unsupported audio container {container.format.name}; use MP3, WAV, FLAC, OGG or M4A",
                )
            if not container.streams.audio:
                raise ValidationError(field, "has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or 0)
            channels = int(stream.codec_context.channels or 0)
            samples = 0
            for frame in container.decode(stream):
                rate = rate or int(frame.sample_rate)
                samples += int(frame.samples)
                if rate and samples / rate > max_seconds:
                    raise ValidationError(field, f"the audio is longer than the {max_seconds:g} s limit")
    except ValidationError:
        raise
    except Exception:  # av.error.FFmpegError and its kin: not audio
        raise ValidationError(field, "is not decodable audio (MP3, WAV, FLAC, OGG or M4A expected)") from None
    if not rate or samples == 0:
        raise ValidationError(field, "holds no audio samples")
    return samples / rate, rate, channels, ext


@dataclass
class InputAudio:
    """An accepted audio file, staged until `commit` (content-addressed like images)."""

    sha256: str
    path: Path
    duration_s: float
    format: str  # file extension: mp3, wav, flac, ogg, m4a
    size_bytes: int
    sample_rate: int
    channels: int

    def commit(self, inputs_dir: Path) -> Path:
        self.path = _commit_staged(self.path, inputs_dir / f"{self.sha256}.{self.format}")
        return self.path

    def discard(self) -> None:
        _discard_staged(self.path)


def _commit_staged(staged: Path, final: Path) -> Path:
    """The staged file at its content-addressed name; an identical file already there wins."""
    if final.exists():
        staged.unlink(missing_ok=True)
    else:
        os.replace(staged, final)
    return final


def _discard_staged(path: Path) -> None:
    if path.parent.name == ".staging":
        path.unlink(missing_ok=True)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _decode_base64(data: str, max_bytes: int, field: str, too_big: str) -> bytes:
    """A base64 field (a `data:` URL prefix allowed), refused before decoding when it cannot fit."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    if len(data) > (max_bytes * 4) // 3 + 8:
        raise ValidationError(field, too_big)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(field, "is not valid base64") from None


def require_file(path: Path, field: str) -> int:
    """A local input's size, or the error naming its field when it is not a file. The CLI checks its paths
    with it before anything slow starts (a simulated world takes seconds to come up)."""
    size = _file_size(path)
    if size is None:
        raise ValidationError(field, f"{path} is not a file")
    return size


async def _read_file(path: Path, max_bytes: int, field: str, too_big: str) -> bytes:
    """A local file's bytes (the CLI's inputs), refused by its size before reading."""
    size = await asyncio.to_thread(require_file, path, field)
    if size > max_bytes:
        raise ValidationError(field, too_big)
    return await asyncio.to_thread(path.read_bytes)
