"""A local stand-in for the model hosts (Hugging Face and its CDN, or a team's mirror).

Provisioning must be tested against the failures real downloads have (a dropped connection mid-file,
wrong bytes, 5xx, 404, a gated repo, a slow or saturated link), so this server serves generated files
with valid GGUF / safetensors headers and a known sha256, honours HTTP Range exactly, records the Range
of every request (tests assert that a resume continued from the right byte), and has fault switches.

Routes:
- `/<folder>/<name>`: mirror layout (`MODEL_MIRROR_URL`), served directly.
- `/<org>/<repo>/resolve/<rev>/<folder>/<name>`: Hugging Face style. HEAD and GET answer 302 to the CDN
  route on another host name (`cdn_host`, default `localhost`), with `X-Linked-Size` / `X-Linked-Etag`
  (sha256) as the Hub does, so a client must follow the redirect and must not carry its token along.
- `/cdn/<folder>/<name>`: the CDN behind the redirect.

Files are generated once on disk and streamed in chunks, never held in memory. Two bandwidth caps make
throughput measurable, as on a real CDN: a total cap (a token bucket shared by all connections) and a
per-connection cap (each response paced on its own), so one connection cannot fill the link and
several connections (segmented downloads) can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

CHUNK = 256 * 1024
HF_REPO = "acme/wan-models"
HF_REV = "main"


@dataclass(frozen=True)
class FileSpec:
    """A file to generate: `kind` is "gguf", "safetensors" or "bin" (no header)."""

    folder: str
    name: str
    size: int
    kind: str | None = None
    seed: int = 0

    @property
    def effective_kind(self) -> str:
        if self.kind:
            return self.kind
        if self.name.endswith(".gguf"):
            return "gguf"
        if self.name.endswith(".safetensors"):
            return "safetensors"
        return "bin"


@dataclass
class ServedFile:
    spec: FileSpec
    path: Path
    sha256: str

    @property
    def size(self) -> int:
        return self.spec.size


@dataclass
class FileFaults:
    """Fault switches for one file. Counters: a positive number = that many more times, -1 = always."""

    drop_at: int | None = None  # abort the connection when this absolute byte offset is reached
    drop_times: int = 0
    corrupt_times: int = 0  # responses whose middle byte is flipped (header stays valid)
    status: int | None = None  # answer this status instead of the file
    status_times: int = 0
    slow_bps: float | None = None  # per-connection rate limit for this file
    require_token: str | None = None  # HF route answers 401 without `Authorization: Bearer <token>`
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request (as some servers do)

    @staticmethod
    def _use(counter: int) -> tuple[bool, int]:
        if counter == 0:
            return False, 0
        return True, counter if counter < 0 else counter - 1


@dataclass
class RequestLog:
    method: str
    path: str
    host: str
    range: str | None
    status: int
    authorization: bool  # whether an Authorization header was present (never its value)
    bytes_sent: int = 0
    start: int | None = None  # first byte offset served (for GETs with a body)


def _header(kind: str, size: int) -> bytes:
    if kind == "gguf":
        head = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    elif kind == "safetensors":
        meta = b'{"__metadata__":{"format":"pt","generator":"comfyfleet-sim"}}'
        meta += b" " * (-len(meta) % 8)
        head = struct.pack("<Q", len(meta)) + meta
    else:
        head = b""
    if len(head) > size:
        raise ValueError(f"{kind} file of {size} bytes is smaller than its header")
    return head


def generate(spec: FileSpec, root: Path) -> ServedFile:
    """Write the file once (deterministic bytes from `spec`); later calls reuse it and its hash."""
    path = root / "files" / spec.folder / spec.name
    meta_path = path.with_name(path.name + ".meta.json")
    key = {"size": spec.size, "kind": spec.effective_kind, "seed": spec.seed}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and path.stat().st_size == spec.size:
            return ServedFile(spec, path, meta["sha256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{spec.folder}/{spec.name}/{spec.seed}")
    digest = hashlib.sha256()
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # several servers may share `root`
    with tmp.open("wb") as f:
        head = _header(spec.effective_kind, spec.size)
        f.write(head)
        digest.update(head)
        left = spec.size - len(head)
        while left > 0:
            block = rng.randbytes(min(1 << 20, left))
            f.write(block)
            digest.update(block)
            left -= len(block)
    tmp.replace(path)
    sha = digest.hexdigest()
    meta_path.write_text(json.dumps({"key": key, "sha256": sha}))
    return ServedFile(spec, path, sha)


class TokenBucket:
    """A bandwidth cap shared by every connection: callers take bytes and sleep off any debt."""

    def __init__(self, rate_bps: float, burst: float | None = None) -> None:
        self.rate = float(rate_bps)
        self.burst = burst if burst is not None else max(CHUNK * 2.0, self.rate / 5)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Single-range `bytes=a-b`, `bytes=a-`, `bytes=-n` -> inclusive (start, end); None if unsatisfiable."""
    spec = header.strip()
    if not spec.startswith("bytes=") or "," in spec:
        raise ValueError(header)
    first, _, last = spec[6:].partition("-")
    if first == "":
        n = int(last)
        if n <= 0:
            return None
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class ModelServer:
    """`ModelServer(root, files)`; `url = await start()`; `mirror_url(f)`, `hf_url(f)`; `log`; `faults`."""

    def __init__(
        self,
        root: Path,
        files: Iterable[FileSpec] = (),
        *,
        bandwidth_bps: float | None = None,
        burst_s: float = 0.2,
        connection_bps: float | None = None,
        cdn_host: str = "localhost",
        hf_repo: str = HF_REPO,
    ) -> None:
        self.root = Path(root)
        self.files: dict[tuple[str, str], ServedFile] = {}
        for spec in files:
            self.add(spec)
        self.bucket = (
            TokenBucket(bandwidth_bps, max(CHUNK * 2.0, bandwidth_bps * burst_s)) if bandwidth_bps else None
        )
        self.connection_bps = connection_bps  # per-connection cap (bytes/s), None = none
        self.cdn_host = cdn_host
        self.hf_repo = hf_repo
        self.faults: dict[str, FileFaults] = {}
        self.log: list[RequestLog] = []
        self.active = 0  # responses streaming right now
        self.peak_active = 0  # the most at once (tests check connection budgets with it)
        self.global_status: int | None = None  # every request answers this (e.g. 503) while set
        self.renamed_repos: set[str] = set()  # "org/repo" names that 307 to `hf_repo`, as the Hub does
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"
        self._lock = asyncio.Lock()

    def add(self, spec: FileSpec) -> ServedFile:
        served = generate(spec, self.root)
        self.files[(spec.folder, spec.name)] = served
        return served

    def file(self, name: str) -> ServedFile:
        for served in self.files.values():
            if served.spec.name == name:
                return served
        raise KeyError(name)

    def fault(self, name: str) -> FileFaults:
        return self.faults.setdefault(name, FileFaults())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def mirror_url(self, name: str) -> str:
        f = self.file(name)
        return f"{self.url}/{f.spec.folder}/{f.spec.name}"

    def hf_url(self, name: str) -> str:
        f = self.file(name)
        return f"{self.url}/{self.hf_repo}/resolve/{HF_REV}/{f.spec.folder}/{f.spec.name}"

    def requests_for(self, name: str, method: str = "GET") -> list[RequestLog]:
        return [r for r in self.log if r.method == method and r.path.endswith("/" + name)]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{org}/{repo}/resolve/{rev}/{folder}/{name}", self._hf)
        app.router.add_route("*", "/cdn/{folder}/{name}", self._mirror)
        app.router.add_route("*", "/{folder}/{name}", self._mirror)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host = host
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ---------------------------------------------------------------------------------
    def _record(self, request: web.Request, status: int, **kw: int | None) -> RequestLog:
        entry = RequestLog(
            method=request.method,
            path=request.path,
            host=request.headers.get("Host", ""),
            range=request.headers.get("Range"),
            status=status,
            authorization="Authorization" in request.headers,
            **kw,  # type: ignore[arg-type]
        )
        self.log.append(entry)
        return entry

    def _status_fault(self, name: str) -> int | None:
        if self.global_status:
            return self.global_status
        f = self.faults.get(name)
        if f and f.status:
            used, f.status_times = FileFaults._use(f.status_times)
            if used:
                return f.status
        return None

    async def _hf(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        name = info["name"]
        served = self.files.get((info["folder"], name))
        repo = f"{info['org']}/{info['repo']}"
        if repo in self.renamed_repos and served is not None:
            self._record(request, 307)
            location = (
                f"/{self.hf_repo}/resolve/{info['rev']}/{info['folder']}/{name}"  # relative, as the Hub
            )
            return web.Response(status=307, headers={"Location": location})
        if repo != self.hf_repo or served is None:
            self._record(request, 404)
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        faults = self.faults.get(name)
        if faults and faults.require_token:
            if request.headers.get("Authorization") != f"Bearer {faults.require_token}":
                self._record(request, 401)
                return web.Response(status=401, headers={"X-Error-Code": "GatedRepo"}, text="gated")
        forced = self._status_fault(name)
        if forced:
            self._record(request, forced)
            return web.Response(status=forced)
        cdn = f"http://{self.cdn_host}:{self.port}/cdn/{info['folder']}/{name}"
        self._record(request, 302)
        return web.Response(
            status=302,
            headers={
                "Location": cdn,
                "X-Linked-Size": str(served.size),
                "X-Linked-Etag": f'"{served.sha256}"',
                "ETag": f'"{served.sha256}"',
                "X-Repo-Commit": hashlib.sha1(self.hf_repo.encode()).hexdigest(),
            },
        )

    async def _mirror(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        served = self.files.get((request.match_info["folder"], name))
        if served is None:
            self._record(request, 404)
            return web.Response(status=404)
        forced = self._status_fault(name)
        if forced:
            self._record(request, forced)
            return web.Response(status=forced)
        size = served.size
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{served.sha256}"'}
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("Range")
        faults = self.faults.get(name)
        if rng and not (faults and faults.ignore_range):
            try:
                parsed = _parse_range(rng, size)
            except ValueError:
                parsed = (0, size - 1)
            if parsed is None:
                self._record(request, 416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        if request.method == "HEAD":
            self._record(request, status)
            return web.Response(status=status, headers=headers)
        entry = self._record(request, status, start=start)
        response = web.StreamResponse(status=status, headers=headers)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await response.prepare(request)
            await self._stream(request, response, served, start, end, entry)
        finally:
            self.active -= 1
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        served: ServedFile,
        start: int,
        end: int,
        entry: RequestLog,
    ) -> None:
        faults = self.faults.get(served.spec.name)
        drop_at = None
        corrupt_at = None
        slow = None
        if faults:
            if faults.drop_at is not None and start < faults.drop_at <= end:
                used, faults.drop_times = FileFaults._use(faults.drop_times)
                drop_at = faults.drop_at if used else None
            mid = served.size // 2
            if start <= mid <= end:
                used, faults.corrupt_times = FileFaults._use(faults.corrupt_times)
                corrupt_at = mid if used else None
            slow = faults.slow_bps
        if self.connection_bps:
            slow = min(slow, self.connection_bps) if slow else self.connection_bps
        pos = start
        began = time.monotonic()
        with served.path.open("rb") as fh:
            fh.seek(start)
            while pos <= end:
                n = min(CHUNK, end - pos + 1)
                if drop_at is not None:
                    n = min(n, drop_at - pos)
                    if n <= 0:
                        # Abort as a real network failure would: no terminating chunk, connection reset.
                        assert request.transport is not None
                        request.transport.abort()
                        return
                block = await asyncio.to_thread(fh.read, n)
                if corrupt_at is not None and pos <= corrupt_at < pos + len(block):
                    i = corrupt_at - pos
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1 :]
                if self.bucket is not None:
                    await self.bucket.take(len(block))
                if slow:
                    ahead = (pos - start + len(block)) / slow - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                try:
                    await response.write(block)
                except (ConnectionResetError, RuntimeError):
                    return
                pos += len(block)
                entry.bytes_sent += len(block)
        await response.write_eof()


def default_files(scale: float = 1.0) -> list[FileSpec]:
    """The six Wan 2.2 files (real names and folders) at a tiny size, for the simulated world."""
    mb = 1024 * 1024
    sizes = [
        ("unet", "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", 8 * mb),
        ("unet", "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf", 8 * mb),
        ("text_encoders", "nsfw_wan_umt5-xxl_fp8_scaled.safetensors", 6 * mb),
        ("vae", "wan_2.1_vae.safetensors", 1 * mb),
        ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", 2 * mb),
        ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors", 2 * mb),
    ]
    return [FileSpec(folder, name, max(64, int(size * scale))) for folder, name, size in sizes]


def sim_node_sources(base: Path, names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Local bare git repos standing in for custom-node repos on GitHub (no network in the simulation).

    One commit each with an `__init__.py` and a comment-only requirements.txt (so no pip install runs).
    Returns name -> (git_url, commit), the shape of `build_plan(node_sources=...)` / CUSTOM_NODE_SOURCES.
    Idempotent: existing repos under `base` are reused. Blocking (runs git): use asyncio.to_thread.
    """
    import os
    import subprocess

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "comfyfleet sim",
        "GIT_AUTHOR_EMAIL": "sim@example.invalid",
        "GIT_COMMITTER_NAME": "comfyfleet sim",
        "GIT_COMMITTER_EMAIL": "sim@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def git(*args: str, cwd: Path) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    out: dict[str, tuple[str, str]] = {}
    for name in names:
        bare = Path(base) / f"{name}.git"
        if not bare.exists():
            work = Path(base) / f"{name}.work"
            work.mkdir(parents=True, exist_ok=True)
            git("init", "-q", "-b", "main", cwd=work)
            (work / "__init__.py").write_text(f"# {name} (simulated)\nNODE_CLASS_MAPPINGS = {{}}\n")
            (work / "requirements.txt").write_text("# simulated node: nothing to install\n")
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", f"{name} (simulated)", cwd=work)
            git("clone", "-q", "--bare", str(work), str(bare), cwd=Path(base))
        out[name] = (str(bare), git("rev-parse", "HEAD", cwd=bare))
    return out


async def _serve(args: argparse.Namespace) -> None:
    files = default_files(args.scale)
    server = ModelServer(
        Path(args.root),
        files,
        bandwidth_bps=args.cap_mbps * 1e6 if args.cap_mbps else None,
        connection_bps=args.conn_cap_mbps * 1e6 if args.conn_cap_mbps else None,
    )
    url = await server.start(args.host, args.port)
    print(
        json.dumps({"url": url, "files": {f.spec.name: f.sha256 for f in server.files.values()}}), flush=True
    )
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve generated model files (simulated model hosts).")
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplier on the default tiny sizes")
    parser.add_argument("--cap-mbps", type=float, default=0.0, help="total bandwidth cap in MB/s (1e6)")
    parser.add_argument("--conn-cap-mbps", type=float, default=0.0, help="per-connection cap in MB/s (1e6)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
