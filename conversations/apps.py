from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from . import login_throttle  # noqa: F401 - connects the failed-login signal receivers
        from .workspace import services  # noqa: F401 - connects auto-assignment of handoffs (INBOX_AUTO_ASSIGN)
