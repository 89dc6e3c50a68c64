from django.contrib import admin

from .models import DatasetSnapshot, ModelVersion, Promotion, RedactionPattern, TrainingRun, TrainingSettings


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "base_model", "created_at", "promoted_at"]
    list_filter = ["status"]
    readonly_fields = ["trained_on_erased_data"]


@admin.register(TrainingSettings)
class TrainingSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "allow_customer_feedback_alone",
        "max_examples_per_customer",
        "heldout_fraction",
        "redact_conversations_after_days",
    ]


@admin.register(RedactionPattern)
class RedactionPatternAdmin(admin.ModelAdmin):
    list_display = ["name", "pattern", "replacement", "enabled"]
    list_editable = ["enabled"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "phase", "step", "total_steps", "version", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["loss_history", "lease_owner", "lease_expires_at", "attempts"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "content_hash", "created_at"]


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "version", "actor", "created_at"]
