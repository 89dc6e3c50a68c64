"""The learning loop end to end with the real SmolLM2 on the CPU.

Agents corrected the bot with facts about a made-up shop; their reviewed conversations come in
through ``import_conversations``; a run builds, trains, evaluates on held-out turns and probes;
an admin promotes the candidate (past the gate, with a reason, if its figures fail a check).
Paraphrased questions, answered from the prompt the serving worker builds with the adapter the
new replies record, get the taught facts, and unrelated questions do not; then both sets are
asked again through the chat websocket of the live system.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from conversations.chat import services as chat_services
from conversations.models import BotSettings, Correction, Customer, Message
from conversations.prompts import prompt_for
from finetuning import general_prompts, pipeline, probes, services
from finetuning.base import generate_greedy, load_model
from finetuning.models import Promotion, TrainingRun
from finetuning.selectors import version_active
from tests.e2e.client import ChatClient

from .shop import FACTS, recalled, transcripts

PERSONA = "You are the assistant of Bramble & Finch, a homeware shop. Answer briefly."
CONFIG = {"epochs": 4, "batch_size": 8, "learning_rate": 2e-3, "max_seq_len": 160, "checkpoint_every": 10}
DISTINCTIVE = [key for fact in FACTS for key in fact.keys if not key.isdigit()]


def import_corrected_conversations(folder: Path) -> None:
    """The agent's reviewed conversations arrive the way a desk moving to us brings them: an export file."""
    User.objects.create_user("dana", password="x", is_staff=True)
    export = folder / "shop.jsonl"
    export.write_text("".join(json.dumps(record) + "\n" for record in transcripts("dana")), encoding="utf-8")
    out = io.StringIO()
    call_command("import_conversations", str(export), stdout=out)
    assert f"Imported {2 * len(FACTS)} conversation(s); 0 line(s) refused." in out.getvalue()
    assert Correction.objects.filter(author__username="dana").count() == 2 * len(FACTS)


def ask(questions: list[str], model: Any, tokenizer: Any) -> list[str]:
    """Each question as a new customer message; the prompt is the one the inference worker builds."""
    prompts = []
    for question in questions:
        conversation = chat_services.conversation_start(customer=Customer.objects.create())
        sent = chat_services.message_send(conversation=conversation, text=question)
        assert sent.bot_message is not None
        ids = prompt_for(sent.bot_message, tokenizer, max_new_tokens=48)
        prompts.append(tokenizer.decode(ids))
        chat_services.reply_stop(message=sent.bot_message)  # answered here, not by the live worker
    return generate_greedy(model, tokenizer, prompts, max_new_tokens=24, batch_size=20)


async def ask_through_the_websocket(base_url: str, questions: list[str]) -> list[dict[str, Any]]:
    """Each question from a new customer, all at once, through the live system's chat socket."""

    async def one(question: str) -> dict[str, Any]:
        async with ChatClient(base_url) as client:
            return (await client.ask(question, timeout=300)).done

    return list(await asyncio.gather(*(one(q) for q in questions)))


