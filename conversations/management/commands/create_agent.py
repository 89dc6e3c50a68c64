"""python manage.py create_agent USERNAME: a support agent who can sign in to /agent/."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from conversations.roles import AGENT_GROUP


class Command(BaseCommand):
    help = "Create an agent: a user in the 'agents' group. The password is prompted, or read from a file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password-file", type=Path, help="Read the password from the first line of this file.")
        parser.add_argument("--email", default="")
        parser.add_argument("--first-name", default="", help="The name customers see when this agent talks to them.")

    def handle(
        self, *args: Any, username: str, password_file: Path | None, email: str, first_name: str, **options: Any
    ) -> None:
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = read_password(password_file) if password_file else prompt_password()
        user = User(username=username, email=email, first_name=first_name)
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        with transaction.atomic():
            user.set_password(password)
            user.save()
            group, _ = Group.objects.get_or_create(name=AGENT_GROUP)
            user.groups.add(group)
        self.stdout.write(self.style.SUCCESS(f"Agent {username!r} created; they can sign in at /accounts/login/."))


def read_password(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror}") from None
    if not lines or not lines[0]:
        raise CommandError(f"{path} is empty: its first line must be the password.")
    return lines[0]


def prompt_password() -> str:
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Password (again): "):
        raise CommandError("The two passwords differ.")
    return password
