"""The ``agents`` group, and on PostgreSQL a full-text index over message text for the inbox search."""

from django.db import migrations

INDEX = "conversations_message_text_fts"


def create_agents_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="agents")


def create_search_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON conversations_message "
            # The expression Django's SearchVector("text", config="english") generates, so the
            # inbox search (selectors.messages_matching) can use the index.
            "USING gin (to_tsvector('english'::regconfig, COALESCE(text, '')))"
        )


def drop_search_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_agents_group, migrations.RunPython.noop),
        migrations.RunPython(create_search_index, drop_search_index),
    ]
