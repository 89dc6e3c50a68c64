"""LoRA supervised fine-tuning in plain torch and peft: no Django here, so it runs anywhere.

The loss counts only the reply's tokens: the context is there to condition on, not to imitate.
After the SFT steps, optional preference steps (DPO) on the stored pairs: the agent's correction
is preferred to the bot's reply it replaced, against the base model (the adapter switched off) as
the reference, with the correction's cross-entropy added so the content is still taught.
Training state (adapter weights, optimizer, step, loss history) is checkpointed every N steps by
writing a new folder and renaming it into place, so a kill -9 at any moment leaves either the old
checkpoint or the new one, never half of one; a rerun with the same checkpoint folder resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from conversations.inference.types import Tokenizer

log = logging.getLogger(__name__)

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass
class TrainingConfig:
    """Defaults measured on SmolLM2-135M-Instruct: enough to learn a shop's facts in a few epochs."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 4
    max_grad_norm: float = 1.0
    epochs: int = 3
    batch_size: int = 8
    max_seq_len: int = 384
    max_steps: int = 0  # 0: the epochs decide
    checkpoint_every: int = 20
    seed: int = 0
    threads: int = 0  # 0: torch's default
    dpo_steps: int = 0  # preference steps after SFT; 0: SFT alone
    dpo_beta: float = 0.1  # how far from the reference the preference may pull
    dpo_sft_weight: float = 1.0  # the chosen reply's cross-entropy, added to the DPO loss
    dpo_batch_size: int = 4  # pairs per preference step (twice as many rows)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.target_modules = tuple(config.target_modules)
        return config

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE over the context, the token ids over the reply


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float
    tokens_per_s: float
    eta_s: float


@dataclass
class TrainResult:
    adapter_path: Path
    steps: int
    loss_history: list[list[float]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    resumed_from_step: int | None = None


class Cancelled(Exception):
    """The run was asked to stop; raised between or within steps, never mid-write."""


class TrainingDataEmpty(Exception):
    pass


class CheckpointUnusable(Exception):
    """A checkpoint exists but cannot be loaded: the run must fail rather than silently restart."""


def tokenize(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, max_seq_len: int) -> list[TokenizedExample]:
    """(templated prompt, completion) pairs → ids, context cut from the front to fit ``max_seq_len``."""
    examples = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        completion_ids = tokenizer.encode(completion, add_special_tokens=False)[: max_seq_len // 2]
        prompt_ids = prompt_ids[-(max_seq_len - len(completion_ids)) :]
        examples.append(TokenizedExample(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids))
    return examples


def schedule(lengths: Sequence[int], config: TrainingConfig) -> list[list[int]]:
    """Every step's example indices, fixed by the seed, so a resumed run sees the same batches.

    Each epoch is shuffled, then cut into windows of a few batches sorted by length, so a batch
    holds examples of similar length and little of each step is spent on padding.
    """
    rng = random.Random(config.seed)
    window = config.batch_size * 4
    steps = []
    for _ in range(config.epochs):
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            batches = [chunk[i : i + config.batch_size] for i in range(0, len(chunk), config.batch_size)]
            rng.shuffle(batches)
            steps += batches
    return steps[: config.max_steps] if config.max_steps else steps


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    # (batch, width), padded on the right; padding is masked out of attention and of the loss.
    input_ids = torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch])
    labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in batch])
    attention_mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def reply_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the reply tokens, projecting onto the vocabulary only where a reply
    token is predicted: the 49k-word output layer is a fifth of the model's work per position."""
    targets = batch["labels"][:, 1:]  # position t predicts token t+1: (batch, width-1)
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)  # positions any row needs: (kept,)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep
    ).logits  # (batch, kept, vocab)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), targets[:, keep], ignore_index=IGNORE)


