from django.urls import path

from conversations.consumers import AgentConsumer, ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
]
