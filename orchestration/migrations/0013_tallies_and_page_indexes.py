
"""Tallies kept by triggers, and the indexes the pages read at a million items (issue 12)."""

from decimal import Decimal
from typing import Any

from django.db import migrations, models

from orchestration import tally_sql


def _run(sql: str) -> Any:
    """PostgreSQL only: the embedded SQLite counts its (small) tables directly."""

    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('orchestration', '0012_worker_active_node'),
    ]

    operations = [
        migrations.CreateModel(
            name='FinishedTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('bucket', models.DateTimeField()),
                ('type', models.CharField(max_length=20)),
                ('status', models.CharField(max_length=20)),
                ('n', models.BigIntegerField()),
                ('took_us', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='ItemTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('repo', models.CharField(max_length=200)),
                ('type', models.CharField(max_length=20)),
                ('status', models.CharField(max_length=20)),
                ('priority', models.CharField(max_length=10)),
                ('verdict', models.BooleanField(null=True)),
                ('n', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='MetricsTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('n', models.BigIntegerField()),
                ('tokens_in', models.BigIntegerField()),
                ('tokens_out', models.BigIntegerField()),
                ('reported_usd', models.DecimalField(decimal_places=6, default=Decimal('0'), max_digits=20)),
                ('unpriced_in', models.BigIntegerField()),
                ('unpriced_out', models.BigIntegerField()),
            ],
            options={
                'verbose_name_plural': 'metrics tallies',
            },
        ),
        migrations.CreateModel(
            name='QueueFlowTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('bucket', models.DateTimeField()),
                ('entered', models.BigIntegerField()),
                ('exited', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='WorkerTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(max_length=20)),
                ('n', models.BigIntegerField()),
            ],
        ),
        migrations.AddIndex(
            model_name='workitem',
            index=models.Index(condition=models.Q(('status__in', ['generating', 'queued', 'assigned', 'in_progress', 'paused'])), fields=['created_at', 'id'], name='workitem_unfinished'),
        ),
        migrations.AddIndex(
            model_name='workitem',
            index=models.Index(condition=models.Q(('completed_at__isnull', False)), fields=['completed_at'], include=('status', 'type', 'created_at'), name='workitem_completed'),
        ),
        migrations.AddIndex(
            model_name='finishedtally',
            index=models.Index(fields=['bucket'], name='finishedtally_bucket'),
        ),
        migrations.AddIndex(
            model_name='itemtally',
            index=models.Index(fields=['repo'], name='itemtally_repo'),
        ),
        migrations.AddIndex(
            model_name='queueflowtally',
            index=models.Index(fields=['bucket'], name='queueflowtally_bucket'),
        ),
        # The triggers that keep the tallies, and their first count (orchestration.tally_sql).
    migrations.RunPython(_run(tally_sql.INSTALL), _run(tally_sql.UNINSTALL)),
]
