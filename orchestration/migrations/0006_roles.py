"""The console's roles as groups: viewer, operator, admin (orchestration.roles).

Idempotent: it creates what is missing and sets each group's permissions. Permissions are
normally made after all migrations; they are made here first so a fresh database gets its
groups filled. ``roles_sync`` also runs after every ``migrate`` (orchestration.apps), which
adds the permissions of models that come later.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from orchestration.roles import roles_sync


def make_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_sync(
        group_model=apps.get_model("auth", "Group"),
        permission_model=apps.get_model("auth", "Permission"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0005_login_throttle_and_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("reviews", "0002_webhookdelivery"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(make_roles, migrations.RunPython.noop)]
