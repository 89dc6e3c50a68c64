from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("finetuning", "0003_serve_error_and_one_active"),
    ]

    operations = [
        migrations.CreateModel(
            name="LoopLock",
            fields=[("name", models.CharField(max_length=32, primary_key=True, serialize=False))],
        ),
    ]
