"""/ws/chat/ with a widget token: the token is the customer, with the session's guarantees: only
their own conversations, and a forged, revoked or erased token gets nothing (4401)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing

from chatbot.asgi import application
from conversations import erasure
from conversations.models import Conversation, Customer, WidgetSite
from conversations.widget import services
from tests.sockets import ORIGIN, customer_session, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]

FIREFOX = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


@database_sync_to_async
def widget_customer(site: WidgetSite, name: str = "") -> tuple[Customer, str, Conversation]:
    customer = Customer.objects.create(site=site, display_name=name)
    return customer, services.customer_token(customer=customer), Conversation.objects.create(customer=customer)


def token_socket(query: str, *, cookie: str = "", origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000"), (b"user-agent", FIREFOX)]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, f"/ws/chat/?{query}", headers=headers)


async def refused_with(query: str, **kwargs: Any) -> int:
    socket = token_socket(query, **kwargs)
    connected, code = await socket.connect()
    assert not connected
    return int(code)


@pytest.fixture
def site(db: Any) -> WidgetSite:
    return WidgetSite.objects.create(name="Shop", allowed_origins=["https://shop.example.com"])


async def test_a_token_opens_its_customers_conversation(site: WidgetSite) -> None:
    customer, token, conversation = await widget_customer(site)
    socket = token_socket(f"token={quote(token)}")
    connected, code = await socket.connect()
    assert connected, code
    history = await socket.receive_json_from(timeout=5)
    assert history["conversation"]["id"] == str(conversation.id)
    assert history["customer"] == {"name": "", "email": ""}
    await socket.disconnect()


async def test_a_token_cannot_open_another_customers_conversation(site: WidgetSite) -> None:
    _, token_a, _ = await widget_customer(site)
    _, _, conversation_b = await widget_customer(site)
    assert await refused_with(f"token={quote(token_a)}&conversation={conversation_b.id}") == 4404


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # a bad signature
        lambda token: "",  # an empty token
        lambda token: "nonsense",
        lambda token: signing.dumps({"c": "x", "s": 1, "n": "y"}, salt="another-salt"),
    ],
    ids=["tampered", "empty", "nonsense", "other-salt"],
)
async def test_a_forged_token_is_refused_even_with_a_valid_session(site: WidgetSite, customer: Any, forge: Any) -> None:
    _, token, _ = await widget_customer(site)
    cookie = await customer_session(customer)  # a real session: the bad token must not fall back to it
    assert await refused_with(f"token={quote(forge(token))}", cookie=cookie) == 4401


async def test_a_token_naming_another_customer_with_our_key_but_a_wrong_nonce_is_refused(site: WidgetSite) -> None:
    customer, _, _ = await widget_customer(site)
    guess = signing.dumps({"c": str(customer.id), "s": site.id, "n": "0" * 32}, salt=services.TOKEN_SALT)
    assert await refused_with(f"token={quote(guess)}") == 4401


async def test_a_revoked_token_is_refused(site: WidgetSite) -> None:
    customer, token, _ = await widget_customer(site)
    await database_sync_to_async(services.customer_tokens_revoke)(customer_id=customer.id)
    assert await refused_with(f"token={quote(token)}") == 4401
    fresh = await database_sync_to_async(Customer.objects.get)(id=customer.id)
    socket = token_socket(f"token={quote(services.customer_token(customer=fresh))}")
    assert (await socket.connect())[0]
    await socket.disconnect()


async def test_an_erased_customers_token_is_refused(site: WidgetSite) -> None:
    customer, token, _ = await widget_customer(site, name="Ann")
    await database_sync_to_async(erasure.customer_erase)(customer_id=customer.id)
    assert await refused_with(f"token={quote(token)}") == 4401


async def test_a_token_of_a_deleted_site_is_refused(site: WidgetSite) -> None:
    _, token, _ = await widget_customer(site)
    await database_sync_to_async(site.delete)()
    assert await refused_with(f"token={quote(token)}") == 4401


async def test_a_token_from_a_foreign_origin_is_refused(site: WidgetSite) -> None:
    """The socket is opened by the frame (our origin); a host page cannot open it itself."""
    _, token, _ = await widget_customer(site)
    socket = token_socket(f"token={quote(token)}", origin=b"https://shop.example.com")
    assert not (await socket.connect())[0]


async def test_it_stores_the_page_and_browser_the_customer_chats_from(site: WidgetSite) -> None:
    _, token, conversation = await widget_customer(site)
    page = "https://shop.example.com/cart?item=3"
    socket = token_socket(f"token={quote(token)}&page={quote(page)}")
    assert (await socket.connect())[0]
    history = await socket.receive_json_from(timeout=5)
    assert "origin" not in history["conversation"]  # the customer's own frames never carry it
    await socket.send_json_to({"type": "new_conversation"})
    started = await receive_until(socket, "history")
    await socket.disconnect()
    for conversation_id in (conversation.id, started[-1]["conversation"]["id"]):
        stored = await database_sync_to_async(Conversation.objects.get)(id=conversation_id)
        assert (stored.page_url, stored.user_agent) == (page, FIREFOX.decode())


NOT_PAGES = ["javascript:alert(1)", "data:text/html,x", "/relative", "https://x.example/" + "a" * 2000]


@pytest.mark.parametrize("page", NOT_PAGES)
async def test_it_keeps_no_page_url_that_is_not_a_short_http_url(site: WidgetSite, page: str) -> None:
    _, token, conversation = await widget_customer(site)
    socket = token_socket(f"token={quote(token)}&page={quote(page)}")
    assert (await socket.connect())[0]
    await socket.disconnect()
    stored = await database_sync_to_async(Conversation.objects.get)(id=conversation.id)
    assert stored.page_url == ""


async def test_the_profile_frame_stores_name_and_email(site: WidgetSite) -> None:
    customer, token, conversation = await widget_customer(site)
    socket = token_socket(f"token={quote(token)}")
    assert (await socket.connect())[0]
    await socket.receive_json_from(timeout=5)
    await socket.send_json_to({"type": "profile", "name": " Ann ", "email": "ann@example.com"})
    assert await socket.receive_json_from(timeout=5) == {
        "type": "profile",
        "customer": {"name": "Ann", "email": "ann@example.com"},
    }
    await socket.send_json_to({"type": "profile", "name": "Ann", "email": "not-an-email"})
    error = await socket.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "invalid_email")
    await socket.send_json_to({"type": "profile", "name": "A" * 121, "email": ""})
    assert (await socket.receive_json_from(timeout=5))["code"] == "invalid_name"
    await socket.disconnect()
    again = token_socket(f"token={quote(token)}")
    assert (await again.connect())[0]
    assert (await again.receive_json_from(timeout=5))["customer"] == {"name": "Ann", "email": "ann@example.com"}
    await again.disconnect()


async def test_the_page_at_slash_still_uses_its_session(customer: Any) -> None:
    socket = token_socket("", cookie=await customer_session(customer))
    connected, code = await socket.connect()
    assert connected, code
    await socket.disconnect()


async def test_revoking_closes_the_customers_open_widget_sockets_and_nobody_elses(
    site: WidgetSite, customer: Any
) -> None:
    victim, token, _ = await widget_customer(site)
    bystander, other_token, _ = await widget_customer(site)
    sockets = [token_socket(f"token={quote(token)}"), token_socket(f"token={quote(other_token)}")]
    session_socket = token_socket("", cookie=await customer_session(customer))
    for socket in [*sockets, session_socket]:
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from(timeout=5))["type"] == "history"

    await database_sync_to_async(services.customer_tokens_revoke)(customer_id=victim.id)
    closed = await sockets[0].receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}  # the thief's open chat ends now
    assert await sockets[1].receive_nothing(timeout=0.3)  # another customer's widget chat goes on
    assert await session_socket.receive_nothing(timeout=0.1)
    assert await refused_with(f"token={quote(token)}") == 4401  # and the token opens nothing more
    for socket in (sockets[1], session_socket):
        await socket.disconnect()


async def test_erasing_a_customer_closes_their_open_widget_socket(site: WidgetSite) -> None:
    customer, token, _ = await widget_customer(site)
    socket = token_socket(f"token={quote(token)}")
    assert (await socket.connect())[0]
    await socket.receive_json_from(timeout=5)
    await database_sync_to_async(erasure.customer_erase)(customer_id=customer.id)
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
