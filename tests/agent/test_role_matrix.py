"""Every URL and socket route × anonymous, customer A, customer B, a non-agent user, an agent, an admin.

The rules:
- the chat page, the health check, static files and the login page are for everyone;
- everything under /agent/ and /ws/agent/ is for agents, and for admins (staff), who can do all
  an agent can; anonymous visitors (customers included) are sent to the login page, a signed-in
  non-agent gets 403, a socket closes with 4401 / 4403;
- the learning loop (/training/ and /ws/training/runs/<id>/) and /admin/ are for staff (admins)
  only: an agent who is not staff is sent to the admin's login like anyone else (Django's
  ``staff_member_required``), and the training socket closes with 4401 / 4403;
- a customer (an anonymous session) reaches only their own conversation at /ws/chat/;
- the widget's loader, frame and config are for everyone; its session endpoint only for our own
  frame's Origin (none here: 403 for all, csrf-exempt as it reads no cookie); its staff pages
  under /agent/widget/ for staff alone, like erasure.

A POST that changes state runs against real objects, and the test checks the change was made when
permitted and not made when refused; Celery dispatch (training, dataset builds) is the only thing
mocked. ``test_every_url_pattern_has_a_row`` / ``test_every_socket_route_has_a_row`` fail when a
route is added without a row here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve

from chatbot.asgi import application
from chatbot.routing import websocket_urlpatterns
from conversations import events, roles
from conversations.knowledge import services as knowledge
from conversations.knowledge.models import KnowledgeEntry
from conversations.models import CannedReply, Conversation, ConversationNote, Correction, Feedback, WidgetSite
from conversations.workspace.consumers import AgentConsumer
from finetuning import services as learning
from finetuning.models import DatasetBuild, DatasetSnapshot, ModelVersion, Promotion, TrainingRun
from tests.sockets import HEADERS, customer_session, open_agent, receive_until, user_session

from .conftest import add_messages, customer_client, user_client

PERSONAS = ["anonymous", "customer_a", "customer_b", "plain_user", "agent", "admin"]

# An expected outcome is a status code, or a pattern (fnmatch) the redirect's Location must match.
LOGIN = "/accounts/login/?next=*"  # refused: sign in first
ADMIN_LOGIN = "/admin/login/?next=*"  # refused: staff only (Django admin's login)
FORBIDDEN = 403  # refused: signed in, but not an agent
REFUSED = {LOGIN, ADMIN_LOGIN, FORBIDDEN}


def everyone(outcome: int | str) -> dict[str, int | str]:
    return dict.fromkeys(PERSONAS, outcome)


def agents_only(outcome: int | str) -> dict[str, int | str]:
    return {**everyone(LOGIN), "plain_user": FORBIDDEN, "agent": outcome, "admin": outcome}


def staff_only(outcome: int | str) -> dict[str, int | str]:
    return {**everyone(ADMIN_LOGIN), "admin": outcome}


World = dict[str, Any]


def reviewed(world: World) -> bool:
    return Conversation.objects.get(id=world["conversation"].id).note == "n"


def rated(world: World) -> bool:
    return Feedback.objects.filter(message=world["reply"], source=Feedback.Source.AGENT).exists()


def corrected(world: World) -> bool:
    return Correction.objects.filter(message=world["reply"]).exists()


def assigned(world: World) -> bool:
    return Conversation.objects.get(id=world["conversation"].id).assignee_id is not None


def bulk_reviewed(world: World) -> bool:
    return Conversation.objects.get(id=world["conversation"].id).reviewed


def bulk_form(world: World) -> dict[str, Any]:
    return {"id": str(world["conversation"].id), "action": "reviewed"}


def finish_the_run(world: World) -> None:
    """Retrain now starts a run only when none is active."""
    TrainingRun.objects.filter(id=world["run"].id).update(status=TrainingRun.Status.SUCCEEDED)


def new_run_queued(world: World) -> bool:
    new = TrainingRun.objects.exclude(id=world["run"].id).first()
    return new is not None and world["dispatched"]["training_run"].call_args_list == [mock.call(new.id)]


def run_cancelled(world: World) -> bool:
    return TrainingRun.objects.get(id=world["run"].id).status == TrainingRun.Status.CANCELLED


def snapshot_queued(world: World) -> bool:
    build = DatasetBuild.objects.exclude(id=world["build"].id).first()
    return build is not None and world["dispatched"]["dataset_build"].call_args_list == [mock.call(build.id)]


def promoted(world: World) -> bool:
    return ModelVersion.objects.get(id=world["candidate"].id).status == ModelVersion.Status.ACTIVE


def rolled_back(world: World) -> bool:
    serving = ModelVersion.objects.get(id=world["serving"].id)
    return serving.status == ModelVersion.Status.RETIRED and Promotion.objects.filter(kind="rollback").exists()


def entry_status(world: World) -> str:
    return str(KnowledgeEntry.objects.get(id=world["entry"].id).status)


def entry_approved(world: World) -> bool:
    return entry_status(world) == "approved"


def entry_retired(world: World) -> bool:
    return entry_status(world) == "retired"


def entry_edited(world: World) -> bool:
    return KnowledgeEntry.objects.get(id=world["entry"].id).answer == "fixed"


def entry_added(world: World) -> bool:
    return KnowledgeEntry.objects.filter(question="added").exists()


def entries_merged(world: World) -> bool:
    return entry_retired(world) and KnowledgeEntry.objects.get(id=world["other_entry"].id).status == "suggested"


def entries_imported(world: World) -> bool:
    return KnowledgeEntry.objects.filter(question="imported").exists()


def canned_added(world: World) -> bool:
    return CannedReply.objects.filter(shortcut="added").exists()


def canned_edited(world: World) -> bool:
    return CannedReply.objects.get(id=world["canned"].id).text == "fixed"


def canned_deleted(world: World) -> bool:
    return not CannedReply.objects.filter(id=world["canned"].id).exists()


def canned_form(world: World) -> dict[str, Any]:
    return {"shortcut": "added", "text": "An added reply."}


def canned_edit_form(world: World) -> dict[str, Any]:
    return {"shortcut": world["canned"].shortcut, "text": "fixed"}


def noted(world: World) -> bool:
    return ConversationNote.objects.filter(conversation=world["conversation"], text="fixed").exists()


def site_added(world: World) -> bool:
    return WidgetSite.objects.filter(name="Added").exists()


def site_edited(world: World) -> bool:
    return WidgetSite.objects.get(id=world["site"].id).title == "Edited"


def site_secret_changed(world: World) -> bool:
    return WidgetSite.objects.get(id=world["site"].id).identity_secret != world["site"].identity_secret


def site_deleted(world: World) -> bool:
    return not WidgetSite.objects.filter(id=world["site"].id).exists()


def site_form(world: World) -> dict[str, Any]:
    fields = {"title": "Edited", "brand_colour": "#112233", "position": "right", "prechat": "off", "origins": ""}
    return {**fields, "name": "Shop"}


def site_new_form(world: World) -> dict[str, Any]:
    return {**site_form(world), "name": "Added"}


def site_confirm(world: World) -> dict[str, Any]:
    return {"confirm": world["site"].key}


def import_file(world: World) -> dict[str, Any]:
    return {"file": SimpleUploadedFile("faq.jsonl", b'{"question": "imported", "answer": "yes"}\n')}


@dataclass(frozen=True)
class Route:
    method: str
    url: str  # a template over the world's ids (``ids``)
    expected: dict[str, int | str]  # by persona
    done: Callable[[World], bool] | None = None  # the change a permitted POST makes
    prepare: Callable[[World], None] | None = None
    data: Callable[[World], dict[str, Any]] | None = None  # posted in place of POST_DATA
    csrf: bool = True  # False: csrf-exempt by design (reads no cookie; checks the Origin instead)

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


ROUTES = [
    Route("get", "/", everyone(200)),
    Route("get", "/healthz", everyone(200)),
    Route("get", "/static/chat.js", everyone(200)),
    Route("get", "/static/agent.js", everyone(200)),
    Route("get", "/accounts/login/", everyone(200)),
    Route("post", "/accounts/login/", everyone(200)),  # a wrong password: the form again
    Route("post", "/accounts/logout/", everyone("/accounts/login/")),
    Route("get", "/agent/", agents_only(200)),
    Route("get", "/agent/?q=hello&status=bot", agents_only(200)),
    Route("get", "/agent/conversations/{conversation}/", agents_only(200)),
    Route("get", "/agent/export.jsonl", agents_only(200)),
    Route("get", "/agent/export.csv?id={conversation}", agents_only(200)),
    Route("post", "/agent/conversations/{conversation}/review", agents_only(200), done=reviewed),
    Route("post", "/agent/messages/{reply}/feedback", agents_only(200), done=rated),
    Route("post", "/agent/messages/{reply}/correction", agents_only(200), done=corrected),
    # The team inbox (tests/agent/test_inbox_team.py): counts, assignment, bulk actions.
    Route("get", "/agent/inbox/counts", agents_only(200)),
    Route("get", "/agent/?view=mine&status=bot", agents_only(200)),
    Route(
        "post",
        "/agent/conversations/{conversation}/assign",
        agents_only(200),
        done=assigned,
        data=lambda world: {"assignee": "me"},
    ),
    Route("post", "/agent/bulk", agents_only(200), done=bulk_reviewed, data=bulk_form),
    # Erasure is in the agent workspace but for staff alone (tests/conversations/test_erasure.py posts it).
    Route("get", "/agent/customers/{customer}/erase", {**agents_only(200), "agent": FORBIDDEN}),
    # Signing a customer out of the widget (revoking their tokens): any agent (tests/widget/test_socket.py posts it).
    Route("get", "/agent/customers/{customer}/sign-out", agents_only(200)),
    # The knowledge page: every agent (and admin) may approve, edit, merge and retire.
    Route("get", "/agent/knowledge/", agents_only(200)),
    Route("get", "/agent/knowledge/?tab=retired&q=hello", agents_only(200)),
    Route("get", "/agent/knowledge/export.jsonl", agents_only(200)),
    Route("get", "/agent/knowledge/export.csv", agents_only(200)),
    Route("post", "/agent/knowledge/approve", agents_only("/agent/knowledge/"), done=entry_approved),
    Route("post", "/agent/knowledge/{entry}/edit", agents_only("/agent/knowledge/"), done=entry_edited),
    Route("post", "/agent/knowledge/{entry}/retire", agents_only("/agent/knowledge/"), done=entry_retired),
    Route("post", "/agent/knowledge/merge", agents_only("/agent/knowledge/"), done=entries_merged),
    Route("post", "/agent/knowledge/create", agents_only("/agent/knowledge/"), done=entry_added),
    Route("post", "/agent/knowledge/import", agents_only("/agent/knowledge/"), done=entries_imported, data=import_file),
    # The thread: notes, canned replies, the composer's snippets: every agent (and admin).
    Route("get", "/agent/conversations/{conversation}/notes", agents_only(200)),
    Route("post", "/agent/conversations/{conversation}/notes", agents_only(200), done=noted),
    Route("get", "/agent/snippets.json?q=ref", agents_only(200)),
    Route("get", "/agent/canned/", agents_only(200)),
    Route("post", "/agent/canned/", agents_only("/agent/canned/?saved=added*"), done=canned_added, data=canned_form),
    Route("get", "/agent/canned/{canned}/edit", agents_only(200)),
    Route(
        "post",
        "/agent/canned/{canned}/edit",
        agents_only("/agent/canned/?saved=refund*"),
        done=canned_edited,
        data=canned_edit_form,
    ),
    Route("get", "/agent/canned/{canned}/delete", agents_only(200)),
    Route("post", "/agent/canned/{canned}/delete", agents_only("/agent/canned/?deleted=refund"), done=canned_deleted),
    # Reports (conversations/reports): agents and admins read them, as the inbox.
    Route("get", "/reports/", agents_only(200)),
    Route("get", "/reports/?period=week", agents_only(200)),
    Route("get", "/reports/export.csv", agents_only(200)),
    Route("get", "/reports/export.csv?table=versions", agents_only(200)),
    Route("get", "/static/reports.js", everyone(200)),
    # The widget: its public endpoints, and its staff pages in the workspace (staff alone, as erasure).
    Route("get", "/widget.js", everyone(200)),
    Route("get", "/widget/{site_key}/frame", everyone(200)),
    Route("get", "/widget/{site_key}/config", everyone(200)),
    Route("post", "/widget/{site_key}/session", everyone(FORBIDDEN), csrf=False),  # no Origin: not our frame
    Route("get", "/agent/widget/", {**agents_only(200), "agent": FORBIDDEN}),
    Route("get", "/agent/widget/new", {**agents_only(200), "agent": FORBIDDEN}),
    Route("get", "/agent/widget/{site}/", {**agents_only(200), "agent": FORBIDDEN}),
    Route("get", "/agent/widget/{site}/preview", {**agents_only(200), "agent": FORBIDDEN}),
    Route("get", "/agent/widget/{site}/secret", {**agents_only(200), "agent": FORBIDDEN}),
    Route("get", "/agent/widget/{site}/delete", {**agents_only(200), "agent": FORBIDDEN}),
    Route(
        "post",
        "/agent/widget/new",
        {**agents_only("/agent/widget/*/"), "agent": FORBIDDEN},
        done=site_added,
        data=site_new_form,
    ),
    Route(
        "post",
        "/agent/widget/{site}/",
        {**agents_only("/agent/widget/{site}/?saved=1"), "agent": FORBIDDEN},
        done=site_edited,
        data=site_form,
    ),
    Route(
        "post",
        "/agent/widget/{site}/secret",
        {**agents_only("/agent/widget/{site}/?saved=1"), "agent": FORBIDDEN},
        done=site_secret_changed,
        data=site_confirm,
    ),
    Route(
        "post",
        "/agent/widget/{site}/delete",
        {**agents_only("/agent/widget/"), "agent": FORBIDDEN},
        done=site_deleted,
        data=site_confirm,
    ),
    Route("get", "/admin/", staff_only(200)),
    Route("get", "/training/", staff_only(200)),
    Route("post", "/training/runs/new", staff_only("/training/runs/*/"), done=new_run_queued, prepare=finish_the_run),
    Route("get", "/training/runs/{run}/", staff_only(200)),
    Route("get", "/training/runs/{run}.json", staff_only(200)),
    Route("post", "/training/runs/{run}/cancel", staff_only("/training/runs/{run}/"), done=run_cancelled),
    Route("post", "/training/datasets/new", staff_only("/training/"), done=snapshot_queued),
    Route("get", "/training/datasets/builds/{build}.json", staff_only(200)),
    Route("get", "/training/datasets/{snapshot}/", staff_only(200)),
    Route("get", "/training/versions/{candidate}/", staff_only(200)),
    Route(
        "post", "/training/versions/{candidate}/promote", staff_only("/training/versions/{candidate}/"), done=promoted
    ),
    Route("post", "/training/rollback", staff_only("/training/"), done=rolled_back),
]
POST_DATA = {"positive": "0", "reason": "rude", "text": "fixed", "note": "n", "tags": "t"}
POST_DATA_LOGIN = {"username": "dana", "password": "wrong"}


def post_data(route: Route, world: World) -> dict[str, Any]:
    """What a POST carries: the knowledge forms name the world's entries (merging the second into
    the first: the first is retired)."""
    if route.data:
        return route.data(world)
    if route.url.startswith("/accounts/login/"):
        return POST_DATA_LOGIN
    knowledge = {
        "ids": [world["entry"].id, world["other_entry"].id] if "merge" in route.url else [world["entry"].id],
        "into": world["other_entry"].id,
        "question": "added" if "create" in route.url else world["entry"].question,
        "answer": "fixed",
        "confirm": "yes",
    }
    return {**POST_DATA, **knowledge}


@pytest.fixture
def dispatched() -> Iterator[dict[str, mock.MagicMock]]:
    """The Celery messages a permitted POST sends, caught: no training or dataset build starts."""
    with (
        mock.patch("finetuning.tasks.training_run.delay") as training_run,
        mock.patch("finetuning.tasks.dataset_build.delay") as dataset_build,
    ):
        yield {"training_run": training_run, "dataset_build": dataset_build}


@pytest.fixture
def world(
    customer: Any,
    second_customer: Any,
    agent_user: Any,
    plain_user: Any,
    admin_user: Any,
    tmp_path: Path,
    dispatched: dict[str, mock.MagicMock],
) -> World:
    """Customer A's conversation with a bot reply; a serving model version (promoted, so there is
    something to roll back), a candidate with its adapter on disk, a dataset and a queued run."""
    conversation = Conversation.objects.create(customer=customer)
    Conversation.objects.create(customer=second_customer)
    _, reply = add_messages(conversation, ("customer", "hello"), ("bot", "Hi!"))
    snapshot = DatasetSnapshot.objects.create(content_hash="0" * 64, counts={}, params={})
    versions = []
    for name in ("run-1", "run-2"):
        (tmp_path / name).mkdir()
        versions.append(
            ModelVersion.objects.create(
                name=name,
                base_model="base",
                adapter_path=str(tmp_path / name),
                snapshot=snapshot,
                metrics={"checks": {"replay_f1_no_worse": True}},  # passed: promote refuses others
            )
        )
    serving, candidate = versions
    learning.version_promote(version=serving, actor=admin_user)
    run = TrainingRun.objects.create(snapshot=snapshot, requested_by=admin_user)
    build = DatasetBuild.objects.create(status=DatasetBuild.Status.READY, snapshot=snapshot)  # done: another may start
    entry = knowledge.entry_create(question="How much is wrapping?", answer="$4.50.")
    other_entry = knowledge.entry_create(question="What does wrapping cost?", answer="$4.50 a gift.")
    site = WidgetSite.objects.create(name="Shop", allowed_origins=["https://shop.example.com"])
    canned = CannedReply.objects.create(shortcut="refund", text="Refunds take 5 days.")
    return {
        "canned": canned,
        "site": site,
        "entry": entry,
        "other_entry": other_entry,
        "conversation": conversation,
        "reply": reply,
        "snapshot": snapshot,
        "serving": serving,
        "candidate": candidate,
        "run": run,
        "build": build,
        "dispatched": dispatched,
        "users": {"plain_user": plain_user, "agent": agent_user, "admin": admin_user},
        "customers": {"customer_a": customer, "customer_b": second_customer},
    }


def ids(world: World) -> dict[str, Any]:
    return {
        "conversation": world["conversation"].id,
        "reply": world["reply"].id,
        "run": world["run"].id,
        "build": world["build"].id,
        "snapshot": world["snapshot"].id,
        "candidate": world["candidate"].name,
        "customer": world["customers"]["customer_a"].id,
        "entry": world["entry"].id,
        "site": world["site"].id,
        "site_key": world["site"].key,
        "canned": world["canned"].id,
    }


def client_for(persona: str, world: World) -> Client:
    if persona in world["customers"]:
        return customer_client(world["customers"][persona])
    if persona in world["users"]:
        return user_client(world["users"][persona])
    return Client()


def assert_outcome(response: Any, expected: int | str, world: World) -> None:
    if isinstance(expected, int):
        assert response.status_code == expected
    else:
        assert response.status_code == 302
        assert fnmatch.fnmatchcase(response["Location"], expected.format(**ids(world))), response["Location"]


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_each_route_admits_only_its_roles(
    world: World, persona: str, route: Route, django_capture_on_commit_callbacks: Any
) -> None:
    assert set(route.expected) == set(PERSONAS)
    if route.prepare:
        route.prepare(world)
    if route.done:
        assert not route.done(world)
    data = post_data(route, world) if route.method == "post" else None
    with django_capture_on_commit_callbacks(execute=True):  # what goes out after the commit, goes out
        response = getattr(client_for(persona, world), route.method)(
            route.url.format(**ids(world)), data, HTTP_ACCEPT="application/json"
        )
    expected = route.expected[persona]
    assert_outcome(response, expected, world)
    if route.done:
        assert route.done(world) is (expected not in REFUSED)
    if expected in REFUSED:
        assert not any(m.called for m in world["dispatched"].values())


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("route", [r for r in ROUTES if r.method == "post" and r.csrf], ids=str)
def test_every_form_post_needs_the_csrf_token(world: World, route: Route) -> None:
    """CSRF on every form: even an admin, whom every POST admits, is refused without the token."""
    if route.prepare:
        route.prepare(world)
    assert route.expected["admin"] not in REFUSED
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["users"]["admin"])
    response = client.post(route.url.format(**ids(world)), post_data(route, world), HTTP_ACCEPT="application/json")
    assert response.status_code == 403 and b"CSRF" in response.content
    if route.done:
        assert not route.done(world)
    assert not any(m.called for m in world["dispatched"].values())


SAMPLE_IDS = {
    "conversation": "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "reply": 1,
    "run": 1,
    "build": 1,
    "snapshot": 1,
    "candidate": "run-2",
    "a": "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "customer": "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "missing": 999999,
    "entry": 1,
    "site": 1,
    "site_key": "0123456789abcdef",
    "canned": 1,
}


def url_routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every route of the project's URLconf, as ``ResolverMatch.route`` spells it; of the Django
    admin only its index (``admin/``), not its own sub-URLs."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + (str(pattern.pattern).removeprefix("^") if prefix else str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            if pattern.app_name == "admin":
                yield route
            else:
                yield from url_routes(pattern.url_patterns, route)
        else:
            yield route


def test_every_url_pattern_has_a_row() -> None:
    covered = {resolve(urlsplit(r.url.format(**SAMPLE_IDS)).path).route for r in ROUTES}
    routes = set(url_routes())
    assert "admin/" in routes and "training/runs/<int:run_id>/cancel" in routes  # the walk sees includes
    missing = routes - covered
    assert not missing, f"URL patterns without a row in ROUTES: {sorted(missing)}"


# The sockets: a close code, or the first frame ("history:a" is the history of customer A's conversation).
SOCKET_ROUTES = [
    (
        "/ws/chat/",
        {**dict.fromkeys(PERSONAS, 4401), "customer_a": "history:a", "customer_b": "history:b"},
    ),
    (
        "/ws/chat/?conversation={a}",  # only its own customer may open a conversation by id
        {**dict.fromkeys(PERSONAS, 4401), "customer_a": "history:a", "customer_b": 4404},
    ),
    # A widget token that is not one gets nothing, even where a session would have admitted.
    ("/ws/chat/?token=forged", dict.fromkeys(PERSONAS, 4401)),
    ("/ws/agent/", {**dict.fromkeys(PERSONAS, 4401), "plain_user": 4403, "agent": "hello", "admin": "hello"}),
    ("/ws/training/runs/{run}/", {**dict.fromkeys(PERSONAS, 4401), "plain_user": 4403, "agent": 4403, "admin": "run"}),
    (
        "/ws/training/runs/{missing}/",
        {**dict.fromkeys(PERSONAS, 4401), "plain_user": 4403, "agent": 4403, "admin": 4404},
    ),
]


def test_every_socket_route_has_a_row() -> None:
    covered = set()
    for path, expected in SOCKET_ROUTES:
        assert set(expected) == set(PERSONAS)
        wanted = urlsplit(path.format(**SAMPLE_IDS)).path.lstrip("/")
        covered |= {str(p.pattern) for p in websocket_urlpatterns if p.resolve(wanted)}
    missing = {str(p.pattern) for p in websocket_urlpatterns} - covered
    assert not missing, f"socket routes without a row in SOCKET_ROUTES: {sorted(missing)}"


@database_sync_to_async
def make_world(customer: Any, second_customer: Any, admin_user: Any) -> dict[str, Any]:
    return {
        "a": Conversation.objects.create(customer=customer),
        "b": Conversation.objects.create(customer=second_customer),
        "run": TrainingRun.objects.create(requested_by=admin_user),
    }


async def open_socket(
    path: str, persona: str, users: dict[str, Any], customers: dict[str, Any], origin: bytes | None = HEADERS[0][1]
) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1:8000")] + ([(b"origin", origin)] if origin is not None else [])
    if persona in customers:
        headers.append((b"cookie", f"sessionid={await customer_session(customers[persona])}".encode()))
    elif persona in users:
        headers.append((b"cookie", f"sessionid={await user_session(users[persona])}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("path", "expected"), SOCKET_ROUTES, ids=[p for p, _ in SOCKET_ROUTES])
async def test_each_socket_admits_only_its_roles(
    path: str,
    expected: dict[str, int | str],
    persona: str,
    customer: Any,
    second_customer: Any,
    agent_user: Any,
    plain_user: Any,
    admin_user: Any,
) -> None:
    users = {"plain_user": plain_user, "agent": agent_user, "admin": admin_user}
    customers = {"customer_a": customer, "customer_b": second_customer}
    own = await make_world(customer, second_customer, admin_user)
    url = path.format(a=own["a"].id, run=own["run"].id, missing=own["run"].id + 1000)
    socket = await open_socket(url, persona, users, customers)
    connected, code = await socket.connect()
    outcome = expected[persona]
    if isinstance(outcome, int):
        assert (connected, code) == (False, outcome)
        return
    assert connected, code
    first = await socket.receive_json_from(timeout=5)
    kind, _, whose = outcome.partition(":")
    assert first["type"] == kind
    if kind == "history":
        assert first["conversation"]["id"] == str(own[whose].id)
    if kind == "run":
        assert first["run"]["id"] == own["run"].id
    await socket.disconnect()


# Each socket row with the first persona it admits (every route has one: the missing run's shares its route).
ADMITTED = [
    (path, next(p for p in PERSONAS if not isinstance(e[p], int)))
    for path, e in SOCKET_ROUTES
    if not all(isinstance(outcome, int) for outcome in e.values())
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("origin", [b"http://evil.example", b"null", None], ids=["foreign", "null", "none"])
@pytest.mark.parametrize(("path", "persona"), ADMITTED, ids=[p for p, _ in ADMITTED])
async def test_every_socket_refuses_a_foreign_origin(
    path: str, persona: str, origin: bytes | None, customer: Any, second_customer: Any, agent_user: Any, admin_user: Any
) -> None:
    """Even for the persona it admits (the control connects), a page from elsewhere is refused."""
    users = {"agent": agent_user, "admin": admin_user}
    customers = {"customer_a": customer}
    own = await make_world(customer, second_customer, admin_user)
    url = path.format(a=own["a"].id, run=own["run"].id, missing=own["run"].id + 1000)
    control = await open_socket(url, persona, users, customers)
    assert (await control.connect())[0]
    await control.disconnect()
    socket = await open_socket(url, persona, users, customers, origin=origin)
    connected, _ = await socket.connect()
    assert not connected


# The agent socket asks again whether its user is still an agent: before every inbound frame, and
# before an outbound push when the last answer is older than AgentConsumer.role_recheck_s.


@database_sync_to_async
def demote(user: Any, how: str) -> None:
    if how == "left the agents group":
        user.groups.clear()
    elif how == "staff taken away":
        type(user).objects.filter(id=user.id).update(is_staff=False, is_superuser=False)
    elif how == "deactivated":
        type(user).objects.filter(id=user.id).update(is_active=False)
    else:
        user.delete()


DEMOTIONS = [
    ("agent", "left the agents group", 4403),
    ("admin", "staff taken away", 4403),
    ("agent", "deactivated", 4401),
    ("agent", "deleted", 4401),
]


async def closed_with(socket: WebsocketCommunicator) -> int:
    output = await socket.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize(("persona", "how", "code"), DEMOTIONS, ids=[h for _, h, _ in DEMOTIONS])
async def test_a_demoted_agent_is_closed_out_on_their_next_action(
    persona: str, how: str, code: int, conversation: Conversation, agent_user: Any, admin_user: Any
) -> None:
    user = {"agent": agent_user, "admin": admin_user}[persona]
    socket = await open_agent(user)
    await demote(user, how)
    await socket.send_json_to({"type": "takeover", "conversation_id": str(conversation.id)})
    assert await closed_with(socket) == code
    fresh = await database_sync_to_async(Conversation.objects.get)(id=conversation.id)
    assert (fresh.status, fresh.agent_id) == ("bot", None)  # the takeover never happened
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize(("persona", "how", "code"), DEMOTIONS, ids=[h for _, h, _ in DEMOTIONS])
async def test_a_demoted_agent_stops_hearing_pushes(
    monkeypatch: pytest.MonkeyPatch,
    persona: str,
    how: str,
    code: int,
    conversation: Conversation,
    agent_user: Any,
    admin_user: Any,
) -> None:
    monkeypatch.setattr(AgentConsumer, "role_recheck_s", 0.0)  # every push asks (the default: every 5 s)
    user = {"agent": agent_user, "admin": admin_user}[persona]
    socket = await open_agent(user)
    await socket.send_json_to({"type": "watch", "conversation_id": str(conversation.id)})
    assert (await socket.receive_json_from(timeout=5))["type"] == "history"
    await events.publish(conversation.id, {"type": "notice", "code": "still-an-agent"})
    assert (await socket.receive_json_from(timeout=5))["code"] == "still-an-agent"

    await demote(user, how)
    await events.publish(conversation.id, {"type": "notice", "code": "SECRET"})
    assert await closed_with(socket) == code
    await events.publish_agents({"type": "inbox", "note": "SECRET"})
    await events.publish(conversation.id, {"type": "notice", "code": "SECRET"})
    assert await socket.receive_nothing(timeout=0.3)  # out of both groups at once
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
async def test_the_push_check_is_cheap_and_every_frame_asks(
    monkeypatch: pytest.MonkeyPatch, conversation: Conversation, agent_user: Any
) -> None:
    asked: list[Any] = []
    real = roles.active_user
    monkeypatch.setattr(roles, "active_user", lambda user_id: asked.append(user_id) or real(user_id))
    monkeypatch.setattr(AgentConsumer, "role_recheck_s", 60.0)
    socket = await open_agent(agent_user)
    for n in range(3):
        await events.publish_agents({"type": "inbox", "n": n})
    assert [f["n"] for f in await receive_until(socket, lambda f: f.get("n") == 2)] == [0, 1, 2]
    assert asked == []  # checked at connect, less than role_recheck_s ago
    for _ in range(2):
        await socket.send_json_to({"type": "watch", "conversation_id": str(conversation.id)})
        await receive_until(socket, "history")
    assert asked == [agent_user.id, agent_user.id]
    await socket.disconnect()


def test_the_agent_socket_rechecks_within_a_few_seconds() -> None:
    assert 0 < AgentConsumer.role_recheck_s <= 5
