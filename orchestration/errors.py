"""Domain errors. Each maps to one of API.md's error codes at the edge."""

from __future__ import annotations

from typing import Any


class WhimError(Exception):
    """Base of the errors a service raises on purpose; ``code`` is API.md's."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(WhimError):
    code = "VALIDATION_ERROR"
    status = 400


class NotFound(WhimError):
    code = "NOT_FOUND"
    status = 404


class InvalidState(WhimError):
    """A client asked for a transition the row's status does not allow."""

    code = "INVALID_STATE"
    status = 400


class Fenced(InvalidState):
    """A worker that is no longer the active attempt tried to change state."""

    status = 409


class InvalidType(WhimError):
    """The route does not apply to this kind of work item (the original Whim's code)."""

    code = "INVALID_TYPE"
    status = 400


class QueueFull(WhimError):
    code = "QUEUE_FULL"
    status = 429


class Unavailable(WhimError):
    """Something Whim must ask (a repository, GitHub) cannot answer now: try again."""

    code = "SERVICE_UNAVAILABLE"
    status = 503
