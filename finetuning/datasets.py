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
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from conversations.models import BotSettings, Conversation, Correction, Feedback, Message
from conversations.prompts import Reference, Turn, control_strings, neutralise, system_prompt_with

from . import conf, general_prompts
from .models import DatasetSnapshot, Example, TrainingSettings
from .redaction import Pattern, admin_patterns, redact
from .rendering import Rendered, Renderer

log = logging.getLogger(__name__)

Source = Example.Source

# Rewordings of the given questions, a list per question, unfiltered: the base model's, or a test's.
Rephrase = Callable[[Sequence[str]], list[list[str]]]
# What a candidate's prompt carries (RAFT): its own entry among others, only others, or none.
WITH_ANSWER, DISTRACTORS, NO_REFERENCES = "answer", "distractors", ""
# The sources an entry of the knowledge base is made from: a person's answer to a question.
TAUGHT = (Source.CORRECTION, Source.AGENT)


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
    split: str = Example.Split.TRAIN
    augmentation: dict[str, Any] = field(default_factory=dict)
    references: list[Reference] = field(default_factory=list)

    @property
    def question(self) -> str:
        """The customer's turn this reply answers."""
        return next((turn.text for turn in reversed(self.history) if turn.role == "customer"), "")


@dataclass
class BuildOptions:
    system_prompt: str
    max_seq_len: int = 384
    allow_customer_feedback_alone: bool = False
    max_examples_per_customer: int = 20
    heldout_fraction: float = 0.2
    general_examples: int = 40
    extra_patterns: list[Pattern] = field(default_factory=list)
    paraphrases: int = 0
    paraphrase_max_questions: int = 400
    paraphrase_min_similarity: float = 0.6
    raft_with_answer: float = 0.0
    raft_distractors_only: float = 0.0
    references_top_k: int = 3
    seed: int = 0


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
        paraphrases=conf.paraphrases(),
        paraphrase_max_questions=conf.paraphrase_max_questions(),
        paraphrase_min_similarity=conf.paraphrase_min_similarity(),
        raft_with_answer=conf.raft_with_answer(),
        raft_distractors_only=conf.raft_distractors_only(),
        references_top_k=int(settings.KNOWLEDGE_TOP_K),
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


