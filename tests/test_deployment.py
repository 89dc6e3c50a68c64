"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.core.management import get_commands

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())


def test_it_defines_every_process_of_the_system() -> None:
    assert {"web", "inference", "celery", "redis", "postgres", "migrate"} <= set(COMPOSE["services"])


def test_the_inference_worker_reserves_an_nvidia_gpu() -> None:
    devices = COMPOSE["services"]["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_app_services_take_their_settings_from_the_environment() -> None:
    for name in ("web", "inference", "celery", "migrate"):
        env = COMPOSE["services"][name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "BASE_MODEL"} <= set(env), name


def test_the_commands_it_runs_exist() -> None:
    commands = get_commands()
    for name in ("inference", "migrate"):
        command = COMPOSE["services"][name]["command"]
        for managed in ("inference_worker", "prepare_model", "migrate"):
            if f"manage.py {managed}" in command:
                assert managed in commands
