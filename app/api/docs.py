"""ReDoc at /redoc, offline: its script comes from the package (fastapi-offline's static files), and the
page's Content-Security-Policy keeps it from fetching anything elsewhere (ReDoc's footer draws its logo
from a CDN; without a network that is one broken image, with one it is a request we do not want)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

STATIC_URL = "/static-offline-docs"  # where FastAPIOffline mounts Swagger UI's and ReDoc's assets
REDOC_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def mount_redoc(app: FastAPI, url: str = "/redoc") -> None:
    @app.get(url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
        return HTMLResponse(page.body, headers={"Content-Security-Policy": REDOC_CSP})
