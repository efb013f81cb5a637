"""Template context every console page gets."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from orchestration import registry
from orchestration.roles import user_role


def runtime(request: HttpRequest) -> dict[str, Any]:
    """The container runtime in use, so every page can say when agents are not isolated."""
    return {"whim_runtime": registry.runtime().info()}


def role(request: HttpRequest) -> dict[str, Any]:
    """The user's role (viewer, operator, admin), shown in the header; read only when shown."""
    return {"whim_role": SimpleLazyObject(lambda: user_role(request.user))}
