"""Signing in, throttling failed sign-ins, and creating agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_login_page_has_a_csrf_protected_form() -> None:
    response = Client(enforce_csrf_checks=True).get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content
    refused = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "x", "password": "y"})
    assert refused.status_code == 403


def test_an_agent_signs_in_and_lands_in_the_inbox(agent_user: User) -> None:
    client = Client()
    response = sign_in(client, "dana", "a-long-agent-password")
    assert response.status_code == 302 and response["Location"] == "/agent/"
    assert client.get("/agent/").status_code == 200


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_it_throttles_failed_logins_even_with_the_right_password_afterwards(agent_user: User) -> None:
    client = Client()
    for _ in range(3):
        assert sign_in(client, "dana", "wrong").status_code == 200
    throttled = sign_in(client, "dana", "a-long-agent-password")
    assert throttled.status_code == 429
    assert b"Too many failed sign-ins" in throttled.content
    assert "_auth_user_id" not in client.session


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_the_throttle_counts_per_username_across_addresses(agent_user: User) -> None:
    for n in range(3):
        sign_in(Client(REMOTE_ADDR=f"10.0.0.{n}"), "dana", "wrong")
    assert sign_in(Client(REMOTE_ADDR="10.0.0.9"), "dana", "a-long-agent-password").status_code == 429


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_a_successful_login_resets_the_username_count(agent_user: User) -> None:
    for _ in range(2):
        sign_in(Client(), "dana", "wrong")
    assert sign_in(Client(REMOTE_ADDR="10.0.0.1"), "dana", "a-long-agent-password").status_code == 302
    for _ in range(2):
        sign_in(Client(REMOTE_ADDR="10.0.0.2"), "dana", "wrong")
    assert sign_in(Client(REMOTE_ADDR="10.0.0.3"), "dana", "a-long-agent-password").status_code == 302


def test_create_agent_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("correct-horse-battery\n")
    call_command("create_agent", "sam", "--password-file", str(secret), "--first-name", "Sam")
    user = User.objects.get(username="sam")
    assert user.check_password("correct-horse-battery")
    assert user.groups.filter(name="agents").exists() and not user.is_staff
    assert sign_in(Client(), "sam", "correct-horse-battery").status_code == 302


def test_create_agent_prompts_for_the_password_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["correct-horse-battery", "correct-horse-battery"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    call_command("create_agent", "sam")
    assert User.objects.get(username="sam").check_password("correct-horse-battery")


def test_create_agent_refuses_mismatched_weak_or_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, agent_user: User
) -> None:
    answers = iter(["correct-horse-battery", "different-horse-battery"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(CommandError, match="differ"):
        call_command("create_agent", "sam")
    weak = tmp_path / "weak"
    weak.write_text("password\n")
    with pytest.raises(CommandError, match="too common|too short"):
        call_command("create_agent", "sam", "--password-file", str(weak))
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_agent", "dana", "--password-file", str(weak))
    assert not User.objects.filter(username="sam").exists()


def test_the_agents_group_exists_after_migrating() -> None:
    from django.contrib.auth.models import Group

    assert Group.objects.filter(name="agents").exists()


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_the_admin_login_is_throttled_too(admin_user: User) -> None:
    for _ in range(3):
        Client().post("/admin/login/", {"username": "admin", "password": "wrong"})
    client = Client(REMOTE_ADDR="10.9.9.9")
    client.post("/admin/login/", {"username": "admin", "password": "password"})
    assert "_auth_user_id" not in client.session  # the username itself is throttled
