"""The root of comfyfleet's typed errors.

Every room raises subclasses of `ComfyfleetError`. `retryable` tells callers (tenacity predicates, the
job runner) whether trying again can help; `str(err)` is a message a user can act on and never contains
a secret (see `app.redact`).
"""

from __future__ import annotations


class ComfyfleetError(Exception):
    """Base class. `retryable` = trying the same thing again may succeed."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(ComfyfleetError):
    """The settings cannot work (missing key, bad value). Fix the configuration."""


class ValidationError(ComfyfleetError):
    """A request parameter is invalid. `field` names it, so APIs can answer 4xx naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    @property
    def problems(self) -> list[ValidationError]:
        """Every invalid field (one here; several in `ValidationErrors`)."""
        return [self]


class ValidationErrors(ValidationError):
    """Several request parameters are invalid: all of them are reported at once, not only the first."""

    def __init__(self, errors: list[ValidationError]) -> None:
        flat = [p for e in errors for p in e.problems]
        super().__init__(flat[0].field, flat[0].reason)
        self.args = ("; ".join(f"{e.field}: {e.reason}" for e in flat),)
        self.errors = flat

    @property
    def problems(self) -> list[ValidationError]:
        return list(self.errors)

    @staticmethod
    def raise_if(errors: list[ValidationError]) -> None:
        """Raise nothing, the one error, or all of them."""
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ValidationErrors(errors)
