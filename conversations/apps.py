from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from . import login_throttle  # noqa: F401 - connects the failed-login signal receivers
