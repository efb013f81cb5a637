"""The client REST API's routes (API.md), mounted at /api/."""

from django.urls import path

from orchestration.api import docs, learnings, nodes, views

urlpatterns = [
    path("openapi.json", docs.openapi_json),
    path("docs", docs.docs_page),
    path("work", views.work_submit),
    path("work/<str:pk>", views.work_detail),
    path("work/<str:pk>/cancel", views.work_cancel),
    path("work/<str:pk>/requeue", views.work_requeue),
    path("work/<str:pk>/continue", views.work_continue),
    path("work/<str:pk>/verification", views.work_verification),
    path("queue", views.queue),
    path("status", views.status),
    path("workers", views.workers_list),
    path("workers/<str:pk>/kill", views.worker_kill),
    path("workers/<str:pk>/logs", views.worker_logs),
    path("metrics", views.metrics),
    path("nodes", nodes.nodes_list),
    path("nodes/<str:name>/drain", nodes.node_drain),
    path("nodes/<str:name>/resume", nodes.node_resume),
    path("learnings", learnings.learnings),
    path("reviews", views.reviews_list),
    path("reviews/work-item/<str:pk>", views.reviews_for_item),
    path("reviews/pr/<int:number>", views.reviews_for_pr),
]
