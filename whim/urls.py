"""Routes: the JSON API under /api/, health, the admin and the web pages."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from orchestration import accounts, web, web_cost, web_nodes
from orchestration.api import learnings as api_learnings
from orchestration.api import views as api_views
from orchestration.prometheus import metrics_view
from reviews import views as reviews_views

# Both login pages are throttled (orchestration.accounts).
admin.site.login_form = accounts.AdminLoginForm

urlpatterns = [
    path("api/worker/", include("orchestration.api.worker_urls")),
    path("w/<str:token>/api/worker/", include("orchestration.api.worker_urls")),
    # The one read a worker makes through its callback base (API.md "Learnings").
    path("w/<str:token>/api/learnings", api_learnings.learnings),
    path("api/", include("orchestration.api.urls")),
    # Non-capturing groups: a capture would reach not_found() as extra positional arguments.
    re_path(r"^(?:w/[^/]+/)?api(?:/.*)?$", api_views.not_found),
    path("webhooks/github", reviews_views.github_webhook),
    re_path(r"^webhooks(?:/.*)?$", api_views.not_found),
    path("health", api_views.health),
    path("health/ready", api_views.health_ready),
    path("metrics", metrics_view),
    path("admin/", admin.site.urls),
    path("accounts/login/", accounts.ConsoleLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The operator's console (orchestration/web.py): login required, CSRF on every POST.
    path("", web.dashboard_page, name="home"),
    path("dashboard/", web.dashboard_page, name="dashboard"),
    path("work/new/", web.work_new, name="work-new"),
    path("work/new/branch-preview/", web.branch_preview, name="work-branch-preview"),
    path("work/<uuid:pk>/", web.work_detail, name="work-detail"),
    path("work/<uuid:pk>/log/", web.work_log, name="work-log"),
    path("work/<uuid:pk>/cancel/", web.work_cancel, name="work-cancel"),
    path("work/<uuid:pk>/requeue/", web.work_requeue, name="work-requeue"),
    path("work/<uuid:pk>/continue/", web_cost.work_continue, name="work-continue"),
    path("queue/", web.queue_page, name="queue"),
    path("queue/bulk/", web.queue_bulk, name="queue-bulk"),
    path("workers/", web.workers_page, name="workers"),
    path("workers/<uuid:pk>/kill/", web.worker_kill_view, name="worker-kill"),
    path("locks/", web.locks_page, name="locks"),
    path("nodes/", web_nodes.nodes_page, name="nodes"),
    path("nodes/<str:name>/drain/", web_nodes.node_action, {"verb": "drain"}, name="node-drain"),
    path("nodes/<str:name>/resume/", web_nodes.node_action, {"verb": "resume"}, name="node-resume"),
]
