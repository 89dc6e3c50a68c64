"""The inference worker: ``loops`` (the worker's loops and their supervision), ``replies`` (a
reply's lifecycle, which publishes after each save) and ``services`` (the worker's writes). The
Redis stream protocol is ``conversations.dispatch``; prompt building is ``conversations.prompts``."""

from .loops import ConsumerNameTaken, InferenceWorker
from .replies import Reply

__all__ = ["ConsumerNameTaken", "InferenceWorker", "Reply"]
