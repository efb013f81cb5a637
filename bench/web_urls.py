"""The bench's URLconf: every Whim route, plus the heartbeat benchmark's naive baseline — a
Django view that does one ``UPDATE`` of the worker's heartbeat (no token, no lock, no
transaction of its own) behind the same middleware, on the same gunicorn."""

from __future__ import annotations

from django.db.models.functions import Now
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from orchestration.models import Worker
from whim.urls import urlpatterns as whim_urlpatterns


@csrf_exempt
def naive_heartbeat(request: HttpRequest, pk: str) -> JsonResponse:
    Worker.objects.filter(pk=pk).update(last_heartbeat=Now())
    return JsonResponse({"success": True})


urlpatterns = [path("bench/naive-heartbeat/<uuid:pk>", naive_heartbeat), *whim_urlpatterns]
