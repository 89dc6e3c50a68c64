"""What every backend's end-to-end test checks of a plain reply: it streamed, and what streamed is
what was stored (the built-in engine's tests and the vLLM ones share it)."""

from __future__ import annotations

import asyncio

from conversations.models import Message

from .client import Exchange


async def streamed_and_stored(exchange: Exchange) -> Message:
    """The stored reply of ``exchange``, after checking it streamed in pieces and was kept whole."""
    done = exchange.done
    assert done["status"] == "complete" and done["text"].strip()
    assert len(exchange.deltas) >= 2, "the reply arrived in one piece instead of streaming"
    assert "".join(d["text"] for d in exchange.deltas) == done["text"]
    reply = await asyncio.to_thread(Message.objects.get, id=done["message_id"])
    assert reply.text == done["text"] and reply.status == "complete"
    assert reply.token_count > 0
    return reply
