"""The inference worker: ``loops`` (the worker's loops and their supervision) and ``replies``
(a reply's lifecycle). The Redis stream protocol is ``conversations.dispatch``; prompt building
is ``conversations.prompts``."""

from .loops import ConsumerNameTaken, InferenceWorker
from .replies import Reply

__all__ = ["ConsumerNameTaken", "InferenceWorker", "Reply"]
