"""The one error the chat's writes refuse with, for both sockets and the agents' views."""

from __future__ import annotations


class ChatError(Exception):
    """A request the chat refuses, with a stable code for clients (docs/protocol.md)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
