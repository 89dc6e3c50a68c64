from typing import Any

from django.contrib import admin

from .models import BotSettings, CannedReply, Conversation, Correction, Customer, Feedback, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "text", "status", "created_at", "token_count", "model_name"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["id", "display_name", "created_at"]
    search_fields = ["id", "display_name"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "status", "reviewed", "created_at", "updated_at"]
    list_filter = ["status", "reviewed", "exclude_from_training", "created_at"]
    search_fields = ["id", "messages__text"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "short_text", "token_count", "model_name", "created_at"]
    list_filter = ["role", "status", "model_name"]
    search_fields = ["text"]
    raw_id_fields = ["conversation", "author", "model_version"]

    @admin.display(description="text")
    def short_text(self, message: Message) -> str:
        return message.text[:80]


admin.site.register(Feedback)
admin.site.register(Correction)


@admin.register(BotSettings)
class BotSettingsAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: object) -> bool:
        return not BotSettings.objects.exists()


@admin.register(CannedReply)
class CannedReplyAdmin(admin.ModelAdmin):
    list_display = ["shortcut", "short_text", "created_by", "updated_at"]
    search_fields = ["shortcut", "text"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    @admin.display(description="text")
    def short_text(self, reply: CannedReply) -> str:
        return reply.text[:80]

    def save_model(self, request: Any, obj: CannedReply, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