def content_hash(examples: Iterable[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        record = [example.source, example.split, example.prompt, example.completion, example.rejected]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


def preference_triples(rows: Iterable[tuple[str, str, str, str]], tokenizer: Any) -> list[tuple[str, str, str]]:
    """(prompt, completion, reply, rejected) rows → (prompt, chosen, rejected completion), the
    rejected reply given the chosen one's end-of-turn markup, neutralised as the completion is."""
    control = control_strings(tokenizer)
    triples = []
    for prompt, completion, reply, rejected in rows:
        chosen = neutralise(reply, control)
        markup = completion[len(chosen) :] if completion.startswith(chosen) else tokenizer.eos_token or ""
        triples.append((prompt, completion, neutralise(rejected, control) + markup))
    return triples


def general_candidates(replies: Sequence[tuple[str, str]]) -> list[Candidate]:
    return [
        Candidate(Source.GENERAL, "", "", [Turn("customer", prompt)], reply, [])
        for prompt, reply in replies
        if reply.strip()
    ]


def snapshot_build(
    *,
    tokenizer: Any,
    options: BuildOptions,
    general_replies: Sequence[tuple[str, str]] = (),
    rephrase: Rephrase | None = None,
) -> DatasetSnapshot:
    """Collect, cap, split, add phrasings, add references, render and store one snapshot with its
    counts and content hash. ``rephrase``: the base model's rewordings (none without it)."""
    candidates, skipped, conversations_used = collect_candidates(options)
    candidates, capped = cap_per_customer(candidates, options.max_examples_per_customer)
    skipped += capped
    candidates.reverse()  # oldest first: the order conversations happened in
    for candidate in candidates:
        # By conversation and before any phrasing: every phrasing of one stays on its side.
        candidate.split = split_of(candidate.conversation_id, options.heldout_fraction)
    candidates, phrasings = with_phrasings(candidates, options, rephrase)
    candidates += general_candidates(general_replies[: options.general_examples])
    references = add_references(candidates, options)
    renderer = Renderer(tokenizer, system_prompt=options.system_prompt, max_seq_len=options.max_seq_len)
    examples = []
    for candidate in candidates:
        system_prompt = system_prompt_with(options.system_prompt, candidate.references)
        rendered = renderer.render(candidate.history, candidate.reply, system_prompt=system_prompt)
        if rendered is None:
            skipped["too_long"] += 1
            continue
        examples.append(example_of(candidate, rendered))
    counts = {
        "examples": len(examples),
        "by_source": dict(Counter(e.source for e in examples)),
        "by_split": dict(Counter(e.split for e in examples)),
        "pairs": sum(1 for e in examples if e.rejected),
        "conversations": conversations_used,
        "skipped": dict(skipped),
        "phrasings": phrasings,
        "references": references,
    }
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.create(
            content_hash=content_hash(examples), counts=counts, params=build_params(options)
        )
        for example in examples:
            example.snapshot = snapshot
        Example.objects.bulk_create(examples, batch_size=500)
    log.info("dataset snapshot %s: %s", snapshot.pk, counts)
    return snapshot


def example_of(candidate: Candidate, rendered: Rendered) -> Example:
    return Example(
        source=candidate.source,
        split=candidate.split,
        chat=rendered.chat,
        prompt=rendered.prompt,
        completion=rendered.completion,
        reply=candidate.reply,
        rejected=candidate.rejected,
        conversation_id=candidate.conversation_id,
        customer_id=candidate.customer_id,
        message_ids=candidate.message_ids,
        augmentation=candidate.augmentation,
    )


def build_params(options: BuildOptions) -> dict[str, Any]:
    """The settings a build used, stored with it."""
    return {
        "max_seq_len": options.max_seq_len,
        "allow_customer_feedback_alone": options.allow_customer_feedback_alone,
        "max_examples_per_customer": options.max_examples_per_customer,
        "heldout_fraction": options.heldout_fraction,
        "general_examples": options.general_examples,
        "system_prompt": options.system_prompt,
        "redaction_patterns": len(options.extra_patterns),
        "paraphrases": options.paraphrases,
        "paraphrase_min_similarity": options.paraphrase_min_similarity,
        "raft_with_answer": options.raft_with_answer,
        "raft_distractors_only": options.raft_distractors_only,
        "references_top_k": options.references_top_k,
    }


def asked_again(history: Sequence[Turn], question: str) -> list[Turn]:
    """``history`` with its last customer turn in other words: the turns before it are kept."""
    last = max(i for i, turn in enumerate(history) if turn.role == "customer")
    return [*history[:last], Turn("customer", question), *history[last + 1 :]]


def with_phrasings(
    candidates: list[Candidate], options: BuildOptions, rephrase: Rephrase | None
) -> tuple[list[Candidate], dict[str, Any]]:
    """Each correction followed by its question in other words (the base model's, kept when MiniLM
    maps them back to the same answer among every question of the build), same reply, same
    conversation, same split, same rejected reply. What was generated and kept, counted."""
    from .paraphrases import retrieval_kept

    reworded = [c for c in candidates if c.source == Source.CORRECTION][-options.paraphrase_max_questions :]
    if options.paraphrases <= 0 or rephrase is None or not reworded:
        return candidates, {"per_question": 0, "questions": 0, "drafts": 0, "kept": 0}
    drafts = dict(zip(map(id, reworded), rephrase([c.question for c in reworded]), strict=True))
    searched = [c for c in candidates if c.source in TAUGHT or id(c) in drafts]
    kept = retrieval_kept(
        [c.question for c in searched],
        [c.reply for c in searched],
        [drafts.get(id(c), []) for c in searched],
        minimum=options.paraphrase_min_similarity,
    )
    phrasings = {id(c): texts for c, texts in zip(searched, kept, strict=True) if id(c) in drafts}
    result: list[Candidate] = []
    for candidate in candidates:
        result.append(candidate)
        if id(candidate) not in phrasings:
            continue
        candidate.augmentation["phrasings"] = len(phrasings[id(candidate)])
        result += [
            Candidate(
                Source.PARAPHRASE,
                candidate.conversation_id,
                candidate.customer_id,
                asked_again(candidate.history, text),
                candidate.reply,
                candidate.message_ids,
                rejected=candidate.rejected,
                address=candidate.address,
                split=candidate.split,
                augmentation={"phrasing_of": candidate.question},
            )
            for text in phrasings[id(candidate)]
        ]
    per_question = Counter(len(texts) for texts in phrasings.values())
    return result, {
        "per_question": options.paraphrases,
        "questions": len(reworded),
        "drafts": sum(len(texts) for texts in drafts.values()),
        "kept": sum(len(texts) for texts in phrasings.values()),
        "questions_by_phrasings": {str(n): per_question[n] for n in sorted(per_question)},
    }


def add_references(candidates: Sequence[Candidate], options: BuildOptions) -> dict[str, int]:
    """RAFT: a share of the training examples carries retrieved entries after the system prompt,
    built as serving builds them. With the answer: its own entry among the nearest other entries,
    so the adapter learns to use the right reference. Distractors only: the nearest other entries,
    the reply still the taught one (or, for small talk, the model's own), so it learns to answer
    from what it learnt and never to copy a reference that does not answer. Held-out examples
    carry none: they measure the adapter alone. How many examples got which, counted."""
    if options.raft_with_answer <= 0 and options.raft_distractors_only <= 0:
        return {}
    entries = knowledge_entries(candidates)
    training = [c for c in candidates if c.split == Example.Split.TRAIN]
    if len(entries) < 2 or not training:
        return {}
    rng = random.Random(options.seed)
    plans = [(c, reference_kind(c, rng.random(), options)) for c in training]
    planned = [(c, kind) for c, kind in plans if kind != NO_REFERENCES]
    if not planned:
        return {}
    vectors = embed_in_chunks([q for q, _ in entries] + [c.question for c, _ in planned])  # (n + m, 384)
    by_entry = vectors[: len(entries)]
    made: Counter[str] = Counter()
    for row, (candidate, kind) in zip(vectors[len(entries) :], planned, strict=True):
        scores = [float(score) for score in by_entry @ row]
        candidate.references = nearest_references(entries, scores, candidate.reply, kind, options.references_top_k)
        if candidate.references:
            candidate.augmentation |= {"references": kind, "entries": len(candidate.references)}
            made[kind] += 1
    return dict(made)


def knowledge_entries(candidates: Sequence[Candidate]) -> list[tuple[str, str]]:
    """What the knowledge base would hold from this build: each training question a person
    answered, with the answer (one entry per distinct answer and question)."""
    seen: dict[tuple[str, str], None] = {}
    for candidate in candidates:
        if candidate.source in TAUGHT and candidate.split == Example.Split.TRAIN and candidate.question:
            seen.setdefault((candidate.question, candidate.reply), None)
    return list(seen)


def reference_kind(candidate: Candidate, draw: float, options: BuildOptions) -> str:
    """Which references ``candidate`` carries, from one uniform ``draw``: taught replies get their
    own entry or distractors, other replies (general, rated good) distractors only."""
    taught = candidate.source in (*TAUGHT, Source.PARAPHRASE)
    if taught and draw < options.raft_with_answer:
        return WITH_ANSWER
    threshold = options.raft_with_answer if taught else 0.0
    if draw < threshold + options.raft_distractors_only:
        return DISTRACTORS
    return NO_REFERENCES


def nearest_references(
    entries: Sequence[tuple[str, str]], scores: Sequence[float], reply: str, kind: str, top_k: int
) -> list[Reference]:
    """Up to ``top_k`` entries best first, as retrieval ranks them: the reply's own entry (the
    nearest with that answer) and the nearest with other answers, or those others alone."""
    key = " ".join(reply.split()).lower()
    order = sorted(range(len(entries)), key=lambda i: -scores[i])
    own = [i for i in order if " ".join(entries[i][1].split()).lower() == key][:1]
    others = [i for i in order if " ".join(entries[i][1].split()).lower() != key]
    if kind == WITH_ANSWER and not own:
        return []
    chosen = own + others[: top_k - 1] if kind == WITH_ANSWER else others[:top_k]
    chosen.sort(key=lambda i: -scores[i])
    return [Reference(i, entries[i][0], entries[i][1], round(scores[i], 4)) for i in chosen]


def embed_in_chunks(texts: Sequence[str], size: int = 128) -> Any:
    """MiniLM unit rows for many texts, a batch at a time: one padded batch of thousands is slow."""
    import torch

    from .similarity import embed

    return torch.cat([embed(texts[i : i + size]) for i in range(0, len(texts), size)])


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


def model_rephrase(
    *, model_path: str, tokenizer: Any, per_question: int, load: Callable[[], Any], seed: int = 0
) -> Rephrase:
    """The base model's rewordings of a build's questions (``paraphrases.training_drafts``), kept
    on disk per question: a retrain words again only the questions it has not seen, so the build's
    time grows with what agents taught since the last one, not with everything they ever taught."""
    from .paraphrases import FEW_SHOT, training_drafts

    recipe = [model_path, per_question, seed, FEW_SHOT]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    path = conf.cache_dir() / f"rewordings-{key}.json"

    def rephrase(questions: Sequence[str]) -> list[list[str]]:
        known: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}
        missing = sorted({q for q in questions if q not in known})
        if missing:
            drafts = training_drafts(load(), tokenizer, missing, per_question=per_question, seed=seed)
            known |= dict(zip(missing, drafts, strict=True))
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(json.dumps(known, ensure_ascii=False, indent=1))
            staging.replace(path)
        return [list(known[q]) for q in questions]

    return rephrase
