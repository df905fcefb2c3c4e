"""The client's typed errors: what the server answered, with the field it named, in a message a person
can act on (never the token)."""

from __future__ import annotations

from typing import Any

from app.errors import ComfyfleetError


class ClientError(ComfyfleetError):
    """Talking to a comfyfleet server failed."""


class ServerUnreachable(ClientError):
    """No answer (connection refused, DNS, timeout). Check --server / COMFYFLEET_SERVER."""

    retryable = True


class ApiError(ClientError):
    """The server answered with an error status; `errors` lists `{"field", "message"}` of input errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}", retryable=status >= 500)
        self.status, self.detail, self.errors = status, detail, list(errors or [])

    @property
    def fields(self) -> list[str]:
        return [str(e.get("field")) for e in self.errors]


class Unauthorized(ApiError):
    """Missing or wrong token: pass --token or set COMFYFLEET_TOKEN."""


class NotFound(ApiError):
    """No such job, story, batch or instance."""


class InvalidRequest(ApiError):
    """The server refused the request's input (422/413); `errors` names the fields."""


class Conflict(ApiError):
    """The server cannot do that now (409), e.g. refetch on a busy instance."""


def error_for(status: int, body: Any) -> ApiError:
    detail = ""
    errors: list[dict[str, Any]] = []
    if isinstance(body, dict):
        detail = str(body.get("detail") or "")
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    detail = detail or f"the server answered {status}"
    kind = {
        401: Unauthorized,
        403: Unauthorized,
        404: NotFound,
        409: Conflict,
        413: InvalidRequest,
        422: InvalidRequest,
    }
    return kind.get(status, ApiError)(status, detail, errors)
