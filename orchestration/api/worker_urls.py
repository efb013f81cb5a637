"""The worker callback routes (API.md): /w/<token>/… and the bearer-token /api/worker/… forms."""

from django.urls import path

from orchestration.api import worker_views as views

urlpatterns = [
    path("register", views.register),
    path("<str:pk>/heartbeat", views.heartbeat),
    path("<str:pk>/lock", views.lock),
    path("<str:pk>/unlock", views.unlock),
    path("<str:pk>/complete", views.complete),
    path("<str:pk>/fail", views.fail),
    path("<str:pk>/stuck", views.stuck),
]
