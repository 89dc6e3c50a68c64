from django.urls import path

from conversations.chat.consumers import ChatConsumer
from conversations.workspace.consumers import AgentConsumer
from finetuning.consumers import TrainingRunConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
    path("ws/training/runs/<int:run_id>/", TrainingRunConsumer.as_asgi()),
]
