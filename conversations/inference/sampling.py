"""Per-request token choice for a batch of rows, each row with its own sampling settings.

The order of the logits transforms follows ``transformers``' ``generate`` (repetition penalty,
then temperature, top-k, top-p), so a greedy row picks exactly what ``generate(do_sample=False)``
picks for the same logits. Nothing here reads a value back to the host: on a GPU the whole
choice stays queued on the device until the engine fetches the step's token ids once.
"""

from __future__ import annotations

import torch

from .types import SamplingParams


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature <= 0.0 or params.top_k == 1


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A private generator for a seeded request, so its draws do not depend on its neighbours."""
    if params.seed is None or is_greedy(params):
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(params.seed)
    return generator


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty on every token already in the prompt or the reply.

    logits: (rows, vocab) · seen: (rows, vocab) bool · penalties: (rows, 1).
    """
    penalised = torch.where(logits < 0, logits * penalties, logits / penalties)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) what falls outside each row's top-k and nucleus; k = 0 and p = 1 disable them.

    logits: (rows, vocab) already divided by temperature · top_k: (rows, 1) long · top_p: (rows, 1).
    """
    vocab = logits.shape[-1]
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (rows, vocab)
    rank = torch.arange(vocab, device=logits.device).unsqueeze(0)  # (1, vocab)
    # Top-k: keep ranks below k (ties at the k-th value stay in, as transformers keeps them).
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    kth_value = sorted_logits.gather(-1, k - 1)  # (rows, 1)
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth_value, float("-inf"))
    # Top-p: keep the smallest prefix whose probability mass reaches p; always keep the best token.
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop = (mass_before >= top_p) & (top_p < 1.0) & (rank > 0)
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def choose_tokens(
    logits: torch.Tensor,
    seen: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> torch.Tensor:
    """Pick one token per row. logits: (rows, vocab) fp32 · seen: (rows, vocab) bool → (rows,) long."""
    logits = logits.float()
    device = logits.device
    penalties = [p.repetition_penalty for p in params]
    if any(p != 1.0 for p in penalties):
        logits = apply_repetition_penalty(logits, seen, torch.tensor(penalties, device=device).unsqueeze(1))
    chosen = logits.argmax(dim=-1)  # (rows,) greedy for every row; sampled rows overwrite theirs
    sampled = [i for i, p in enumerate(params) if not is_greedy(p)]
    if not sampled:
        return chosen
    rows = torch.tensor(sampled, device=device)
    temperature = torch.tensor([params[i].temperature for i in sampled], device=device).unsqueeze(1)
    top_k = torch.tensor([params[i].top_k for i in sampled], device=device).unsqueeze(1)
    top_p = torch.tensor([params[i].top_p for i in sampled], device=device).unsqueeze(1)
    filtered = filter_top_k_top_p(logits[rows] / temperature, top_k, top_p)
    probs = filtered.softmax(dim=-1)  # (sampled, vocab)
    draws = [torch.multinomial(probs[j], 1, generator=generators[i]) for j, i in enumerate(sampled)]
    chosen[rows] = torch.cat(draws)
    return chosen
