"""Why the pool could not give a job an instance. Each has a `kind` the job record keeps
(`app.jobs.errors.classify` reads it), so a program can branch on it and a person can act on the message."""

from __future__ import annotations

from app.errors import ComfyfleetError


class NoCapacity(ComfyfleetError):
    """No instance can be had: the provider cannot rent, or renting would break the spend cap."""

    kind = "no_capacity"


class SpendCapReached(NoCapacity):
    kind = "spend_cap"


class InstanceGone(ComfyfleetError):
    """The instance the job was on no longer exists; running again elsewhere may work."""

    kind = "instance_lost"
    retryable = True


class RentFailed(ComfyfleetError):
    kind = "rent_failed"
    retryable = True
