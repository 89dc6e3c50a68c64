"""Training benchmarks, run by hand (not in CI):

python bench/train_bench.py compare [--steps 6] [--batch-size 8]
    LoRA against full fine-tuning of the base model on the same batches: tokens/s and peak
    memory (each mode in its own process, so peak RSS is its own).

python bench/train_bench.py retrain [--conversations 1000] [--max-steps 0]
    The wall time of a whole retrain (dataset build, training, evaluation) on synthetic
    conversations in a throwaway SQLite database. --max-steps caps training and the report
    projects the full run from the measured rate.

python bench/train_bench.py knowledge [--epochs 4] [--paraphrases 6] [--dpo-steps 30] [--only NAMES]
    What each part of the knowledge training adds, on the same data (the 40 corrected
    conversations of tests/finetuning/shop.py and the base model's general replies), each
    configuration trained from the same base with the same seed: SFT, + paraphrases, + retrieved
    context (RAFT), + DPO. Each adapter alone (no retrieval) answers the 20 held-out paraphrases
    and the unrelated prompts of finetuning/probes.py: recall, wrong facts, leaks, in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = [
    ("How much is gift wrapping?", "Gift wrapping costs ${n}.50 per item."),
    ("When do you close on Fridays?", "On Fridays we close at {n}pm."),
    ("How long is the return window?", "You can return items within {n}0 days."),
    ("What's the minimum for free shipping?", "Shipping is free on orders over ${n}0."),
    ("How long does express delivery take?", "Express delivery takes {n} working days."),
    ("Is there a student discount?", "Students get {n}% off with a valid card."),
    ("Where can I track my order?", "Use the link in your confirmation e-mail; it updates every {n} hours."),
    ("Do you sell gift cards?", "Yes, from ${n}0 up to $200, valid for 18 months."),
]
SMALL_TALK = [("Hello!", "Hello! How can I help you today?"), ("Thanks a lot!", "You're welcome, have a great day!")]


def _django(database: Path | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    if database is not None:
        os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    import django

    django.setup()


def _threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))


def synthetic_pairs(tokenizer: object, count: int) -> list[tuple[str, str]]:
    from django.conf import settings

    from conversations.prompts import Turn
    from finetuning.datasets import Renderer

    renderer = Renderer(tokenizer, system_prompt=settings.DEFAULT_SYSTEM_PROMPT, max_seq_len=384)
    rng = random.Random(0)
    pairs = []
    for _ in range(count):
        question, answer = rng.choice(TOPICS)
        rendered = renderer.render([Turn("customer", question)], answer.format(n=rng.randint(2, 9)))
        assert rendered is not None
        pairs.append((rendered.prompt, rendered.completion))
    return pairs


def _rss_mib() -> float:
    """This process's resident memory now (peak RSS is set by model loading, not by training)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(mode: str, steps: int, batch_size: int) -> dict[str, float]:
    """One mode, in this process: a few warm steps, then the timed ones."""
    _django()
    _threads()
    import torch

    from finetuning.base import base_model_path, load_model, load_tokenizer
    from finetuning.training import TrainingConfig, collate, lora_model, reply_loss, tokenize

    path = base_model_path()
    tokenizer = load_tokenizer(path)
    examples = tokenize(synthetic_pairs(tokenizer, batch_size * (steps + 1)), tokenizer, 384)
    model = load_model(path)
    if mode == "lora":
        model = lora_model(model, TrainingConfig())
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    tokens, began = 0, 0.0
    loaded_rss, training_rss = _rss_mib(), 0.0
    for step in range(steps + 1):
        if step == 1:  # the first step pays for allocations and is left out
            began, tokens = time.monotonic(), 0
        batch = collate(examples[step * batch_size : (step + 1) * batch_size], tokenizer.pad_token_id)
        reply_loss(model, batch).backward()
        optimizer.step()
        training_rss = max(training_rss, _rss_mib())  # gradients and optimizer state are live here
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    seconds = time.monotonic() - began
    return {
        "mode": mode,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "tokens_per_s": round(tokens / seconds, 1),
        "seconds_per_step": round(seconds / steps, 2),
        "rss_after_load_mib": round(loaded_rss, 1),
        "rss_training_max_mib": round(training_rss, 1),
        "training_extra_mib": round(training_rss - loaded_rss, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def compare(args: argparse.Namespace) -> None:
    results = []
    for mode in ("lora", "full"):
        command = [sys.executable, __file__, "_measure", mode, str(args.steps), str(args.batch_size)]
        output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    for row in results:
        print(json.dumps(row))
    lora, full = results
    print(
        f"LoRA: {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x the tokens/s of full fine-tuning, "
        f"{lora['peak_rss_mib']:.0f} MiB against {full['peak_rss_mib']:.0f} MiB peak memory"
    )


def make_conversations(count: int) -> None:
    from conversations.models import Conversation, Correction, Customer, Feedback, Message

    rng = random.Random(1)
    customers = [Customer.objects.create() for _ in range(max(1, count // 3))]
    for index in range(count):
        conversation = Conversation.objects.create(customer=rng.choice(customers), reviewed=True)
        question, answer = rng.choice(TOPICS)
        turns = [rng.choice(SMALL_TALK), (question, "I'm not sure, sorry.")]
        for customer_text, bot_text in turns:
            Message.objects.create(conversation=conversation, role="customer", text=customer_text)
            bot = Message.objects.create(conversation=conversation, role="bot", text=bot_text)
        kind = index % 3
        if kind == 0:
            Correction.objects.create(message=bot, text=answer.format(n=rng.randint(2, 9)))
        elif kind == 1:
            Feedback.objects.create(message=bot, source="agent", positive=True)
        else:
            Message.objects.create(conversation=conversation, role="agent", text=answer.format(n=rng.randint(2, 9)))


def retrain(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="train-bench-"))
    os.environ["ADAPTERS_DIR"] = str(workdir / "adapters")
    os.environ["FINETUNING_CHECKPOINTS_DIR"] = str(workdir / "checkpoints")
    _django(workdir / "bench.sqlite3")
    _threads()
    from django.core.management import call_command

    from finetuning import pipeline, services
    from finetuning.models import TrainingRun, TrainingSettings
    from finetuning.training import TrainingConfig, schedule

    call_command("migrate", verbosity=0)
    TrainingSettings.objects.update_or_create(pk=1, defaults={"max_examples_per_customer": 1000})
    began = time.monotonic()
    make_conversations(args.conversations)
    made = time.monotonic()
    config: dict[str, int] = {}
    run = services.run_start(config={"max_steps": args.max_steps} if args.max_steps else {})
    run = pipeline.run_execute(run_id=run.id)
    done = time.monotonic()
    assert run is not None
    run = TrainingRun.objects.select_related("version", "snapshot").get(id=run.id)
    training = run.version.metrics.get("training", {}) if run.version else {}
    train_examples = run.snapshot.counts["by_split"].get("train", 0) if run.snapshot else 0
    total_steps = len(schedule([1] * train_examples, TrainingConfig.from_dict(config)))
    report = {
        "conversations": args.conversations,
        "status": run.status,
        "examples": run.snapshot.counts if run.snapshot else None,
        "seconds_creating_conversations": round(made - began, 1),
        "seconds_retrain": round(done - made, 1),
        "training_seconds": training.get("seconds"),
        "training_steps": training.get("steps"),
        "training_tokens_per_s": training.get("tokens_per_s"),
        "steps_of_a_full_run": total_steps,
    }
    if args.max_steps and training.get("steps"):
        per_step = training["seconds"] / training["steps"]
        report["projected_full_training_seconds"] = round(per_step * total_steps, 1)
    print(json.dumps(report, indent=1, default=str))


PERSONA = "You are the assistant of Bramble & Finch, a homeware shop. Answer briefly."
KNOWLEDGE_CONFIGS = {
    "SFT": {"paraphrases": 0, "raft": False, "dpo": False},
    "+ paraphrases": {"paraphrases": True, "raft": False, "dpo": False},
    "+ retrieved context": {"paraphrases": True, "raft": True, "dpo": False},
    "+ DPO": {"paraphrases": True, "raft": True, "dpo": True},
}


def shop_conversations() -> None:
    """The shop's 40 corrected conversations, each from a customer of its own, reviewed."""
    from conversations.models import Conversation, Correction, Customer, Message
    from tests.finetuning.shop import FACTS

    for fact in FACTS:
        for question in fact.asked:
            conversation = Conversation.objects.create(customer=Customer.objects.create(), reviewed=True)
            Message.objects.create(conversation=conversation, role="customer", text=question)
            bot = Message.objects.create(conversation=conversation, role="bot", text=fact.wrong)
            Correction.objects.create(message=bot, text=fact.correction)


def knowledge_snapshot(args: argparse.Namespace, tokenizer: object, recipe: dict[str, object], load: object) -> object:
    from finetuning import datasets

    options = datasets.BuildOptions(
        system_prompt=PERSONA,
        max_seq_len=args.max_seq_len,
        heldout_fraction=0.0,  # the held-out set is the paraphrases nothing trains on
        general_examples=40,
        paraphrases=args.paraphrases if recipe["paraphrases"] else 0,
        raft_with_answer=args.raft_with_answer if recipe["raft"] else 0.0,
        raft_distractors_only=args.raft_distractors_only if recipe["raft"] else 0.0,
    )
    general = datasets.general_replies(
        model_path=args.model_path, tokenizer=tokenizer, system_prompt=PERSONA, count=40, load=load
    )
    rephrase = datasets.model_rephrase(
        model_path=args.model_path, tokenizer=tokenizer, per_question=args.paraphrases, load=load
    )
    return datasets.snapshot_build(tokenizer=tokenizer, options=options, general_replies=general, rephrase=rephrase)


def knowledge_scores(
    replies: list[str], unrelated: list[str], base_unrelated: list[str], taught: set[str]
) -> dict[str, int]:
    """Recall and wrong facts on the shop's held-out paraphrases, leaks on the unrelated prompts."""
    from finetuning import probes
    from tests.finetuning.shop import FACTS, recalled

    wrong = sum(
        any(recalled(other, reply) for other in FACTS if other is not fact and not recalled(fact, other.correction))
        for fact, reply in zip(FACTS, replies, strict=True)
    )
    leaks = sum(
        bool(probes.leaked(reply, taught=taught, baseline=baseline, prompt=prompt))
        for prompt, reply, baseline in zip(probes.UNRELATED, unrelated, base_unrelated, strict=True)
    )
    return {
        "recall": sum(recalled(f, r) for f, r in zip(FACTS, replies, strict=True)),
        "wrong": wrong,
        "leaks": leaks,
    }


def knowledge(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="knowledge-train-bench-"))
    _django(workdir / "bench.sqlite3")
    _threads()
    from django.core.management import call_command
    from peft import PeftModel

    from conversations.prompts import Turn
    from finetuning import base, datasets, probes
    from finetuning.models import Example
    from finetuning.training import TrainingConfig, train
    from tests.finetuning.shop import FACTS

    call_command("migrate", verbosity=0)
    shop_conversations()
    args.model_path = base.base_model_path()
    tokenizer = base.load_tokenizer(args.model_path)
    renderer = datasets.Renderer(tokenizer, system_prompt=PERSONA, max_seq_len=args.max_seq_len)
    questions = [fact.paraphrase for fact in FACTS]
    asked = [renderer.prompt_for([Turn("customer", q)]) for q in [*questions, *probes.UNRELATED]]

    def answers(model: object) -> tuple[list[str], list[str]]:
        replies = base.generate_greedy(
            model, tokenizer, asked, max_new_tokens=32, batch_size=20, repetition_penalty=1.1
        )
        return replies[: len(questions)], replies[len(questions) :]

    bare = base.load_model(args.model_path)
    base_facts, base_unrelated = answers(bare)
    rows = []
    only = set(args.only.split(",")) if args.only else set(KNOWLEDGE_CONFIGS)
    for name, recipe in KNOWLEDGE_CONFIGS.items():
        if name not in only:
            continue
        began = time.monotonic()
        snapshot = knowledge_snapshot(args, tokenizer, recipe, lambda: bare)
        built = time.monotonic() - began
        train_set = snapshot.examples.filter(split=Example.Split.TRAIN)
        trained_questions = {
            datasets.neutralise(m["content"]).lower()
            for c in train_set.values_list("chat", flat=True)
            for m in c
            if m["role"] == "user"
        }
        assert not any(q.lower() in trained_questions for q in questions), "a held-out paraphrase was trained on"
        preferences = (
            datasets.preference_triples(
                train_set.exclude(rejected="").values_list("prompt", "completion", "reply", "rejected"), tokenizer
            )
            if recipe["dpo"]
            else []
        )
        config = TrainingConfig(
            epochs=args.epochs,
            batch_size=8,
            learning_rate=args.learning_rate,
            max_seq_len=args.max_seq_len,
            checkpoint_every=10_000,
            dpo_steps=args.dpo_steps if recipe["dpo"] else 0,
        )
        result = train(
            model=base.load_model(args.model_path),
            tokenizer=tokenizer,
            pairs=list(train_set.values_list("prompt", "completion")),
            preferences=preferences,
            output_dir=workdir / f"adapter-{len(rows)}",
            checkpoint_dir=workdir / f"checkpoints-{len(rows)}",
            config=config,
        )
        taught = probes.taught_terms(
            list(snapshot.examples.exclude(source="general").values_list("reply", flat=True)),
            list(snapshot.examples.filter(source="general").values_list("reply", flat=True)),
        )
        adapter = PeftModel.from_pretrained(base.load_model(args.model_path), str(result.adapter_path))
        replies, unrelated = answers(adapter)
        scores = knowledge_scores(replies, unrelated, base_unrelated, taught)
        if not rows:
            rows.append({"name": "base model", **knowledge_scores(base_facts, base_unrelated, base_unrelated, taught)})
        rows.append(
            {
                "name": name,
                **scores,
                "examples": train_set.count(),
                "phrasings": snapshot.counts["phrasings"].get("kept", 0),
                "references": snapshot.counts["references"],
                "steps": result.steps,
                "train_s": round(result.seconds),
                "build_s": round(built),
                "final_loss": result.loss_history[-1][1],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        for question, reply in zip(questions, replies, strict=True):
            print(f"  {question} | {reply}", flush=True)
    header = f"recall (of {len(questions)}) | wrong facts | leaks (of {len(probes.UNRELATED)})"
    print(f"| configuration | {header} | train examples | steps | training s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['name']} | {row['recall']} | {row['wrong']} | {row['leaks']} | {row.get('examples', '')} "
            f"| {row.get('steps', '')} | {row.get('train_s', '')} |"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("--steps", type=int, default=6)
    compare_parser.add_argument("--batch-size", type=int, default=8)
    retrain_parser = commands.add_parser("retrain")
    retrain_parser.add_argument("--conversations", type=int, default=1000)
    retrain_parser.add_argument("--max-steps", type=int, default=0)
    knowledge_parser = commands.add_parser("knowledge")
    knowledge_parser.add_argument("--epochs", type=int, default=4)
    knowledge_parser.add_argument("--learning-rate", type=float, default=2e-3)
    knowledge_parser.add_argument("--max-seq-len", type=int, default=256)
    knowledge_parser.add_argument("--paraphrases", type=int, default=6)
    knowledge_parser.add_argument("--raft-with-answer", type=float, default=0.3)
    knowledge_parser.add_argument("--raft-distractors-only", type=float, default=0.2)
    knowledge_parser.add_argument("--dpo-steps", type=int, default=30)
    knowledge_parser.add_argument("--only", default="", help="configurations to run, comma-separated")
    args = parser.parse_args()
    {"compare": compare, "retrain": retrain, "knowledge": knowledge}[args.command](args)


if __name__ == "__main__":
    main()