def sequence_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its reply tokens, and how many there are: (batch,) each."""
    targets = batch["labels"][:, 1:]  # (batch, width-1)
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)  # (kept,)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep
    ).logits  # (batch, kept, vocab)
    kept = targets[:, keep]  # (batch, kept)
    mask = kept != IGNORE
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, kept.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logprobs * mask).sum(-1), mask.sum(-1)


def preference_loss(
    model: PeftModel,
    chosen: Sequence[TokenizedExample],
    rejected: Sequence[TokenizedExample],
    *,
    pad_id: int,
    beta: float,
    sft_weight: float,
) -> torch.Tensor:
    """DPO (Rafailov et al., 2023) with the chosen replies' cross-entropy added: the pair's margin
    of the adapter's log-ratio over the base model's, pushed up through a log-sigmoid."""
    both = collate([*chosen, *rejected], pad_id)  # (2 * pairs, width): one forward for both sides
    policy, counts = sequence_logprobs(model, both)
    with torch.no_grad(), model.disable_adapter():  # the reference: the same weights, no adapter
        reference, _ = sequence_logprobs(model, both)
    pairs = len(chosen)
    ratio = policy - reference  # (2 * pairs,)
    margin = beta * (ratio[:pairs] - ratio[pairs:])  # (pairs,)
    nll = -policy[:pairs].sum() / counts[:pairs].sum().clamp(min=1)
    return -torch.nn.functional.logsigmoid(margin).mean() + sft_weight * nll


def preference_schedule(count: int, config: TrainingConfig) -> list[list[int]]:
    """``dpo_steps`` batches of pair indices, going round a seeded shuffle as often as needed."""
    if count == 0 or config.dpo_steps <= 0:
        return []
    rng = random.Random(config.seed + 1)
    order: list[int] = []
    while len(order) < config.dpo_steps * config.dpo_batch_size:
        round_ = list(range(count))
        rng.shuffle(round_)
        order += round_
    size = min(config.dpo_batch_size, count)
    return [order[i * size : (i + 1) * size] for i in range(config.dpo_steps)]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def lora_model(model: PreTrainedModel, config: TrainingConfig) -> PeftModel:
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    return get_peft_model(model, lora)


def write_atomically(target: Path, write: Callable[[Path], None], *, replace: bool = False) -> Path:
    """Write a folder beside ``target`` and rename it into place: readers see all of it or none.

    Without ``replace`` an existing ``target`` is never touched (FileExistsError): an adapter a
    worker may be serving is immutable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} exists and is never written into")
    staging = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        if not replace and target.exists():
            raise FileExistsError(f"{target} appeared while writing and is never written into")
        if target.exists():
            retired = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, retired)
            shutil.rmtree(retired, ignore_errors=True)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: only renamed-into-place folders are named ``step-*``."""
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def save_checkpoint(
    folder: Path, *, model: PeftModel, optimizer: torch.optim.Optimizer, step: int, loss_history: list[list[float]]
) -> Path:
    def write(staging: Path) -> None:
        model.save_pretrained(str(staging))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps({"step": step, "loss_history": loss_history}))

    path = write_atomically(folder / f"step-{step:06d}", write, replace=True)
    for older in folder.glob("step-*"):
        if older != path:
            shutil.rmtree(older, ignore_errors=True)
    return path


def load_checkpoint(path: Path, *, model: PeftModel, optimizer: torch.optim.Optimizer) -> tuple[int, list[list[float]]]:
    try:
        state = json.loads((path / "state.json").read_text())
        set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    except Exception as error:  # noqa: BLE001 - any damage means the same thing: cannot resume
        raise CheckpointUnusable(f"checkpoint {path.name} cannot be loaded: {error}") from error
    return int(state["step"]), state["loss_history"]


def train(
    *,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    output_dir: Path,
    preferences: Sequence[tuple[str, str, str]] = (),
    checkpoint_dir: Path,
    config: TrainingConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_resume: Callable[[int, list[list[float]]], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``pairs`` and write it to ``output_dir``; resumes from ``checkpoint_dir``.

    ``model`` is a freshly loaded base model (float32); it becomes the peft model in place.
    ``preferences``: (prompt, chosen completion, rejected completion) for the DPO steps after SFT.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    examples = tokenize(pairs, tokenizer, config.max_seq_len)
    if not examples:
        raise TrainingDataEmpty("no training examples")
    steps = schedule([len(e.input_ids) for e in examples], config)
    chosen = tokenize([(p, c) for p, c, _ in preferences], tokenizer, config.max_seq_len)
    rejected = tokenize([(p, r) for p, _, r in preferences], tokenizer, config.max_seq_len)
    preference_steps = preference_schedule(len(chosen), config)
    total = len(steps) + len(preference_steps)
    lora = lora_model(model, config)  # the base model, wrapped in place: only the adapter trains
    lora.train()
    optimizer = torch.optim.AdamW(
        [p for p in lora.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    start, resumed_from = 0, None
    loss_history: list[list[float]] = []
    checkpoint = latest_checkpoint(checkpoint_dir)
    if checkpoint is not None:
        start, loss_history = load_checkpoint(checkpoint, model=lora, optimizer=optimizer)
        resumed_from = start
        log.info("resuming from %s at step %d of %d", checkpoint.name, start, total)
        if on_resume is not None:
            on_resume(start, loss_history)

    def cancel_check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled()

    began, tokens_seen = time.monotonic(), 0
    for step in range(start, total):
        cancel_check()
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * lr_factor(step, total, config.warmup_steps)
        if step < len(steps):
            batch = collate([examples[i] for i in steps[step]], tokenizer.pad_token_id)
            loss = reply_loss(lora, batch)
        else:
            indices = preference_steps[step - len(steps)]
            batch = collate([chosen[i] for i in indices], tokenizer.pad_token_id)  # for the token count
            loss = preference_loss(
                lora,
                [chosen[i] for i in indices],
                [rejected[i] for i in indices],
                pad_id=tokenizer.pad_token_id,
                beta=config.dpo_beta,
                sft_weight=config.dpo_sft_weight,
            )
        cancel_check()  # the forward pass is most of a step on a CPU: look again before backward
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        tokens_seen += int(batch["attention_mask"].sum())
        elapsed = time.monotonic() - began
        done = step + 1
        loss_history.append([done, round(float(loss.detach()), 4)])
        rate = tokens_seen / elapsed if elapsed else 0.0
        eta = (total - done) * elapsed / (done - start)
        if on_progress is not None:
            on_progress(Progress(done, total, loss_history[-1][1], rate, eta))
        if done % config.checkpoint_every == 0 and done < total:
            save_checkpoint(checkpoint_dir, model=lora, optimizer=optimizer, step=done, loss_history=loss_history)

    cancel_check()
    adapter_path = write_atomically(output_dir, lambda staging: lora.save_pretrained(str(staging)))
    elapsed = time.monotonic() - began
    return TrainResult(
        adapter_path=adapter_path,
        steps=total,
        loss_history=loss_history,
        tokens_per_s=tokens_seen / elapsed if elapsed else 0.0,
        seconds=elapsed,
        resumed_from_step=resumed_from,
    )
