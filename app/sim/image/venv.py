"""ComfyUI's own Python environment in the simulated image (`/venv/main` on the real one).

A real virtual environment (made by hand in milliseconds: `pyvenv.cfg`, a `bin/python` symlink to this
interpreter, an empty site-packages) whose `pip` is this interpreter's pip, reached through a `.pth` file,
so `<venv>/bin/python -m pip install ...` really installs into it. It holds a stand-in for the image's CUDA
build of torch (`2.8.0+cu129`). Its `pip.conf` points pip at a local index (no network in the simulation)
that offers the kind of torch a custom node's `requirements.txt` pulls from PyPI: a newer, CPU-only one.
Installing that replaces the CUDA torch, and the simulated ComfyUI then refuses to start, as the real one
fails on a host whose torch lost CUDA.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import uuid
import zipfile
from pathlib import Path

IMAGE_TORCH = {"torch": "2.8.0+cu129", "torchvision": "0.23.0+cu129", "torchaudio": "2.8.0+cu129"}
PYPI_TORCH = {"torch": "2.9.1", "torchvision": "0.24.1", "torchaudio": "2.9.1"}  # CPU builds, newer
EXTRA_PACKAGES = {"simnode-extra": "1.0.0", "simnode-needs-torch": "1.0.0"}  # what a node may list too
REQUIRES = {"simnode-needs-torch": ["torch>=2.9"]}  # a dependency that pulls another torch in itself
_VERSION_RE = re.compile(r'^__version__ = "([^"]+)"', re.M)


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _module(name: str) -> str:
    return name.replace("-", "_")


def _files(name: str, version: str) -> dict[str, str]:
    mod, dist = _module(name), f"{_module(name)}-{version}.dist-info"
    cuda = "12.9" if "+cu" in version else None
    return {
        f"{mod}/__init__.py": f'__version__ = "{version}"\ncuda = {cuda!r}\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in REQUIRES.get(name, [])),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: comfyfleet-sim\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }


def _record(files: dict[str, str], dist: str) -> str:
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(text.encode())}")
    lines.append(f"{dist}/RECORD,,")
    return "\n".join(lines) + "\n"


def build_index(index_dir: Path) -> Path:
    """Wheels standing in for PyPI (idempotent, and safe to run from several boots at once)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    for name, version in {**PYPI_TORCH, **EXTRA_PACKAGES}.items():
        wheel = index_dir / f"{_module(name)}-{version}-py3-none-any.whl"
        if wheel.exists():
            continue
        files = _files(name, version)
        dist = f"{_module(name)}-{version}.dist-info"
        files[f"{dist}/RECORD"] = _record(files, dist)
        # a name of its own: instances booting at once build the same index, and a shared `.tmp` was
        # renamed away under the other writer ("No such file or directory" failed that boot)
        tmp = wheel.with_name(f"{wheel.name}.{uuid.uuid4().hex[:8]}.tmp")
        with zipfile.ZipFile(tmp, "w") as zf:
            for path, text in files.items():
                zf.writestr(path, text)
        tmp.replace(wheel)
    return index_dir


def _pip_dir() -> Path:
    import pip

    return Path(pip.__file__).resolve().parent.parent


def make_venv(venv: Path, index_dir: Path) -> Path:
    """The image's `/venv/main` with its CUDA torch family installed; returns its python."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    python = venv / "bin" / "python"
    if python.exists():
        return python  # a restart boots on the same disk: what was installed stays
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python.symlink_to(base)
    version = ".".join(str(v) for v in sys.version_info[:3])
    (venv / "pyvenv.cfg").write_text(
        f"home = {base.parent}\ninclude-system-site-packages = false\nversion = {version}\n"
    )
    site = site_packages(venv)
    site.mkdir(parents=True, exist_ok=True)
    # pip from this interpreter, nothing else from it: a venv with pip in milliseconds
    shim = venv.parent / ".pip-shim"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "pip"
    if not link.exists():
        link.symlink_to(_pip_dir() / "pip")
    (site / "_sim_pip.pth").write_text(str(shim) + "\n")
    for name, ver in IMAGE_TORCH.items():
        files = _files(name, ver)
        dist = f"{_module(name)}-{ver}.dist-info"
        files[f"{dist}/INSTALLER"] = "pip\n"
        files[f"{dist}/RECORD"] = _record(files, dist)
        for rel, text in files.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(text)
    (venv / "pip.conf").write_text(
        f"[global]\nno-index = true\nfind-links = {index_dir}\ndisable-pip-version-check = true\n"
    )
    return python


def installed_version(venv: Path, name: str) -> str | None:
    """The version of `name` installed in the venv (read from its files, as an import would see it)."""
    init = site_packages(venv) / _module(name) / "__init__.py"
    try:
        match = _VERSION_RE.search(init.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def torch_has_cuda(venv: Path) -> bool:
    version = installed_version(venv, "torch")
    return bool(version and "+cu" in version)
