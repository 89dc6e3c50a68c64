"""Stored conversations → a frozen dataset snapshot of training examples.

Each example is the context before a reply → the reply, rendered with the base model's own chat
template through ``conversations.prompts.build_chat``, the function the inference worker uses, so
what the model trains on is exactly what it will see when serving. Text is redacted first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from conversations.models import BotSettings, Conversation, Correction, Feedback, Message
from conversations.prompts import Turn, build_chat, control_strings, neutralise

from . import conf, general_prompts
from .models import DatasetSnapshot, Example, TrainingSettings
from .redaction import Pattern, admin_patterns, redact

log = logging.getLogger(__name__)

Source = Example.Source


@dataclass
class Candidate:
    """A reply worth learning, before rendering: its context, its text, where it came from."""

    source: str
    conversation_id: str
    customer_id: str
    history: list[Turn]
    reply: str
    message_ids: list[int]
    rejected: str = ""
    address: str = ""  # where the customer was first seen from; empty: counted on their own


@dataclass
class BuildOptions:
    system_prompt: str
    max_seq_len: int = 384
    allow_customer_feedback_alone: bool = False
    max_examples_per_customer: int = 20
    heldout_fraction: float = 0.2
    general_examples: int = 40
    extra_patterns: list[Pattern] = field(default_factory=list)


def options_from_settings(*, max_seq_len: int = 384) -> BuildOptions:
    admin = TrainingSettings.load()
    return BuildOptions(
        system_prompt=BotSettings.load().system_prompt or settings.DEFAULT_SYSTEM_PROMPT,
        max_seq_len=max_seq_len,
        allow_customer_feedback_alone=admin.allow_customer_feedback_alone,
        max_examples_per_customer=admin.max_examples_per_customer,
        heldout_fraction=admin.heldout_fraction,
        general_examples=conf.general_examples(),
        extra_patterns=admin_patterns(),
    )


def _verdicts(message: Message) -> dict[str, bool]:
    return {feedback.source: feedback.positive for feedback in message.feedback.all()}


def _correction(message: Message) -> Correction | None:
    try:
        return message.correction
    except Correction.DoesNotExist:
        return None


def good_verdict(verdicts: dict[str, bool], *, customer_alone: bool) -> bool | None:
    """Whether a bot reply is a good or a bad example; None when it is neither. An agent's rating
    decides; a customer's counts only where the admin allows customer feedback alone, or a customer
    could steer the bot, approve its replies and wait for them to be trained on."""
    if Feedback.Source.AGENT in verdicts:
        return verdicts[Feedback.Source.AGENT]
    return verdicts.get(Feedback.Source.CUSTOMER) if customer_alone else None


def conversation_candidates(
    conversation: Conversation,
    messages: Iterable[Message],
    *,
    clean: Callable[[str], str],
    customer_alone: bool = False,
) -> tuple[list[Candidate], Counter[str]]:
    """Walk one conversation in order; corrections replace the bot reply they correct in the context."""
    candidates: list[Candidate] = []
    skipped: Counter[str] = Counter()
    history: list[Turn] = []
    ids: list[int] = []

    def take(source: str, message: Message, reply: str, rejected: str = "") -> None:
        if not any(turn.role == "customer" for turn in history):
            skipped["no_question_before"] += 1
            return
        candidates.append(
            Candidate(
                source=source,
                conversation_id=str(conversation.id),
                customer_id=str(conversation.customer_id),
                address=conversation.customer.address or "",
                history=list(history),
                reply=reply,
                message_ids=[*ids, message.id],
                rejected=rejected,
            )
        )

    for message in messages:
        if message.status != Message.Status.COMPLETE or not message.text.strip():
            continue
        if message.role == Message.Role.CUSTOMER:
            history.append(Turn("customer", clean(message.text)))
        elif message.role == Message.Role.AGENT:
            take(Source.AGENT, message, clean(message.text))
            history.append(Turn("agent", clean(message.text)))
        elif message.role == Message.Role.BOT:
            correction = _correction(message)
            text = clean(correction.text if correction else message.text)
            if correction is not None:
                take(Source.CORRECTION, message, text, rejected=clean(message.text))
            else:
                verdicts = _verdicts(message)
                verdict = good_verdict(verdicts, customer_alone=customer_alone)
                if verdict is True:
                    take(Source.BOT_GOOD, message, text)
                elif verdict is False:
                    skipped["bad_without_correction"] += 1
                elif Feedback.Source.CUSTOMER in verdicts:
                    skipped["customer_rating_only"] += 1
            history.append(Turn("bot", text))
        else:
            continue
        ids.append(message.id)
    return candidates, skipped


def collect_candidates(options: BuildOptions) -> tuple[list[Candidate], Counter[str], int]:
    """Every reply worth learning from the conversations the rules let in, newest conversation first."""
    skipped: Counter[str] = Counter()
    candidates: list[Candidate] = []
    conversations = (
        Conversation.objects.order_by("-created_at")
        .select_related("customer")
        .prefetch_related("messages__feedback", "messages__correction")
    )
    used = 0
    for conversation in conversations:
        if conversation.exclude_from_training:
            skipped["excluded_conversations"] += 1
            continue
        if not conversation.reviewed and not options.allow_customer_feedback_alone:
            skipped["unreviewed_conversations"] += 1
            continue
        found, why = conversation_candidates(
            conversation,
            conversation.messages.all(),
            clean=lambda text: redact(text, options.extra_patterns),
            customer_alone=options.allow_customer_feedback_alone,
        )
        if not conversation.reviewed:
            # Without an agent's review only what the customer liked counts, nothing an agent made.
            found = [c for c in found if c.source == Source.BOT_GOOD]
        candidates += found
        skipped += why
        used += 1 if found else 0
    return candidates, skipped, used


def cap_per_customer(candidates: Sequence[Candidate], limit: int) -> tuple[list[Candidate], Counter[str]]:
    """At most ``limit`` examples from any one customer, and from all the customers first seen from
    one address (a new cookie makes a new customer, not a new address), keeping the newest
    (candidates come newest first). What was left out, by which cap."""
    by_customer: defaultdict[str, int] = defaultdict(int)
    by_address: defaultdict[str, int] = defaultdict(int)
    kept = []
    capped: Counter[str] = Counter()
    for candidate in candidates:
        if by_customer[candidate.customer_id] >= limit:
            capped["over_customer_cap"] += 1
            continue
        if candidate.address and by_address[candidate.address] >= limit:
            capped["over_address_cap"] += 1
            continue
        by_customer[candidate.customer_id] += 1
        if candidate.address:
            by_address[candidate.address] += 1
        kept.append(candidate)
    return kept, capped


def split_of(conversation_id: str, heldout_fraction: float) -> str:
    """A stable split by conversation, so no conversation leaks from training into evaluation."""
    bucket = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return Example.Split.HELDOUT if bucket < heldout_fraction else Example.Split.TRAIN


@dataclass
class Rendered:
    chat: list[dict[str, str]]
    prompt: str
    completion: str


class Renderer:
    """Renders a context and a reply with the tokenizer's chat template, as the worker does."""

    def __init__(self, tokenizer: Any, *, system_prompt: str, max_seq_len: int) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_seq_len = max_seq_len

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_for(self, history: Sequence[Turn]) -> str:
        """The templated prompt alone, ending where the assistant's reply starts."""
        chat = build_chat(
            system_prompt=self.system_prompt,
            history=history,
            count_tokens=self.count,
            budget_tokens=self.max_seq_len,
            control=control_strings(self.tokenizer),
        )
        return str(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))

    def render(self, history: Sequence[Turn], reply: str) -> Rendered | None:
        control = control_strings(self.tokenizer)
        reply = neutralise(reply, control)  # the completion is trained on too: as inert as the prompt
        reply_tokens = self.count(reply)
        budget = self.max_seq_len - reply_tokens - 8
        if reply_tokens > self.max_seq_len // 2 or budget <= 0:
            return None
        chat = build_chat(
            system_prompt=self.system_prompt,
            history=history,
            count_tokens=self.count,
            budget_tokens=budget,
            control=control,
        )
        prompt = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        full = self.tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": reply}], tokenize=False)
        completion = full[len(prompt) :] if full.startswith(prompt) else reply + (self.tokenizer.eos_token or "")
        return Rendered(chat, prompt, completion)


