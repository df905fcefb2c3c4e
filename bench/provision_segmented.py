"""Benchmark: segmented downloads vs one connection per file, behind a CDN-like per-connection cap.

The model server (separate process) serves the six Wan 2.2 files (real names, scaled-down sizes) capped
at C per connection and 8C in total, as a CDN in front of a fast host link. Provisioning runs over a real
OpenSSH sshd on loopback (the in-process sandbox SSH server when sshd is missing), alternating in one run:

- "one connection per file" = today's behaviour before segmented downloads (connections=1, 4 files at
  a time): at most 4C, and the two big experts set the pace;
- "segmented" = connections per file and in total from the settings' defaults (8 and 16), segments
  scaled with the files (the real files are ~70x larger than the scaled ones: 64 MiB -> 1 MiB).

Prints throughput as a share of the total cap (in the script: begin -> summary; end to end: including
SSH connect, SFTP upload and shell start) and, per file, how long the hash took to finish after the last
byte landed (`verify_ms`: the streaming sha256 trails the in-order join by about one round of segments).
With `--aria2c` it also times aria2c (-x8 -s8, its own sha-256 check) on the same files for comparison.

    python bench/provision_segmented.py [--conn-cap-mbps 5] [--scale 16] [--rounds 2] [--aria2c]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from app.config import Settings
from app.provision import build_plan, connect, run_provision
from app.sim.modelserver import default_files

REPO = Path(__file__).resolve().parent.parent
warnings.filterwarnings("ignore", "coroutine 'Queue.join' was never awaited", RuntimeWarning)


def start_model_server(
    root: Path, cap_mbps: float, conn_cap_mbps: float, scale: float
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.sim.modelserver", "--root", str(root), "--cap-mbps", str(cap_mbps),
         "--conn-cap-mbps", str(conn_cap_mbps), "--scale", str(scale)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info["url"], info["files"]


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--conn-cap-mbps", type=float, default=5.0, help="C: per-connection cap, MB/s (1e6 B)"
    )
    parser.add_argument("--scale", type=float, default=16.0, help="x the default tiny sizes (27 MB total)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument("--segment-mb", type=float, default=1.0, help="segment size (MiB) at this scale")
    parser.add_argument("--transport", choices=["auto", "sshd", "sandbox"], default="auto")
    parser.add_argument("--aria2c", action="store_true", help="also time aria2c -x8 -s8 on the same files")
    args = parser.parse_args()

    settings_defaults = Settings()
    per_file, total_conns = (
        settings_defaults.provision_connections_per_file,
        settings_defaults.provision_connections_total,
    )
    cap = 8 * args.conn_cap_mbps * 1e6
    work = Path(tempfile.mkdtemp(prefix="bench-segmented-"))
    files = default_files(args.scale)
    total = sum(f.size for f in files)
    server, url, hashes = await asyncio.to_thread(
        start_model_server, work / "served", 8 * args.conn_cap_mbps, args.conn_cap_mbps, args.scale
    )
    sshd = sandbox = None
    try:
        from tests.support.sshd import start_sshd, unavailable_reason

        if args.transport != "sandbox" and unavailable_reason() is None:
            sshd = start_sshd(work / "sshd")
            target, key_path, kind = sshd.target(), sshd.client_key_path, "OpenSSH sshd"
        else:
            import asyncssh

            from app.pool.provider import SSHTarget
            from app.sim.sshserver import SandboxSSHServer

            key = asyncssh.generate_private_key("ssh-ed25519")
            key_path = work / "key"
            key.write_private_key(str(key_path))
            sandbox = SandboxSSHServer(work / "sandbox", key.export_public_key("openssh").decode())
            port = await sandbox.start()
            target, kind = SSHTarget("127.0.0.1", port, "root", sandbox.host_key_line), "sandbox SSH server"

        settings = Settings(data_dir=work / "data")
        models = [SimpleNamespace(name=f.name, folder=f.folder, url=f"https://example.invalid/{f.name}",
                                  size=f.size, sha256=None) for f in files]  # fmt: skip
        workflow = SimpleNamespace(name="bench", models=models, custom_nodes=[])
        base = await build_plan(workflow, settings, mirror_url=url)  # exact sizes + sha256 from the server
        base = dataclasses.replace(
            base, min_free_bytes=0, restart_cmd=None, segment_bytes=int(args.segment_mb * 2**20)
        )
        modes = {
            "one connection per file": dataclasses.replace(base, connections=1),
            "segmented": dataclasses.replace(base, connections=per_file, max_connections=total_conns),
        }
        results: dict[str, list[dict]] = {name: [] for name in modes}

        async def run(name: str, plan, n: int) -> None:
            comfy = work / f"ComfyUI-{n}"
            plan = dataclasses.replace(plan, comfy_dir=str(comfy))
            marks: dict[str, float] = {}
            done: dict[str, dict] = {}

            def on_event(event: dict) -> None:
                if event.get("event") in ("begin", "summary"):
                    marks[event["event"]] = time.monotonic()
                if event.get("event") == "done":
                    done[event["file"]] = event

            t0 = time.monotonic()
            async with await connect(target, key_path) as conn:
                summary = await run_provision(conn, plan, on_event, remote_dir=str(work / "remote"))
            t1 = time.monotonic()
            assert summary.bytes_downloaded == total and len(summary.downloaded) == len(files)
            assert all(summary.sha256[f.name] == hashes[f.name] for f in files)
            results[name].append({
                "e2e": total / (t1 - t0), "script": total / (marks["summary"] - marks["begin"]),
                "seconds": marks["summary"] - marks["begin"],
                "verify_ms": max(e.get("verify_ms", 0) for e in done.values()),
                "connections": {f: e.get("connections") for f, e in done.items()},
            })  # fmt: skip
            await asyncio.to_thread(shutil.rmtree, comfy, True)

        n = 0
        for _ in range(args.rounds):
            for name, plan in modes.items():
                n += 1
                await run(name, plan, n)

        print(f"transport: {kind}; {len(files)} files, {total / 1e6:.1f} MB; "
              f"cap C = {args.conn_cap_mbps:g} MB/s per connection, 8C = {cap / 1e6:g} MB/s in total; "
              f"segments {args.segment_mb:g} MiB; {args.rounds} rounds, alternating")  # fmt: skip
        ok = True
        for name, runs in results.items():
            script = statistics.median(r["script"] for r in runs)
            e2e = statistics.median(r["e2e"] for r in runs)
            secs = statistics.median(r["seconds"] for r in runs)
            tail = max(r["verify_ms"] for r in runs)
            conns = runs[-1]["connections"]
            print(f"{name:>24}: in the script {script / 1e6:5.1f} MB/s = {100 * script / cap:5.1f}% of 8C "
                  f"({secs:.1f} s); end to end {e2e / 1e6:5.1f} MB/s = {100 * e2e / cap:5.1f}%; "
                  f"hash done <= {tail} ms after the last byte; "
                  f"connections per file {sorted(conns.values())}")  # fmt: skip
            if name == "segmented":
                ok = script >= 0.9 * cap

        if args.aria2c and shutil.which("aria2c"):
            lines = []
            for f in files:
                lines += [f"{url}/{f.folder}/{f.name}", f"  out={f.folder}/{f.name}",
                          f"  checksum=sha-256={hashes[f.name]}"]  # fmt: skip
            dest = work / "aria2"
            cmd = (f"aria2c -q -i - -d {shlex.quote(str(dest))} -j 4 -x {per_file} -s {per_file} -k 1M "
                   "--file-allocation=none --max-tries=5 --retry-wait=1 "
                   "--auto-file-renaming=false")  # fmt: skip
            async with await connect(target, key_path) as conn:
                t0 = time.monotonic()
                res = await conn.run(cmd, input="\n".join(lines) + "\n", check=False)
                t1 = time.monotonic()
            assert res.exit_status == 0, res.stderr
            rate = total / (t1 - t0)
            label = "aria2c -x8 -s8 (sha-256)"
            print(f"{label:>24}: {rate / 1e6:5.1f} MB/s = {100 * rate / cap:5.1f}% of 8C "
                  f"({t1 - t0:.1f} s, including its hash pass after each file)")  # fmt: skip
        print("PASS" if ok else "FAIL (segmented below 90% of the total cap)")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(5)
        if sshd is not None:
            sshd.stop()
        if sandbox is not None:
            await sandbox.stop()
        await asyncio.to_thread(shutil.rmtree, work, True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
