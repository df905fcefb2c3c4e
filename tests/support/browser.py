"""Headless Chromium for tests: the system browser (Debian's `chromium` package) driven by Playwright.

Playwright never downloads a browser here: it launches `CHROMIUM` (/usr/bin/chromium unless
COMFYFLEET_CHROMIUM says otherwise). The browser runs as if there were no internet: every host name
except the loopback one resolves to nothing (`--host-resolver-rules`), and `Requests` records every URL
a page asks for, so a test can assert that the page loaded nothing from any other host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("COMFYFLEET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
OFFLINE_ARGS = [
    # no DNS for anything but loopback: a request to a CDN fails as it would on an offline machine
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--no-proxy-server",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def unavailable_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/setup.sh --test does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright `Browser`); skips the test when none is installed."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=OFFLINE_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Requests:
    """Every URL a page (and its workers) asked for, and those that failed."""

    def __init__(self, context) -> None:
        self.urls: list[str] = []
        self.failed: list[str] = []
        self.blocked: list[str] = []  # stopped inside the browser by the page's CSP: never sent
        context.on("request", lambda r: self.urls.append(r.url))
        context.on("requestfailed", self._failed)

    def _failed(self, request) -> None:
        failure = str(request.failure or "")
        self.failed.append(f"{request.url} ({failure})")
        if failure == "csp" or "BLOCKED_BY_CSP" in failure:
            self.blocked.append(request.url)

    def foreign(self, base_url: str) -> list[str]:
        """The requests sent to any host other than the server's (data: and blob: URLs are local;
        a request the page's Content-Security-Policy stopped never left the browser)."""
        ours = urlsplit(base_url).netloc
        return [
            u
            for u in self.urls
            if urlsplit(u).scheme not in ("data", "blob")
            and urlsplit(u).netloc != ours
            and u not in self.blocked
        ]


def distinct_colors(png: bytes) -> int:
    """How many colours a screenshot has (a blank page has one or two)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])
