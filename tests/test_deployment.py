"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked, with
`docker compose config` where a compose client is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_it_defines_every_process_of_the_system() -> None:
    assert {"web", "inference", "celery", "redis", "postgres", "migrate"} <= set(COMPOSE["services"])


def test_the_inference_worker_reserves_an_nvidia_gpu() -> None:
    devices = COMPOSE["services"]["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_app_services_take_their_settings_from_the_environment() -> None:
    for name in ("web", "inference", "celery", "migrate"):
        env = COMPOSE["services"][name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "BASE_MODEL"} <= set(env), name


def test_the_web_service_is_checked_through_healthz_and_every_process_restarts() -> None:
    assert "/healthz" in " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])
    for name in ("web", "inference", "celery", "redis", "postgres"):
        assert COMPOSE["services"][name]["restart"] == "unless-stopped", name


def test_replicas_of_the_worker_get_consumer_names_of_their_own() -> None:
    assert "--consumer" not in COMPOSE["services"]["inference"]["command"]


def test_the_commands_it_runs_exist() -> None:
    commands = get_commands()
    for name in ("inference", "migrate"):
        command = COMPOSE["services"][name]["command"]
        for managed in ("inference_worker", "prepare_model", "migrate"):
            if f"manage.py {managed}" in command:
                assert managed in commands


def test_the_image_and_the_web_service_run_the_web_tier_through_chatbot_web() -> None:
    cmd = re.search(r"^CMD (.+)$", DOCKERFILE, re.MULTILINE)
    assert cmd is not None
    assert json.loads(cmd.group(1)) == ["python", "-m", "chatbot.web", "--host", "0.0.0.0", "--port", "8000"]
    service = COMPOSE["services"]["web"]
    assert service["command"] == "python -m chatbot.web --host 0.0.0.0 --port 8000"
    env = service["environment"]
    assert env["WEB_PROCESSES"] == "${WEB_PROCESSES:-0}" and env["WEB_SERVER"] == "${WEB_SERVER:-uvicorn}"
    assert env["DATABASE_URL"] == COMPOSE["services"]["celery"]["environment"]["DATABASE_URL"]  # the shared rest


def test_what_the_web_service_runs_is_uvicorn_with_the_processes_it_is_given() -> None:
    # The service's command, through chatbot/web.py's own parser, with compose's setting.
    probe = (
        "import sys, chatbot.web as w, os;w.os.execv = lambda path, argv: print(' '.join(argv));w.main(sys.argv[1:])"
    )
    args = COMPOSE["services"]["web"]["command"].split()[3:]
    env = {**os.environ, "WEB_PROCESSES": "3"}
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "-m uvicorn chatbot.asgi:application --host 0.0.0.0 --port 8000 --workers 3" in result.stdout


def test_only_the_proxy_on_the_host_reaches_a_published_port() -> None:
    published = {name: service["ports"] for name, service in COMPOSE["services"].items() if "ports" in service}
    assert published == {"web": ["127.0.0.1:8000:8000"]}


def test_compose_runs_behind_the_tls_proxy_with_the_production_security_settings() -> None:
    env = COMPOSE["services"]["web"]["environment"]
    assert env["SECURE_PROXY_SSL_HEADER"].endswith(":-HTTP_X_FORWARDED_PROTO,https}")
    for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_PRELOAD"):
        assert env[name] == f"${{{name}:-true}}", name


def test_the_health_check_asks_as_an_allowed_host() -> None:
    assert "os.environ['ALLOWED_HOSTS']" in " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])


def test_the_image_runs_as_a_user_of_its_own_that_owns_only_data_and_var() -> None:
    uid = re.search(r"useradd --uid (\d+) .* chatbot\b", DOCKERFILE)
    assert uid and int(uid.group(1)) >= 1000
    assert "chown chatbot:chatbot /data /app/var" in DOCKERFILE
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users == ["chatbot:chatbot"] and DOCKERFILE.rindex("USER ") > DOCKERFILE.rindex("RUN ")


def test_the_image_bakes_in_no_secret_key() -> None:
    assert "var" in (ROOT / ".dockerignore").read_text().split()
    assert re.search(r"SECRET_KEY=\"\$\(python -c 'import secrets.*collectstatic", DOCKERFILE, re.S)


def lock_pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes), for each entry of a lock file."""
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)((?:\s+\\\n\s+--hash=sha256:[0-9a-f]{64})*)", (ROOT / lock).read_text(), re.M
    )
    return {name.lower(): (version, hashes.count("--hash=")) for name, version, hashes in entries}


def direct_requirements(path: str) -> list[Requirement]:
    lines = (ROOT / path).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith(("#", "-r"))]


@pytest.mark.parametrize(
    ("lock", "inputs"),
    [
        ("requirements.lock", ["requirements.txt"]),
        ("requirements-dev.lock", ["requirements.txt", "requirements-dev.txt"]),
        ("requirements-models.lock", ["requirements-models.txt"]),
    ],
)
def test_every_requirement_is_locked_to_one_version_with_hashes(lock: str, inputs: list[str]) -> None:
    pins = lock_pins(lock)
    assert pins and all(hashes for _, hashes in pins.values()), lock
    for requirement in (r for path in inputs for r in direct_requirements(path)):
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in {lock}: make lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), f"{name}: make lock"


def test_the_dev_lock_installs_the_versions_of_the_runtime_lock() -> None:
    runtime, dev = lock_pins("requirements.lock"), lock_pins("requirements-dev.lock")
    assert {name: dev[name] for name in runtime} == runtime


def test_the_makefile_installs_only_from_the_locks_with_hashes() -> None:
    commands = subprocess.run(
        ["make", "-n", "-B", ".venv/.installed-dev"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in commands.splitlines() if "pip install" in line]
    assert len(installs) == 3
    for line in installs:
        assert "--require-hashes" in line and re.search(r" -r requirements(-dev|-models)?\.lock\b", line), line


def test_the_image_installs_every_locked_package_but_torch_with_hashes(tmp_path: Path) -> None:
    unchecked = [line for line in re.findall(r"pip install .*", DOCKERFILE) if "--require-hashes" not in line]
    assert unchecked == ['pip install --index-url ${TORCH_INDEX} "torch==${torch_version}" \\']
    program = re.search(r"awk '([^']+)' requirements\.lock", DOCKERFILE)
    assert program
    filtered = subprocess.run(
        ["awk", program.group(1), str(ROOT / "requirements.lock")], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "without-torch.lock").write_text(filtered)
    pins = lock_pins("requirements.lock")
    del pins["torch"]
    assert lock_pins(str(tmp_path / "without-torch.lock")) == pins
    version = subprocess.run(
        ["sed", "-n", r"s/^torch==\([^+ ]*\).*/\1/p", str(ROOT / "requirements.lock")], capture_output=True, text=True
    ).stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


# `docker compose config` parses the file as Compose does (merge keys, interpolation, schema) and
# needs no Docker engine. Either client does: the compose plugin of `docker`, or `docker-compose`.


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


COMPOSE_CLIENT = compose_client()
needs_compose = pytest.mark.skipif(
    COMPOSE_CLIENT is None,
    reason="no compose client: neither `docker compose` nor `docker-compose` (apt-get install docker-compose)",
)


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CLIENT is not None
    # Only PATH and HOME from here: the settings the file reads come from ``env`` alone.
    environment = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    command = [*COMPOSE_CLIENT, "--file", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(command, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=60)


@needs_compose
def test_docker_compose_config_accepts_the_file_and_resolves_the_settings() -> None:
    result = compose("config", SECRET_KEY="from-the-environment", INFERENCE_DEVICE="cuda")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(COMPOSE["services"]) == set(resolved)
    for name in ("web", "inference", "celery", "migrate"):
        env = resolved[name]["environment"]
        assert env["SECRET_KEY"] == "from-the-environment", name
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"] == "redis://redis:6379/0", name
    assert resolved["inference"]["environment"]["INFERENCE_DEVICE"] == "cuda"
    assert resolved["web"]["environment"]["SECURE_SSL_REDIRECT"] == "true"
    assert "127.0.0.1" in str(resolved["web"]["ports"]) and "0.0.0.0" not in str(resolved["web"]["ports"])
    assert resolved["web"]["environment"]["WEB_PROCESSES"] == "0"  # one per core
    assert "chatbot.web" in str(resolved["web"]["command"])
    devices = resolved["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@needs_compose
def test_the_number_of_web_processes_is_set_from_the_environment() -> None:
    result = compose("config", SECRET_KEY="from-the-environment", WEB_PROCESSES="4")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["web"]["environment"]["WEB_PROCESSES"] == "4"


@needs_compose
def test_docker_compose_refuses_to_run_without_a_secret_key() -> None:
    result = compose("config", "--quiet")
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_the_vllm_profile_serves_generation_from_vllm_on_the_gpu_with_the_shared_adapters() -> None:
    services = COMPOSE["services"]
    server, worker = services["vllm"], services["inference-vllm"]
    assert server["profiles"] == ["vllm"] and worker["profiles"] == ["vllm"]
    assert server["image"].startswith("vllm/vllm-openai:")
    assert "--enable-lora" in server["command"]
    assert server["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # An adapter's path is the same file for the worker that names it and the server that loads it.
    assert worker["volumes"] == ["model-data:/data"] and server["volumes"] == ["model-data:/data:ro"]
    assert worker["environment"]["ADAPTERS_DIR"].startswith("/data/")
    assert worker["environment"]["INFERENCE_BACKEND"] == "vllm"
    assert worker["environment"]["VLLM_URL"] == "${VLLM_URL:-http://vllm:8000}"
    assert worker["depends_on"]["vllm"] == {"condition": "service_healthy"}
    assert "/health" in " ".join(server["healthcheck"]["test"])
    assert server["restart"] == worker["restart"] == "unless-stopped"


@needs_compose
def test_docker_compose_config_resolves_the_vllm_profile() -> None:
    result = compose("--profile", "vllm", "config", SECRET_KEY="from-the-environment")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert {"vllm", "inference-vllm", "inference"} <= set(resolved)
    assert resolved["inference-vllm"]["environment"]["VLLM_URL"] == "http://vllm:8000"
    assert "--model=/data/models/SmolLM2-135M-Instruct" in resolved["vllm"]["command"]
    # Started only with the profile (compose v1 lists them with it, v2 leaves them out).
    plain = yaml.safe_load(compose("config", SECRET_KEY="x").stdout)["services"]
    for name in ("vllm", "inference-vllm"):
        assert plain.get(name, {"profiles": ["vllm"]})["profiles"] == ["vllm"]
