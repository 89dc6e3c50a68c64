"""The knowledge page through Django's test client: who may see it, every action, bad input
shown on the page (never a 500), search, and the export's content."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conversations.knowledge import services
from conversations.knowledge.models import KnowledgeEntry, KnowledgeSource
from conversations.models import Conversation
from tests.agent.conftest import customer_client, user_client

pytestmark = pytest.mark.django_db

PAGE = "/agent/knowledge/"


@pytest.fixture
def agent_client(agent_user: Any) -> Client:
    return user_client(agent_user)


def entry(question: str, answer: str, **fields: Any) -> KnowledgeEntry:
    made = services.entry_create(question=question, answer=answer, alternatives=fields.pop("alternatives", ()))
    if fields:
        KnowledgeEntry.objects.filter(id=made.id).update(**fields)
        made.refresh_from_db()
    return made


@pytest.fixture
def wrapping() -> KnowledgeEntry:
    return entry("How much is gift wrapping?", "Gift wrapping costs $4.50.", alternatives=["Price of wrapping?"])


@pytest.fixture
def hours() -> KnowledgeEntry:
    return entry("When are you open?", "We are open 9 to 5, Monday to Friday.")


def post(client: Client, url: str, data: dict[str, Any]) -> Any:
    return client.post(url, data)


def status(e: KnowledgeEntry) -> str:
    return KnowledgeEntry.objects.get(id=e.id).status


def test_it_sends_anonymous_visitors_to_the_login_page(customer: Any) -> None:
    for client in (Client(), customer_client(customer)):
        response = client.get(PAGE)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_it_refuses_a_signed_in_user_who_is_not_an_agent(plain_user: Any, wrapping: KnowledgeEntry) -> None:
    client = user_client(plain_user)
    assert client.get(PAGE).status_code == 403
    assert post(client, f"/agent/knowledge/{wrapping.id}/retire", {"confirm": "yes"}).status_code == 403
    assert status(wrapping) == "suggested"


def test_it_shows_an_agent_the_suggestions_with_their_counts(
    agent_client: Client, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    entry("Do you ship abroad?", "Yes, to the EU.", status="approved")
    entry("Old question", "Old answer", status="retired")
    entry("Is delivery free?", "Over $50, yes.", conflict=True)
    page = agent_client.get(PAGE).content.decode()
    assert "How much is gift wrapping?" in page and "Price of wrapping?" in page and "$4.50" in page
    assert "Do you ship abroad?" not in page  # approved: its own tab
    counts = {tab: _count(page, tab) for tab in ("suggested", "approved", "conflicts", "retired")}
    assert counts == {"suggested": 2, "approved": 1, "conflicts": 1, "retired": 1}


def _count(page: str, tab: str) -> int:
    anchor = page.split(f'data-tab="{tab}"', 1)[1]
    return int(anchor.split('class="count">', 1)[1].split("<", 1)[0])


def test_each_tab_counts_its_own_entries(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    entry("Do you ship abroad?", "Yes, to the EU.", status="approved")
    entry("Is delivery free?", "Over $50, yes.", conflict=True)
    page = agent_client.get(PAGE + "?tab=conflicts").content.decode()
    assert {t: _count(page, t) for t in ("suggested", "approved", "conflicts", "retired")} == {
        "suggested": 1,
        "approved": 1,
        "conflicts": 1,
        "retired": 0,
    }
    assert "Is delivery free?" in page and "How much is gift wrapping?" not in page


def test_it_links_each_source_to_its_transcript(agent_client: Client, wrapping: KnowledgeEntry, customer: Any) -> None:
    conversation = Conversation.objects.create(customer=customer)
    KnowledgeSource.objects.create(entry=wrapping, conversation=conversation)
    page = agent_client.get(PAGE).content.decode()
    assert "2 sources" in page  # the hand-written one and the conversation
    assert f'href="/agent/conversations/{conversation.id}/"' in page


def test_search_finds_questions_phrasings_and_answers(
    agent_client: Client, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    for text in ("GIFT", "price of", "$4.50"):
        page = agent_client.get(PAGE, {"q": text}).content.decode()
        assert "How much is gift wrapping?" in page and "When are you open?" not in page, text
    assert "No entries" in agent_client.get(PAGE, {"q": "parrots"}).content.decode()


def test_an_agent_approves_one_entry_and_is_named_as_its_approver(
    agent_client: Client, agent_user: Any, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    response = post(agent_client, "/agent/knowledge/approve", {"ids": wrapping.id, "tab": "suggested"})
    assert response.status_code == 302 and response["Location"] == "/agent/knowledge/?tab=suggested"
    approved = KnowledgeEntry.objects.get(id=wrapping.id)
    assert approved.status == "approved" and approved.approved_by == agent_user and status(hours) == "suggested"
    page = agent_client.get(PAGE, {"tab": "approved"}).content.decode()
    assert "Approved by Dana on" in page and "Approved 1 entry" in page


def test_approve_selected_approves_every_ticked_entry(
    agent_client: Client, admin_user: Any, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    response = post(user_client(admin_user), "/agent/knowledge/approve", {"ids": [wrapping.id, hours.id]})
    assert response.status_code == 302
    assert status(wrapping) == status(hours) == "approved"


def test_approving_nothing_says_so_on_the_page(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    for data in ({}, {"ids": "x"}):
        response = post(agent_client, "/agent/knowledge/approve", data)
        assert response.status_code == 400 and b'role="alert"' in response.content
    assert status(wrapping) == "suggested"


def test_an_agent_edits_the_question_phrasings_and_answer(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    response = post(
        agent_client,
        f"/agent/knowledge/{wrapping.id}/edit",
        {
            "question": "What does wrapping cost?",
            "alternatives": "Wrapping price?\n\n Is wrapping free? ",
            "answer": "$5.",
        },
    )
    assert response.status_code == 302
    edited = KnowledgeEntry.objects.get(id=wrapping.id)
    assert (edited.question, edited.alternatives, edited.answer) == (
        "What does wrapping cost?",
        ["Wrapping price?", "Is wrapping free?"],
        "$5.",
    )


def test_an_edit_that_keeps_the_phrasings_keeps_the_embedding(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    KnowledgeEntry.objects.filter(id=wrapping.id).update(embedding=b"\x00" * 8)
    data = {"question": wrapping.question, "alternatives": "Price of wrapping?", "answer": "It is $5 now."}
    assert post(agent_client, f"/agent/knowledge/{wrapping.id}/edit", data).status_code == 302
    edited = KnowledgeEntry.objects.get(id=wrapping.id)
    assert edited.answer == "It is $5 now." and bytes(edited.embedding) == b"\x00" * 8


def test_an_edit_resolves_a_conflict_when_asked(agent_client: Client) -> None:
    conflicted = entry("Is delivery free?", "Over $50, yes.", conflict=True)
    data = {"question": conflicted.question, "answer": conflicted.answer, "resolved": "1", "tab": "conflicts"}
    assert post(agent_client, f"/agent/knowledge/{conflicted.id}/edit", data).status_code == 302
    assert not KnowledgeEntry.objects.get(id=conflicted.id).conflict


def test_an_empty_answer_is_refused_on_the_page_with_what_was_typed(
    agent_client: Client, wrapping: KnowledgeEntry
) -> None:
    data = {"question": "A new question typed", "answer": "  "}
    response = post(agent_client, f"/agent/knowledge/{wrapping.id}/edit", data | {"entry": wrapping.id})
    page = response.content.decode()
    assert response.status_code == 400 and "An entry needs an answer." in page
    assert "A new question typed" in page  # kept in the open form
    assert KnowledgeEntry.objects.get(id=wrapping.id).answer == "Gift wrapping costs $4.50."


def test_retiring_needs_the_confirmation(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    response = post(agent_client, f"/agent/knowledge/{wrapping.id}/retire", {})
    assert response.status_code == 400 and b"confirm it" in response.content
    assert status(wrapping) == "suggested"
    assert post(agent_client, f"/agent/knowledge/{wrapping.id}/retire", {"confirm": "yes"}).status_code == 302
    assert status(wrapping) == "retired"


def test_an_unknown_entry_is_a_404(agent_client: Client) -> None:
    assert post(agent_client, "/agent/knowledge/999999/retire", {"confirm": "yes"}).status_code == 404


def test_merge_keeps_the_chosen_answer_and_retires_the_others(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    other = entry("Can you wrap my gift?", "Wrapping is $4.50 per item.")
    data = {"ids": [wrapping.id, other.id], "into": other.id}
    assert post(agent_client, "/agent/knowledge/merge", data).status_code == 302
    kept = KnowledgeEntry.objects.get(id=other.id)
    assert kept.answer == "Wrapping is $4.50 per item." and "How much is gift wrapping?" in kept.alternatives
    assert status(wrapping) == "retired" and kept.sources.count() == 2


@pytest.mark.parametrize("into", ["", "abc", "self-missing"])
def test_a_merge_without_a_winner_is_refused(agent_client: Client, wrapping: KnowledgeEntry, into: str) -> None:
    other = entry("Can you wrap my gift?", "Wrapping is $4.50 per item.")
    target = str(entry("Unrelated", "Unrelated answer").id) if into == "self-missing" else into
    response = post(agent_client, "/agent/knowledge/merge", {"ids": [wrapping.id, other.id], "into": target})
    assert response.status_code == 400 and b"answers wins" in response.content
    assert status(wrapping) == status(other) == "suggested"


def test_a_merge_of_one_entry_is_refused(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    response = post(agent_client, "/agent/knowledge/merge", {"ids": [wrapping.id], "into": wrapping.id})
    assert response.status_code == 400 and b"at least two" in response.content


def test_an_agent_adds_an_entry_by_hand_as_a_suggestion(agent_client: Client, agent_user: Any) -> None:
    data = {"question": "Do you sell vouchers?", "alternatives": "Gift cards?", "answer": "Yes, from $10."}
    assert post(agent_client, "/agent/knowledge/create", data).status_code == 302
    made = KnowledgeEntry.objects.get(question="Do you sell vouchers?")
    assert made.status == "suggested" and made.alternatives == ["Gift cards?"]
    assert made.sources.get().author == agent_user


def test_a_hand_entry_without_a_question_is_refused_and_kept_in_the_form(agent_client: Client) -> None:
    response = post(agent_client, "/agent/knowledge/create", {"create": "1", "question": "", "answer": "Yes, $10."})
    assert response.status_code == 400 and b"needs a question" in response.content
    assert b"Yes, $10." in response.content and not KnowledgeEntry.objects.exists()


def upload(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode())


def test_it_imports_a_jsonl_file_as_suggestions(agent_client: Client) -> None:
    lines = [
        {"question": "Do you sell vouchers?", "answer": "Yes, from $10.", "alternatives": ["Gift cards?"]},
        {"question": "Where are you?", "answer": "12 Mill Lane."},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    assert post(agent_client, "/agent/knowledge/import", {"file": upload("faq.jsonl", text)}).status_code == 302
    assert sorted(KnowledgeEntry.objects.values_list("question", "status")) == [
        ("Do you sell vouchers?", "suggested"),
        ("Where are you?", "suggested"),
    ]


def test_it_imports_a_csv_file(agent_client: Client) -> None:
    text = "question,answer,alternatives\nWhere are you?,12 Mill Lane.,Your address? | Where is the shop?\n"
    assert post(agent_client, "/agent/knowledge/import", {"file": upload("faq.csv", text)}).status_code == 302
    assert KnowledgeEntry.objects.get().alternatives == ["Your address?", "Where is the shop?"]


def test_a_file_with_bad_lines_names_each_and_imports_nothing(agent_client: Client) -> None:
    text = "\n".join(
        [
            json.dumps({"question": "Where are you?", "answer": "12 Mill Lane."}),
            "{not json",
            json.dumps({"question": "No answer here"}),
            json.dumps({"question": "Q", "answer": "A", "alternatives": "one"}),
            json.dumps({"question": "Long", "answer": "x" * (services.MAX_CHARS + 1)}),
        ]
    )
    response = post(agent_client, "/agent/knowledge/import", {"file": upload("faq.jsonl", text)})
    page = response.content.decode()
    assert response.status_code == 400 and "Nothing was imported." in page
    for problem in ("line 2: not JSON", "line 3: a question and an answer are needed", "line 4: alternatives must"):
        assert problem in page
    assert not KnowledgeEntry.objects.exists()


def test_a_row_the_services_refuse_names_its_line_and_imports_nothing(agent_client: Client) -> None:
    text = "\n".join(
        [
            json.dumps({"question": "Where are you?", "answer": "12 Mill Lane."}),
            json.dumps({"question": "Long", "answer": "x" * (services.MAX_CHARS + 1)}),
        ]
    )
    response = post(agent_client, "/agent/knowledge/import", {"file": upload("faq.jsonl", text)})
    assert response.status_code == 400 and "line 2: This answer is too long." in response.content.decode()
    assert not KnowledgeEntry.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("faq.txt", b"question,answer\n", b"only .jsonl and .csv"),
        ("faq.jsonl", b"\xff\xfe\x00bad", b"not UTF-8"),
        ("faq.jsonl", b"\n\n", b"no entries"),
    ],
)
def test_a_file_it_cannot_read_is_refused_on_the_page(
    agent_client: Client, name: str, data: bytes, problem: bytes
) -> None:
    response = agent_client.post("/agent/knowledge/import", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 400 and problem in response.content


def test_an_import_without_a_file_is_refused(agent_client: Client) -> None:
    response = agent_client.post("/agent/knowledge/import", {})
    assert response.status_code == 400 and b"Choose a .jsonl or .csv file" in response.content


def test_the_jsonl_export_holds_every_entry_and_imports_back(
    agent_client: Client, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    response = agent_client.get("/agent/knowledge/export.jsonl")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    records = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [(r["id"], r["question"], r["alternatives"], r["sources"]) for r in records] == [
        (wrapping.id, "How much is gift wrapping?", ["Price of wrapping?"], 1),
        (hours.id, "When are you open?", [], 1),
    ]
    KnowledgeEntry.objects.all().delete()
    back = SimpleUploadedFile("back.jsonl", response.content)
    assert agent_client.post("/agent/knowledge/import", {"file": back}).status_code == 302
    assert KnowledgeEntry.objects.count() == 2


def test_the_csv_export_has_a_header_and_one_row_per_entry(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    response = agent_client.get("/agent/knowledge/export.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["question"], r["alternatives"], r["answer"], r["status"]) for r in rows] == [
        ("How much is gift wrapping?", "Price of wrapping?", "Gift wrapping costs $4.50.", "suggested")
    ]


def test_the_agent_navigation_links_to_the_page(agent_client: Client) -> None:
    assert b'href="/agent/knowledge/"' in agent_client.get("/agent/").content


def test_every_control_has_a_label(agent_client: Client, wrapping: KnowledgeEntry) -> None:
    """Each input and textarea is named by a <label for>, a wrapping <label> or aria-label."""
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.labelled: set[str] = set()
            self.controls: list[dict[str, str | None]] = []
            self.depth = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "label":
                self.depth += 1
                if found.get("for"):
                    self.labelled.add(str(found["for"]))
            elif tag in ("input", "textarea", "select") and found.get("type") != "hidden":
                self.controls.append({**found, "_wrapped": "1" if self.depth else None})

        def handle_endtag(self, tag: str) -> None:
            if tag == "label":
                self.depth -= 1

    parser = Controls()
    parser.feed(agent_client.get(PAGE).content.decode())
    assert len(parser.controls) >= 8
    unlabelled = [
        c for c in parser.controls if not (c["_wrapped"] or c.get("aria-label") or c.get("id") in parser.labelled)
    ]
    assert not unlabelled