def content_hash(examples: Iterable[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        record = [example.source, example.split, example.prompt, example.completion, example.rejected]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


def general_candidates(replies: Sequence[tuple[str, str]]) -> list[Candidate]:
    return [
        Candidate(Source.GENERAL, "", "", [Turn("customer", prompt)], reply, [])
        for prompt, reply in replies
        if reply.strip()
    ]


def snapshot_build(
    *, tokenizer: Any, options: BuildOptions, general_replies: Sequence[tuple[str, str]] = ()
) -> DatasetSnapshot:
    """Collect, cap, split, render and store one snapshot with its counts and content hash."""
    candidates, skipped, conversations_used = collect_candidates(options)
    candidates, capped = cap_per_customer(candidates, options.max_examples_per_customer)
    skipped += capped
    candidates.reverse()  # oldest first: the order conversations happened in
    candidates += general_candidates(general_replies[: options.general_examples])
    renderer = Renderer(tokenizer, system_prompt=options.system_prompt, max_seq_len=options.max_seq_len)
    examples = []
    for candidate in candidates:
        rendered = renderer.render(candidate.history, candidate.reply)
        if rendered is None:
            skipped["too_long"] += 1
            continue
        split = split_of(candidate.conversation_id, options.heldout_fraction) if candidate.conversation_id else "train"
        examples.append(
            Example(
                source=candidate.source,
                split=split,
                chat=rendered.chat,
                prompt=rendered.prompt,
                completion=rendered.completion,
                reply=candidate.reply,
                rejected=candidate.rejected,
                conversation_id=candidate.conversation_id,
                customer_id=candidate.customer_id,
                message_ids=candidate.message_ids,
            )
        )
    counts = {
        "examples": len(examples),
        "by_source": dict(Counter(e.source for e in examples)),
        "by_split": dict(Counter(e.split for e in examples)),
        "pairs": sum(1 for e in examples if e.rejected),
        "conversations": conversations_used,
        "skipped": dict(skipped),
    }
    params = {
        "max_seq_len": options.max_seq_len,
        "allow_customer_feedback_alone": options.allow_customer_feedback_alone,
        "max_examples_per_customer": options.max_examples_per_customer,
        "heldout_fraction": options.heldout_fraction,
        "general_examples": options.general_examples,
        "system_prompt": options.system_prompt,
        "redaction_patterns": len(options.extra_patterns),
    }
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.create(content_hash=content_hash(examples), counts=counts, params=params)
        for example in examples:
            example.snapshot = snapshot
        Example.objects.bulk_create(examples, batch_size=500)
    log.info("dataset snapshot %s: %s", snapshot.pk, counts)
    return snapshot


def whole_sentences(text: str) -> str:
    """A reply cut by the token limit, back to its last full sentence, each sentence once: never
    teach stopping mid-word or the loops greedy decoding falls into."""
    end = max(text.rfind(mark) for mark in ".!?")
    text = text[: end + 1] if end > 0 else text
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if sentence and sentence not in kept:
            kept.append(sentence)
    return " ".join(kept)


def general_replies(
    *,
    model_path: str,
    tokenizer: Any,
    system_prompt: str,
    count: int = len(general_prompts.GENERAL),
    max_new_tokens: int = 48,
    load: Callable[[], Any] | None = None,
) -> list[tuple[str, str]]:
    """The base model's own replies to the first ``count`` general prompts, generated once per model
    and persona and cached: the persona shapes the replies, so it is part of the key."""
    prompts = general_prompts.GENERAL[:count]
    penalty = settings.GENERATION_REPETITION_PENALTY  # as the worker samples
    recipe = [model_path, system_prompt, prompts, max_new_tokens, penalty]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    path = conf.cache_dir() / f"general-replies-{key}.json"
    if path.exists():
        return [(prompt, reply) for prompt, reply in json.loads(path.read_text())]
    from . import base

    model = load() if load else base.load_model(model_path)
    renderer = Renderer(tokenizer, system_prompt=system_prompt, max_seq_len=10_000)
    templated = [renderer.prompt_for([Turn("customer", p)]) for p in prompts]
    replies = base.generate_greedy(
        model, tokenizer, templated, max_new_tokens=max_new_tokens, batch_size=16, repetition_penalty=penalty
    )
    pairs = list(zip(prompts, (whole_sentences(reply) for reply in replies), strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(pairs, ensure_ascii=False, indent=1))
    staging.replace(path)
    return pairs