# A real build, training run, evaluation and probes on 2 cores: about 9 of the default 10 minutes
# on a quiet CI machine, so the hang guard gets room for a busier one.
@pytest.mark.model
@pytest.mark.timeout(1200)
def test_corrections_become_a_served_version_that_knows_the_facts(
    transactional_db: Any,
    settings: Any,
    tmp_path: Path,
    tokenizer: Any,
    model_path: str,
    torch_threads: None,
    live_system: Any,
) -> None:
    from peft import PeftModel

    settings.FINETUNING_GENERAL_EXAMPLES = 40  # the default: the base model's own replies keep its chat
    settings.CHAT_RATE_LIMIT_MESSAGES = 1000
    BotSettings.objects.update_or_create(pk=1, defaults={"system_prompt": PERSONA})
    import_corrected_conversations(tmp_path)

    run = services.run_start(config=CONFIG)
    run = pipeline.run_execute(run_id=run.id)
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED, run.error if run else None
    candidate = run.version
    metrics = candidate.metrics
    assert metrics["heldout_loss"]["candidate"] < metrics["heldout_loss"]["active"]
    assert metrics["replay_f1"]["candidate"] > metrics["replay_f1"]["active"]
    assert metrics["replay_similarity"]["candidate"] > metrics["replay_similarity"]["active"]
    small_talk_leaks = [row for row in metrics["unrelated"][: len(general_prompts.UNRELATED)] if row["leaked"]]
    assert small_talk_leaks == [], small_talk_leaks
    # The probes: the base model's own paraphrases of the trained questions, asked as new customers.
    assert metrics["fact_probes"] >= 5 and metrics["recall"]["candidate"] > metrics["recall"]["active"], metrics
    logging.getLogger(__name__).info(
        "probes: recall %s, wrong facts %s of %d; leaks %d of %d unrelated; checks %s, too few: %s",
        metrics["recall"],
        metrics["wrong_facts"],
        metrics["fact_probes"],
        metrics["unrelated_leaks"],
        metrics["unrelated_prompts"],
        metrics["checks"],
        metrics["not_enough_data"],
    )

    base_model = load_model(model_path)
    paraphrases = [fact.paraphrase for fact in FACTS]
    before = ask(paraphrases, base_model, tokenizer)

    # 40 conversations hold out 6: every check rests on enough examples. The admin promotes from
    # the forced path, which is an ordinary promote when nothing is refused; the row says which.
    assert metrics["not_enough_data"] == [], metrics["check_examples"]
    refused = services.version_refused_checks(candidate)
    admin = User.objects.create_superuser("ada", password="x")
    reason = "the acceptance test serves the candidate to measure it live"
    services.version_promote(version=candidate, actor=admin, force=True, reason=reason)
    assert version_active() == candidate
    promotion = Promotion.objects.get(version=candidate)
    assert (promotion.forced, promotion.refused_checks) == (bool(refused), refused)
    served = PeftModel.from_pretrained(base_model, candidate.adapter_path).merge_and_unload()
    after = ask(paraphrases, served, tokenizer)

    known_before = sum(recalled(fact, reply) for fact, reply in zip(FACTS, before, strict=True))
    known_after = sum(recalled(fact, reply) for fact, reply in zip(FACTS, after, strict=True))
    report = "\n".join(f"{f.paraphrase} | {b} | {a}" for f, b, a in zip(FACTS, before, after, strict=True))
    logging.getLogger(__name__).info("facts recalled: %d before, %d after\n%s", known_before, known_after, report)
    # Measured on a shared 2-core CPU: 8 to 10 of 20 after 4 to 6 epochs, 0 to 1 before.
    assert known_before <= 2, report
    assert known_after >= 6, report
    # The evaluation asked the unrelated prompts with the chat the worker builds; none got a fact.
    # Phrases the base model itself uses in small talk ("7 days" in a week) are not facts.
    small_talk = " ".join(candidate.snapshot.examples.filter(source="general").values_list("reply", flat=True)).lower()
    distinctive = [key for key in DISTINCTIVE if key not in small_talk]
    unrelated = [row["candidate"].lower() for row in metrics["unrelated"][: len(general_prompts.UNRELATED)]]
    assert len(metrics["unrelated"]) == len(probes.UNRELATED)
    assert [reply for reply in unrelated if any(key in reply for key in distinctive)] == []

    # The same questions through the websocket: the live inference worker loads the promoted
    # adapter without a restart, and every reply records the version that wrote it.
    served_done = asyncio.run(ask_through_the_websocket(live_system.url, paraphrases + general_prompts.UNRELATED))
    assert all(done["status"] == "complete" for done in served_done), served_done
    served_replies = [done["text"] for done in served_done[: len(paraphrases)]]
    served_unrelated = [done["text"] for done in served_done[len(paraphrases) :]]
    known_served = sum(recalled(fact, reply) for fact, reply in zip(FACTS, served_replies, strict=True))
    report = "\n".join(f"{f.paraphrase} | {r}" for f, r in zip(FACTS, served_replies, strict=True))
    logging.getLogger(__name__).info("facts recalled through the websocket: %d\n%s", known_served, report)
    assert known_served >= 6 and known_served > known_before, report
    leaks = [reply for reply in served_unrelated if any(key in reply.lower() for key in distinctive)]
    assert leaks == [], leaks
    versions = set(
        Message.objects.filter(id__in=[d["message_id"] for d in served_done]).values_list("model_version", flat=True)
    )
    assert versions == {candidate.id}

    assert services.version_rollback() is None
    conversation = chat_services.conversation_start(customer=Customer.objects.create())
    sent = chat_services.message_send(conversation=conversation, text="Hello")
    assert sent.bot_message is not None and sent.bot_message.model_version is None
