"""The team inbox: views, order, counts, unread per agent, the live row, bulk actions and the
export of an empty selection."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from conversations.chat import services as chat_services
from conversations.models import Conversation, ConversationRead, Customer
from conversations.workspace import services
from tests.capture import CaptureEvents
from tests.sockets import open_agent, open_chat, receive_until

from .conftest import add_messages, user_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def started(name: str, *, minutes_ago: int, **fields: Any) -> Conversation:
    """A conversation whose last activity was ``minutes_ago``, with one customer message then."""
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name=name), **fields)
    moment = timezone.now() - timedelta(minutes=minutes_ago)
    add_messages(conversation, ("customer", f"from {name}"), created_at=moment)
    Conversation.objects.filter(id=conversation.id).update(created_at=moment, last_activity_at=moment)
    return conversation


def waiting(name: str, *, minutes_ago: int) -> Conversation:
    conversation = started(name, minutes_ago=minutes_ago)
    moment = timezone.now() - timedelta(minutes=minutes_ago)
    Conversation.objects.filter(id=conversation.id).update(status="waiting", waiting_since=moment)
    return conversation


def listed(client: Client, query: str = "") -> list[str]:
    response = client.get("/agent/" + (f"?{query}" if query else ""))
    assert response.status_code == 200
    return [str(c.customer) for c in response.context["page"]]


def test_waiting_comes_first_longest_wait_first_then_last_activity(agent_client: Client) -> None:
    started("old", minutes_ago=60)
    started("recent", minutes_ago=1)
    waiting("waited-a-bit", minutes_ago=2)
    waiting("waited-long", minutes_ago=30)
    assert listed(agent_client) == ["waited-long", "waited-a-bit", "recent", "old"]


def test_a_customer_writing_again_moves_an_old_conversation_up(agent_client: Client) -> None:
    old = started("old", minutes_ago=600)
    started("recent", minutes_ago=1)
    assert listed(agent_client) == ["recent", "old"]
    chat_services.message_send(conversation=old, text="Me again")
    assert listed(agent_client) == ["old", "recent"]


def test_each_view_holds_its_conversations(agent_client: Client, agent_user: User, second_agent: User) -> None:
    started("mine", minutes_ago=5, assignee=agent_user)
    started("elis", minutes_ago=4, assignee=second_agent)
    started("nobodys", minutes_ago=3)
    started("closed", minutes_ago=2, status="closed")
    waiting("waits", minutes_ago=1)
    assert listed(agent_client, "view=mine") == ["mine"]
    assert listed(agent_client, "view=unassigned") == ["waits", "nobodys"]
    assert listed(agent_client, "view=waiting") == ["waits"]
    assert listed(agent_client, "view=all") == ["waits", "closed", "nobodys", "elis", "mine"]
    assert listed(agent_client, "view=bogus") == listed(agent_client, "view=all")  # never an error page
    assert listed(agent_client, "view=unassigned&status=bot") == ["nobodys"]  # filters inside a view
    assert listed(user_client(second_agent), "view=mine") == ["elis"]


def test_counts_per_view_and_unread_per_agent(agent_client: Client, agent_user: User, second_agent: User) -> None:
    mine = started("mine", minutes_ago=5, assignee=agent_user)
    started("nobodys", minutes_ago=3)
    waiting("waits", minutes_ago=1)
    counts = agent_client.get("/agent/inbox/counts").json()
    assert counts["views"] == {
        "mine": {"count": 1, "unread": 1},
        "unassigned": {"count": 2, "unread": 2},
        "waiting": {"count": 1, "unread": 1},
        "all": {"count": 3, "unread": 3},
    }
    assert counts["title_count"] == 1 + 1  # my unread + those waiting
    chat_services.message_send(conversation=mine, text="Are you there?")
    assert agent_client.get("/agent/inbox/counts").json()["views"]["mine"] == {"count": 1, "unread": 2}
    services.conversation_read(conversation=mine, user=agent_user)
    assert agent_client.get("/agent/inbox/counts").json()["views"]["mine"] == {"count": 1, "unread": 0}
    # Eli has read nothing: his counts are his own.
    assert user_client(second_agent).get("/agent/inbox/counts").json()["views"]["all"]["unread"] == 4


def test_the_tabs_count_no_unread_in_closed_conversations(agent_client: Client, agent_user: User) -> None:
    started("closed", minutes_ago=5, assignee=agent_user, status="closed")
    started("open", minutes_ago=4, assignee=agent_user)
    assert agent_client.get("/agent/inbox/counts").json()["views"]["mine"] == {"count": 2, "unread": 1}
    page = agent_client.get("/agent/?view=mine").context["page"]
    assert sorted(c.unread for c in page) == [1, 1]  # each row still says what is unread in it


def test_unread_counts_rise_and_clear_per_conversation(agent_client: Client, agent_user: User) -> None:
    conversation = started("alice", minutes_ago=5)
    add_messages(conversation, ("bot", "Hello"), ("customer", "hi"), ("system", "Dana joined."))

    def unread() -> int:
        page = agent_client.get("/agent/").context["page"]
        return next(c.unread for c in page if c.id == conversation.id)

    assert unread() == 2  # the customer's two; never the bot's, nor the system lines
    services.conversation_read(conversation=conversation, user=agent_user)
    assert unread() == 0
    chat_services.message_send(conversation=conversation, text="one more")
    assert unread() == 1
    assert ConversationRead.objects.filter(user=agent_user, conversation=conversation).count() == 1


def test_the_counts_endpoint_says_what_the_page_shows(agent_client: Client, agent_user: User) -> None:
    for i in range(3):
        started(f"c{i}", minutes_ago=i + 1, assignee=agent_user if i else None)
    answer = agent_client.get("/agent/inbox/counts?view=mine&status=bot").json()
    assert answer["shown"] == {"count": 2, "pages": 1}


def test_the_inbox_page_has_tabs_counts_and_says_what_an_empty_selection_exports(
    agent_client: Client, agent_user: User
) -> None:
    started("mine", minutes_ago=5, assignee=agent_user)
    started("nobodys", minutes_ago=3)
    html = agent_client.get("/agent/?view=unassigned").content.decode()
    assert 'id="tab-mine"' in html and 'id="tab-unassigned"' in html and 'aria-current="page"' in html
    assert "Nothing selected: exports the 1 conversation this view shows" in html
    assert '<input type="hidden" name="view" value="unassigned">' in html  # the export form carries the view


def test_the_inbox_reads_in_a_fixed_number_of_queries(
    agent_client: Client, agent_user: User, django_assert_max_num_queries: Any
) -> None:
    for i in range(3):
        started(f"c{i}", minutes_ago=i, assignee=agent_user)
    with django_assert_max_num_queries(40) as few:
        agent_client.get("/agent/")
    for i in range(3, 20):
        started(f"c{i}", minutes_ago=i, assignee=agent_user)
    with django_assert_max_num_queries(len(few.captured_queries)):  # no query per row
        agent_client.get("/agent/")


def test_the_inbox_row_carries_what_a_live_row_needs(conversation: Conversation, capture_events: CaptureEvents) -> None:
    add_messages(conversation, ("customer", "first"), ("bot", "answer"), ("system", "a line"))
    with capture_events() as sent:
        chat_services.message_send(conversation=conversation, text="second")
    row = next(f for f in sent.to_agents() if f["type"] == "inbox")["conversation"]
    conversation.refresh_from_db()
    assert row["message_count"] == 4  # first, answer, second, and the pending reply; no system line
    assert row["customer_message_count"] == 2
    assert row["last_activity_at"] == conversation.last_activity_at.isoformat()
    assert row["waiting_since"] is None and row["assignee_id"] is None
    assert row["last_customer_at"] is not None


# Export: an empty selection is what the view and its filters show, in the same order.


def exported_ids(client: Client, query: str) -> list[str]:
    response = client.get("/agent/export.jsonl?" + query)
    assert response.status_code == 200
    return [json.loads(line)["id"] for line in b"".join(response.streaming_content).decode().splitlines()]


def test_an_empty_selection_exports_exactly_the_filtered_view(
    agent_client: Client, agent_user: User, settings: Any
) -> None:
    settings.AGENT_INBOX_PAGE_SIZE = 100
    started("mine", minutes_ago=5, assignee=agent_user)
    started("mine-too", minutes_ago=4, assignee=agent_user, status="closed")
    started("nobodys", minutes_ago=3)
    waiting("waits", minutes_ago=1)
    for query in ("view=mine", "view=mine&status=closed", "view=unassigned", "view=waiting", "view=all", ""):
        page = agent_client.get("/agent/?" + query).context["page"]
        assert exported_ids(agent_client, query) == [str(c.id) for c in page], query
    chosen = listed(agent_client)  # a selection exports only what is ticked
    ids = [str(c.id) for c in Conversation.objects.filter(customer__display_name="nobodys")]
    assert exported_ids(agent_client, f"view=mine&id={ids[0]}") == ids and len(chosen) == 4


# Bulk actions.


def bulk(client: Client, action: str, *conversations: Conversation, **extra: str) -> Any:
    return client.post("/agent/bulk", {"id": [str(c.id) for c in conversations], "action": action, **extra})


def test_bulk_close_skips_what_another_agent_holds_and_says_why(
    agent_client: Client, agent_user: User, second_agent: User
) -> None:
    free, held = started("free", minutes_ago=2), started("held", minutes_ago=1)
    services.conversation_takeover(conversation=held, agent=second_agent)
    answer = bulk(agent_client, "close", free, held).json()
    assert answer["ok"] and answer["done"] == [str(free.id)]
    assert answer["skipped"] == [{"id": str(held.id), "customer": "held", "reason": "Eli holds this conversation."}]
    assert Conversation.objects.get(id=free.id).status == "closed"
    assert Conversation.objects.get(id=held.id).status == "agent"


def test_bulk_tag_reviewed_and_exclude(agent_client: Client) -> None:
    a, b = started("a", minutes_ago=2, tags=["vip"]), started("b", minutes_ago=1)
    assert bulk(agent_client, "tag", a, b, tag="refund").json()["done"] == sorted([str(a.id), str(b.id)])
    assert Conversation.objects.get(id=a.id).tags == ["vip", "refund"]
    assert Conversation.objects.get(id=b.id).tags == ["refund"]
    bulk(agent_client, "reviewed", a, b)
    bulk(agent_client, "exclude", a)
    assert list(
        Conversation.objects.order_by("customer__display_name").values_list("reviewed", "exclude_from_training")
    ) == [
        (True, True),
        (True, False),
    ]


def test_bulk_assign_goes_through_the_assignment_service(
    agent_client: Client, agent_user: User, second_agent: User
) -> None:
    free, held = started("free", minutes_ago=2), started("held", minutes_ago=1)
    services.conversation_takeover(conversation=held, agent=second_agent)
    answer = bulk(agent_client, "assign", free, held, assignee=str(agent_user.id)).json()
    assert answer["done"] == [str(free.id)] and answer["skipped"][0]["reason"] == "Eli holds this conversation."
    assert Conversation.objects.get(id=free.id).assignee_id == agent_user.id
    assert Conversation.objects.get(id=held.id).assignee_id == second_agent.id
    assert free.events.filter(kind="assigned", actor=agent_user, assignee=agent_user).exists()
    refused = bulk(agent_client, "assign", free, assignee="nobody")
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_assignee")


def test_bulk_refuses_what_makes_no_sense(agent_client: Client) -> None:
    a = started("a", minutes_ago=1)
    for answer, code in [
        (bulk(agent_client, "close"), "nothing_selected"),
        (bulk(agent_client, "explode", a), "invalid_action"),
        (bulk(agent_client, "tag", a, tag=""), "invalid_tags"),
        (agent_client.post("/agent/bulk", {"id": "not-a-uuid", "action": "close"}), "invalid_id"),
    ]:
        assert (answer.status_code, answer.json()["code"]) == (400, code)
    assert Conversation.objects.get(id=a.id).status == "bot"


def test_bulk_is_for_agents(plain_user: User) -> None:
    a = started("a", minutes_ago=1)
    assert bulk(Client(), "close", a).status_code == 302
    assert bulk(user_client(plain_user), "close", a).status_code == 403
    assert user_client(plain_user).get("/agent/inbox/counts").status_code == 403
    assert Client().get("/agent/inbox/counts")["Location"].startswith("/accounts/login/")
    assert Conversation.objects.get(id=a.id).status == "bot"


async def drain(socket: Any) -> list[dict[str, Any]]:
    """Every frame the socket receives until it has been quiet for 0.5 s."""
    frames = []
    while not await socket.receive_nothing(timeout=0.5):
        frames.append(await socket.receive_json_from())
    return frames


# Read marks over the socket: watching reads, the clear reaches my other tabs, not Eli's.


@pytest.mark.django_db(transaction=True)
async def test_watching_marks_read_for_me_on_all_my_tabs_only(
    customer: Customer, agent_user: User, second_agent: User
) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    tab1, tab2, eli = await open_agent(agent_user), await open_agent(agent_user), await open_agent(second_agent)
    await tab1.send_json_to({"type": "watch", "conversation_id": conversation_id})
    for tab in (tab1, tab2):
        read = (await receive_until(tab, "read"))[-1]
        assert read["conversation_id"] == conversation_id and read["unread"] == 0
    await chat.send_json_to({"type": "message", "text": "hello", "client_id": "r1"})
    await receive_until(eli, lambda f: f["type"] == "inbox" and f["conversation"]["customer_message_count"] == 1)
    await tab1.send_json_to({"type": "read", "conversation_id": conversation_id})  # the page showed it
    await receive_until(tab2, "read")
    assert "read" not in [f["type"] for f in await drain(eli)]  # Eli has read nothing
    assert not {"read", "inbox", "activity"} & {f["type"] for f in await drain(chat)}
    for socket in (chat, tab1, tab2, eli):
        await socket.disconnect()
