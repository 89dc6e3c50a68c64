from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from conversations.models import Customer, Message

pytestmark = pytest.mark.django_db


def test_the_chat_page_gives_a_new_visitor_a_customer_identity(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b'id="messages"' in response.content
    customer_id = client.session["customer_id"]
    assert Customer.objects.filter(id=customer_id).exists()
    client.get("/")
    assert client.session["customer_id"] == customer_id and Customer.objects.count() == 1


def test_healthz_reports_whether_a_worker_is_online(client: Client, clean_redis: Any) -> None:
    assert client.get("/healthz").json()["worker_online"] is False  # every field: tests/test_health.py


@pytest.mark.parametrize("model", ["customer", "conversation", "message"])
def test_the_admin_lists_customers_conversations_and_messages(client: Client, conversation: Any, model: str) -> None:
    Message.objects.create(conversation=conversation, role="customer", text="hello from the admin test")
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    response = client.get(f"/admin/conversations/{model}/")
    assert response.status_code == 200
    if model == "message":
        assert b"hello from the admin test" in response.content


def test_the_admin_is_closed_to_anonymous_visitors(client: Client) -> None:
    assert client.get("/admin/conversations/message/").status_code == 302
