"""The production settings (docs/deployment.md, docs/settings.md): each check loads the settings in a
subprocess with an environment made for it, nothing inherited but PATH and HOME."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parents[1]
STRONG_KEY = "k7Qz-3vX_p9Lw2Rt8Ny4Bc6Hd1Jf5Gm0Sa-Ue7Io3Pq9Zx2Cv8Bn4Ml6Kj1Hg5Fd"
READ_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({name: getattr(s, name) for name in %r}))"
)


def base_environment(**env: str) -> dict[str, str]:
    inherited = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return {**inherited, "DJANGO_SETTINGS_MODULE": "chatbot.settings", **env}


def load_settings(*names: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", READ_SETTINGS % (names,)]
    return subprocess.run(command, cwd=ROOT, env=base_environment(**env), capture_output=True, text=True, timeout=60)


def loaded(*names: str, **env: str) -> dict[str, object]:
    result = load_settings(*names, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "key",
    [
        "insecure-local-only-change-me",
        "",
        "short-but-not-fifty-characters",
        "x" * 60,
        "django-insecure-" + "a1b2c3" * 9,
    ],
)
def test_it_refuses_a_weak_or_well_known_key_with_debug_off(tmp_path: Path, key: str) -> None:
    result = load_settings("SECRET_KEY", SECRET_KEY=key, SECRET_KEY_FILE=str(tmp_path / "key"))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "set SECRET_KEY to 50 or more random characters" in result.stderr


def test_it_accepts_a_weak_key_in_debug_mode(tmp_path: Path) -> None:
    settings = loaded("SECRET_KEY", DEBUG="true", SECRET_KEY="dev", SECRET_KEY_FILE=str(tmp_path / "key"))
    assert settings["SECRET_KEY"] == "dev"


def test_it_accepts_a_strong_key_from_the_environment(tmp_path: Path) -> None:
    settings = loaded("SECRET_KEY", SECRET_KEY=STRONG_KEY, SECRET_KEY_FILE=str(tmp_path / "key"))
    assert settings["SECRET_KEY"] == STRONG_KEY and not (tmp_path / "key").exists()


def test_it_generates_a_key_once_into_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    first = loaded("SECRET_KEY", SECRET_KEY_FILE=str(path))["SECRET_KEY"]
    second = loaded("SECRET_KEY", SECRET_KEY_FILE=str(path))["SECRET_KEY"]
    assert first == second == path.read_text().strip() and len(str(first)) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_it_refuses_a_weak_key_left_in_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("insecure-local-only-change-me\n")
    result = load_settings("SECRET_KEY", SECRET_KEY_FILE=str(path))
    assert result.returncode != 0 and f"the key in {path} is a publicly known value" in result.stderr


def test_it_says_how_to_set_a_key_when_the_key_file_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = load_settings("SECRET_KEY", SECRET_KEY_FILE=str(tmp_path / "a-file" / "secret_key"))
    assert result.returncode != 0
    assert "SECRET_KEY is not set and" in result.stderr and "token_urlsafe(50)" in result.stderr


def test_it_reads_the_security_settings_from_the_environment_under_djangos_names(tmp_path: Path) -> None:
    names = ("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS")
    names += ("SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    env = {"SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https", "SECURE_HSTS_SECONDS": "3600"}
    env |= {name: "true" for name in names[3:]} | {"SECURE_SSL_REDIRECT": "true"}
    settings = loaded(*names, SECRET_KEY=STRONG_KEY, **env)
    assert settings == {
        **{name: True for name in names},
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    } | {"SECURE_HSTS_SECONDS": 3600}


def test_its_defaults_serve_plain_http_on_one_machine(tmp_path: Path) -> None:
    names = ("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE")
    settings = loaded(*names, "CSRF_COOKIE_SECURE", SECRET_KEY_FILE=str(tmp_path / "key"))
    assert settings == {
        name: None if name == "SECURE_PROXY_SSL_HEADER" else 0 if "SECONDS" in name else False
        for name in (*names, "CSRF_COOKIE_SECURE")
    }


@pytest.mark.parametrize("value", ["X-Forwarded-Proto,https", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PROTO,"])
def test_it_refuses_a_proxy_header_django_could_not_use(value: str) -> None:
    result = load_settings("SECURE_PROXY_SSL_HEADER", SECRET_KEY=STRONG_KEY, SECURE_PROXY_SSL_HEADER=value)
    assert result.returncode != 0 and "e.g. HTTP_X_FORWARDED_PROTO,https" in result.stderr


def documented_production_environment() -> str:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```sh\n(# The production environment.*?)```", text, re.S)
    assert block, "docs/deployment.md lost its production environment block"
    return block.group(1)


def check_deploy(environment_script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "production.sh"
    script.write_text(environment_script)
    command = ["bash", "-c", '. "$1" && exec "$2" manage.py check --deploy --fail-level WARNING', "-"]
    env = base_environment(SECRET_KEY_FILE=str(tmp_path / "key"))
    return subprocess.run(
        [*command, str(script), sys.executable], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path: Path) -> None:
    result = check_deploy(documented_production_environment(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_with_the_local_defaults(tmp_path: Path) -> None:
    result = check_deploy("", tmp_path)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_every_page_carries_a_policy_of_our_own_origin_without_inline_code(client: Client) -> None:
    policy = client.get("/accounts/login/").headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    for name in ("default-src", "script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy


INLINE_CODE = re.compile(r"<script(?![^>]*\b(src|type=\"application/json\"))[^>]*>|<style|\sstyle=|\son[a-z]+=", re.I)


def test_no_template_holds_inline_script_style_or_handlers() -> None:
    offenders = [str(path) for path in (ROOT / "templates").rglob("*.html") if INLINE_CODE.search(path.read_text())]
    assert offenders == []


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True)
def test_the_ssl_redirect_spares_only_the_health_check(client: Client) -> None:
    assert client.get("/accounts/login/").status_code == 301
    assert client.get("/healthz").status_code in {200, 503}


# Reports each violation the page sees; the console names them too ("... violates the following
# Content Security Policy directive ...").
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def watched_page(context: Any, console: list[str]) -> Any:
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    page.on("console", lambda message: console.append(message.text))
    return page


def visit(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_pages_work_in_chromium_under_the_policy_without_a_violation(
    fake_system: Any, browser: Any, agent_user: Any, customer: Any
) -> None:
    from conversations.models import Conversation, Message
    from finetuning import services
    from finetuning.models import TrainingRun
    from tests.e2e.browser import signed_in_context

    User.objects.filter(id=agent_user.id).update(is_staff=True)
    conversation = Conversation.objects.create(customer=customer)
    Message.objects.create(conversation=conversation, role="customer", text="Where is my order?")
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(status="running", step=3, total_steps=12, loss_history=[[3, 1.1]])
    console: list[str] = []

    chat = watched_page(browser.new_context(), console)
    visit(chat, fake_system.url + "/")
    chat.wait_for_selector("#connection.online")
    chat.fill("#input", "Hello there")
    chat.keyboard.press("Enter")
    chat.wait_for_selector("li.msg.bot.complete", timeout=30_000)

    staff = watched_page(signed_in_context(browser, fake_system, agent_user), console)
    visit(staff, fake_system.url + "/agent/")
    staff.wait_for_selector("#agent-connection.online")
    staff.wait_for_selector(f"#rows tr[data-id='{conversation.id}']")
    visit(staff, f"{fake_system.url}/agent/conversations/{conversation.id}/")
    staff.wait_for_selector("#agent-connection.online")
    visit(staff, fake_system.url + "/training/")
    visit(staff, f"{fake_system.url}/training/runs/{run.id}/")
    staff.wait_for_selector("body[data-live='socket']")
    assert staff.text_content("#numbers").startswith("step 3 of 12")
    assert staff.eval_on_selector("#bar", "bar => bar.style.width") == "25%"
    assert staff.eval_on_selector(".ft", "main => getComputedStyle(main).maxWidth") == "1100px"

    violations = chat.evaluate("window.__violations") + staff.evaluate("window.__violations")
    assert violations == [] and [text for text in console if "Content Security Policy" in text] == []
