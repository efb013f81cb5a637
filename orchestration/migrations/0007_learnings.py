# Learnings get their own rows (GET /api/learnings); the JSON copy on WorkerMetrics goes,
# its entries moved into Learning rows first.

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


def move_learnings(apps: Any, schema_editor: Any) -> None:
    """Each entry of an attempt's ``learnings`` list (a string, or an object with ``content``
    and ``spec``) becomes a Learning of its item's repo."""
    WorkerMetrics = apps.get_model("orchestration", "WorkerMetrics")
    Learning = apps.get_model("orchestration", "Learning")
    rows = WorkerMetrics.objects.exclude(learnings=[]).select_related("work_item")
    for metrics in rows.iterator():
        entries = metrics.learnings if isinstance(metrics.learnings, list) else []
        for entry in entries:
            if isinstance(entry, dict):
                content, spec = str(entry.get("content") or ""), str(entry.get("spec") or "")
            else:
                content, spec = str(entry), ""
            if content.strip():
                Learning.objects.create(
                    repo=metrics.work_item.repo,
                    spec=spec,
                    content=content,
                    work_item=metrics.work_item,
                )


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0006_roles"),
    ]

    operations = [
        migrations.CreateModel(
            name="Learning",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("repo", models.CharField(db_index=True, max_length=200)),
                ("spec", models.TextField(blank=True, default="")),
                ("content", models.TextField()),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                (
                    "work_item",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="learnings",
                        to="orchestration.workitem",
                    ),
                ),
            ],
        ),
        migrations.RunPython(move_learnings, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name="workermetrics",
            name="learnings",
        ),
    ]
