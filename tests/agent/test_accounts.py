"""Signing in, throttling failed sign-ins, and creating agents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, RequestFactory, override_settings

from conversations import login_throttle

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


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_the_throttle_counts_per_address_across_usernames(agent_user: User) -> None:
    """Guessing many usernames from one address: after 3 failures that address is refused, even
    for a right password; the same user from elsewhere still signs in."""
    for n in range(3):
        assert sign_in(Client(REMOTE_ADDR="10.1.1.1"), f"guess-{n}", "wrong").status_code == 200
    assert sign_in(Client(REMOTE_ADDR="10.1.1.1"), "dana", "a-long-agent-password").status_code == 429
    assert sign_in(Client(REMOTE_ADDR="10.1.1.2"), "dana", "a-long-agent-password").status_code == 302


@override_settings(LOGIN_THROTTLE_FAILURES=3, LOGIN_THROTTLE_WINDOW_S=1)
def test_the_throttle_lifts_when_the_window_has_passed(agent_user: User, redis_client: redis.Redis) -> None:
    for _ in range(3):
        sign_in(Client(), "dana", "wrong")
    assert sign_in(Client(), "dana", "a-long-agent-password").status_code == 429
    keys = list(redis_client.scan_iter(login_throttle.counts().make_key("*")))
    assert keys and all(0 < redis_client.pttl(k) <= 1000 for k in keys)  # from the first failure
    time.sleep(1.1)
    assert sign_in(Client(), "dana", "a-long-agent-password").status_code == 302


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_the_counts_live_in_redis_shared_by_every_process(agent_user: User, redis_client: redis.Redis) -> None:
    """Another process is another cache client: it sees this one's failures, and this one sees its."""
    for n in range(2):
        sign_in(Client(REMOTE_ADDR=f"10.2.0.{n}"), "dana", "wrong")
    other = caches.create_connection(login_throttle.CACHE_ALIAS)  # a client of its own, as in another process
    assert other is not login_throttle.counts()
    user_key = login_throttle._keys(None, "dana")[1]
    assert other.get(user_key) == 2
    other.incr(user_key)  # the third failure, counted elsewhere
    assert sign_in(Client(REMOTE_ADDR="10.2.0.9"), "dana", "a-long-agent-password").status_code == 429
    stored = {k for k in redis_client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:login-throttle:*")}
    assert login_throttle.counts().make_key(user_key) in stored
    assert not any("dana" in k for k in stored)  # usernames are hashed
    assert settings.CACHES[login_throttle.CACHE_ALIAS]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"


def address_of(remote_addr: str, forwarded: str | None = None) -> str:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return login_throttle.client_address(RequestFactory().post("/accounts/login/", REMOTE_ADDR=remote_addr, **extra))


@pytest.mark.parametrize(
    ("hops", "remote_addr", "forwarded", "client"),
    [
        (0, "10.0.0.1", "203.0.113.5", "10.0.0.1"),  # no proxy configured: the header is the client's to forge
        (1, "10.0.0.1", "203.0.113.5", "203.0.113.5"),  # one proxy: the address it saw
        (1, "10.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # anything further left is forged
        (2, "10.0.0.2", "6.6.6.6, 203.0.113.5, 10.0.0.1", "203.0.113.5"),  # two proxies
        (2, "10.0.0.2", "203.0.113.5", "10.0.0.2"),  # fewer entries than proxies: not through them all
        (1, "10.0.0.1", "", "10.0.0.1"),
        (1, "10.0.0.1", "not-an-address", "not-an-address"),
        (0, "2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::/64"),  # IPv6 by its /64
        (0, "::ffff:198.51.100.7", None, "198.51.100.7"),
    ],
)
def test_the_client_address_comes_from_x_forwarded_for_only_behind_trusted_proxies(
    settings: Any, hops: int, remote_addr: str, forwarded: str | None, client: str
) -> None:
    settings.TRUSTED_PROXY_HOPS = hops
    assert address_of(remote_addr, forwarded) == client


@override_settings(LOGIN_THROTTLE_FAILURES=3)
def test_behind_a_proxy_each_client_counts_on_its_own(agent_user: User, settings: Any) -> None:
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for n in range(3):  # one client guessing, rotating a forged header and the username
        sign_in(Client(**proxy, HTTP_X_FORWARDED_FOR=f"6.6.6.{n}, 203.0.113.5"), f"guess-{n}", "wrong")
    # Without the setting every client behind the proxy shares its address, and all are refused.
    assert (
        sign_in(Client(**proxy, HTTP_X_FORWARDED_FOR="198.51.100.7"), "pat", "a-long-user-password").status_code == 429
    )
    settings.TRUSTED_PROXY_HOPS = 1
    for n in range(3):
        sign_in(Client(**proxy, HTTP_X_FORWARDED_FOR=f"6.6.6.{n}, 203.0.113.5"), f"guess-{n}", "wrong")
    guesser = Client(**proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert sign_in(guesser, "dana", "a-long-agent-password").status_code == 429
    other = Client(**proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert sign_in(other, "dana", "a-long-agent-password").status_code == 302


def test_the_logout_button_needs_the_csrf_token(agent_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent_user)
    assert client.get("/agent/").status_code == 200  # the workspace page sets the CSRF cookie
    refused = client.post("/accounts/logout/")
    assert refused.status_code == 403 and "_auth_user_id" in client.session
    out = client.post("/accounts/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert out.status_code == 302 and "_auth_user_id" not in client.session


def test_the_login_form_signs_in_with_its_csrf_token(agent_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.get("/accounts/login/")
    token = client.cookies["csrftoken"].value
    assert sign_in(client, "dana", "a-long-agent-password").status_code == 403  # no token: refused
    response = client.post(
        "/accounts/login/", {"username": "dana", "password": "a-long-agent-password", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(agent_user.id)


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


def test_sign_in_keeps_working_unthrottled_while_redis_is_down(
    agent_user: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from django.core.cache.backends.redis import RedisCache

    nowhere = RedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_connect_timeout": 0.2}})
    monkeypatch.setattr(login_throttle, "counts", lambda: nowhere)
    failed = sign_in(Client(), "dana", "wrong password")
    assert failed.status_code == 200  # refused as a wrong password, not a server error
    assert sign_in(Client(), "dana", "a-long-agent-password").status_code == 302
    assert "login throttle could not count a failure" in caplog.text
    assert "login throttle could not check" in caplog.text
