"""Fixtures for the learning loop: an agent and an admin, conversation factories, and private
folders for adapters, checkpoints and caches so tests never touch var/."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from conversations.models import Conversation, Correction, Customer, Feedback, Message

# The tests share two cores with whatever else runs: torch's default would oversubscribe them.
TORCH_THREADS = 2


@pytest.fixture(autouse=True)
def _private_folders(settings: Any, tmp_path: Path) -> None:
    settings.ADAPTERS_DIR = tmp_path / "adapters"
    settings.FINETUNING_CHECKPOINTS_DIR = str(tmp_path / "checkpoints")


@pytest.fixture
def agent(db: Any) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("agnes", password="x", is_staff=True)


@pytest.fixture
def admin_user(db: Any) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_superuser("ada", password="x")


def chat(
    customer: Customer,
    turns: Sequence[tuple[str, str]],
    *,
    reviewed: bool = True,
    exclude: bool = False,
) -> list[Message]:
    """A conversation from (role, text) pairs; returns its messages in order."""
    conversation = Conversation.objects.create(customer=customer, reviewed=reviewed, exclude_from_training=exclude)
    return [Message.objects.create(conversation=conversation, role=role, text=text) for role, text in turns]


def rate(message: Message, *, positive: bool, source: str = "customer") -> Feedback:
    return Feedback.objects.create(message=message, source=source, positive=positive)


def correct(message: Message, text: str) -> Correction:
    return Correction.objects.create(message=message, text=text)


@pytest.fixture(scope="session")
def model_path() -> str:
    from finetuning.base import base_model_path

    return base_model_path()


@pytest.fixture(scope="session")
def tokenizer(model_path: str) -> Any:
    from finetuning.base import load_tokenizer

    return load_tokenizer(model_path)


@pytest.fixture(scope="session")
def torch_threads() -> None:
    import torch

    torch.set_num_threads(TORCH_THREADS)


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Each call in a thread of its own (its own database connection), released together by a
    barrier; their results, or the exceptions they raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except Exception as error:  # noqa: BLE001 - the race's loser is part of the result
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results
