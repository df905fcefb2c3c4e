"""HTTP access to the local store, so its URLs work in a browser and video players can seek (Range).

Unauthenticated on purpose: result keys are content hashes (unguessable), and URLs handed to users
must open without a bearer token, like an R2 public bucket. Keys are validated and resolved inside the
store root; anything else is a plain 404 (no hint whether a traversal target exists).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from app.store.base import InvalidKey
from app.store.local import LocalStore


def local_files_router(store: LocalStore) -> APIRouter:
    """Routes `GET/HEAD <store.files_prefix>/{key:path}`; mount with `app.include_router(...)`."""
    router = APIRouter(tags=["files"])

    @router.api_route(store.files_prefix + "/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_file(key: str) -> FileResponse:
        try:
            path = store.path_for(key)
        except InvalidKey:
            raise HTTPException(status_code=404, detail="not found") from None
        obj = await store.head(key)
        if obj is None:
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(
            path,
            media_type=obj.content_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    return router
