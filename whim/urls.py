"""Routes: the JSON API under /api/, health, the admin and the web pages."""

from django.contrib import admin
from django.urls import include, path, re_path

from orchestration import web
from orchestration.api import views as api_views
from orchestration.prometheus import metrics_view

urlpatterns = [
    path("api/worker/", include("orchestration.api.worker_urls")),
    path("w/<str:token>/api/worker/", include("orchestration.api.worker_urls")),
    path("api/", include("orchestration.api.urls")),
    # Non-capturing groups: a capture would reach not_found() as extra positional arguments.
    re_path(r"^(?:w/[^/]+/)?api(?:/.*)?$", api_views.not_found),
    path("health", api_views.health),
    path("health/ready", api_views.health_ready),
    path("metrics", metrics_view),
    path("admin/", admin.site.urls),
    path("work/new/", web.work_new, name="work-new"),
    path("work/<uuid:pk>/", web.work_detail, name="work-detail"),
]
