"""One real SmolLM2 for the whole session, on the CPU, plus generate() references to compare with.

Engines are cheap wrappers: each test gets a fresh one around the shared model. A second copy of
the weights serves as the reference, so peft can wrap it without touching the engine's model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from conversations.inference.engine import Engine, default_cache_dir
from conversations.inference.model_store import resolve_base_model
from conversations.inference.types import TokenChunk

CUSTOMER_MESSAGES = (
    "Hi!",
    "How do I reset my password? I forgot it and the reset email never arrives.",
    "What is 2+2?",
    "Tell me a short story about a cat who works in a bank, in three sentences please.",
    "My order #1234 arrived damaged. The box was crushed and two of the glasses inside are broken. "
    "I would like a replacement or a refund, whichever is faster. What should I do?",
    "Bonjour, parlez-vous français ?",
)


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def model_folder() -> str:
    return resolve_base_model("", default_cache_dir())


@pytest.fixture(scope="session")
def tokenizer(model_folder: str):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(model_folder)


def load_model(folder: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").eval()


@pytest.fixture(scope="session")
def model(model_folder: str) -> PreTrainedModel:
    return load_model(model_folder)


@pytest.fixture(scope="session")
def reference_model(model_folder: str) -> PreTrainedModel:
    return load_model(model_folder)


@pytest.fixture(scope="session")
def prompts(tokenizer) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    out = []
    for message in CUSTOMER_MESSAGES:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
        out.append(tuple(ids if isinstance(ids, list) else ids["input_ids"]))
    return out


def engine_over(model: PreTrainedModel, tokenizer) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """An engine of the tests' size over ``model``; its adapters are unloaded after the test."""
    engine = Engine(model, tokenizer, model_name="SmolLM2-135M-Instruct", max_running=8, max_queue=8)
    yield engine
    for name in list(engine.metrics()["adapters"]):  # type: ignore[union-attr]
        engine.unload_adapter(name)
    assert not engine._adapters.names, "an adapter outlived its test and would leak into the next"


@pytest.fixture
def engine(model: PreTrainedModel, tokenizer) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    yield from engine_over(model, tokenizer)


def make_lora(folder: Path, seed: int, model_folder: str) -> Path:
    """A small LoRA with random A and B (init_lora_weights=False), so it visibly changes the output."""
    torch.manual_seed(seed)
    base = load_model(model_folder)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.5)  # strong enough to change greedy text, weak enough to stay fluent-ish
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lora_a(tmp_path_factory: pytest.TempPathFactory, model_folder: str) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "a", 1, model_folder)


@pytest.fixture(scope="session")
def lora_b(tmp_path_factory: pytest.TempPathFactory, model_folder: str) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "b", 2, model_folder)


class Reference:
    """Greedy ``generate`` outputs, computed once per (prompt, adapter folder).

    Greedy decoding is prefix-stable, so one run of ``LONGEST`` tokens answers every shorter length.
    """

    LONGEST = 32

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.memo: dict[tuple[tuple[int, ...], str | None], list[int]] = {}

    def greedy(self, prompt: tuple[int, ...], max_new_tokens: int, adapter: Path | None = None) -> list[int]:
        assert max_new_tokens <= self.LONGEST
        key = (prompt, str(adapter) if adapter else None)
        if key not in self.memo:
            self.memo[key] = self._generate(prompt, self.LONGEST, adapter)
        return self.memo[key][:max_new_tokens]

    @torch.inference_mode()
    def _generate(self, prompt: tuple[int, ...], max_new_tokens: int, adapter: Path | None) -> list[int]:
        model: torch.nn.Module = self.model
        if adapter is not None:
            model = PeftModel.from_pretrained(self.model, str(adapter)).eval()
        try:
            ids = torch.tensor([prompt])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=2,
            )
            return out[0, len(prompt) :].tolist()
        finally:
            if adapter is not None:
                model.unload()  # type: ignore[operator]


@pytest.fixture(scope="session")
def reference(reference_model: PreTrainedModel) -> Reference:
    return Reference(reference_model)


class Collector:
    """Chunks per request, gathered over steps."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[TokenChunk]] = {}

    def add(self, chunks: list[TokenChunk]) -> None:
        for chunk in chunks:
            assert not self.finished(chunk.request_id), f"{chunk.request_id} got a chunk after finishing"
            self.chunks.setdefault(chunk.request_id, []).append(chunk)

    def finished(self, request_id: str) -> bool:
        return any(c.finished for c in self.chunks.get(request_id, []))

    def ids(self, request_id: str) -> list[int]:
        return [i for c in self.chunks.get(request_id, []) for i in c.token_ids]

    def text(self, request_id: str) -> str:
        return "".join(c.text for c in self.chunks.get(request_id, []))

    def last(self, request_id: str) -> TokenChunk:
        return self.chunks[request_id][-1]

    def drain(self, engine: Engine, max_steps: int = 500) -> None:
        """Step until the engine has nothing left to do."""
        for _ in range(max_steps):
            if not engine.has_work():
                return
            self.add(engine.step())
        raise AssertionError("the engine did not finish its work")


@pytest.fixture
def collector() -> Collector:
    return Collector()
