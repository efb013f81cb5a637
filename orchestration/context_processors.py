"""Template context every console page gets."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from orchestration import registry


def runtime(request: HttpRequest) -> dict[str, Any]:
    """The container runtime in use, so every page can say when agents are not isolated."""
    return {"whim_runtime": registry.runtime().info()}
