"""LoRA adapters loaded beside the base model with peft, served side by side in one batch.

The base model is wrapped in a ``PeftModel`` when the first adapter arrives and unwrapped when the
last one leaves. Each forward names, row by row, which adapter answers it (``"__base__"`` for the
bare model) through peft's mixed-batch ``adapter_names``: the base matmuls run once for the whole
batch and each adapter's low-rank update only on its own rows. Requests on different adapters can
therefore share every decode step.

An adapter directory is checked (config, weights, target modules, shapes) before anything is
injected, so a broken directory is refused without touching the model that serves the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig, PeftModel
from peft.utils import load_peft_weights

BASE = "__base__"


class AdapterLoadError(RuntimeError):
    """The adapter directory cannot be served; the message says why."""


class AdapterSet:
    def __init__(self, base: torch.nn.Module, device: torch.device) -> None:
        self.base = base
        self.device = device
        self.peft: PeftModel | None = None
        self.failures: dict[str, str] = {}  # name → why its last load failed

    @property
    def model(self) -> torch.nn.Module:
        """What a forward calls: the peft wrapper while any adapter is loaded, else the base model."""
        return self.peft if self.peft is not None else self.base

    @property
    def names(self) -> set[str]:
        return set(self.peft.peft_config) if self.peft is not None else set()

    def check(self, path: Path) -> None:
        """Refuse a directory peft could not serve, before the model is touched (no lock needed)."""
        try:
            config = PeftConfig.from_pretrained(str(path))
            weights = load_peft_weights(str(path), device="cpu")
        except Exception as exc:  # peft raises ValueError, OSError, JSON errors… all mean "unusable"
            raise AdapterLoadError(f"cannot read a peft adapter from {path}: {exc}") from exc
        if not isinstance(config, LoraConfig):
            raise AdapterLoadError(f"{path} holds a {type(config).__name__}, not a LoRA adapter")
        if not weights:
            raise AdapterLoadError(f"{path} holds no adapter weights")
        for key, tensor in weights.items():
            self._check_weight(path, key, tensor)

    def _check_weight(self, path: Path, key: str, tensor: torch.Tensor) -> None:
        module_name, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        try:
            module = self.base.get_submodule(module_name)
        except AttributeError:
            raise AdapterLoadError(f"{path}: {key} targets {module_name}, which the base model lacks") from None
        if isinstance(module, torch.nn.Linear):
            expected = module.in_features if kind.startswith("A") else module.out_features
            actual = tensor.shape[1] if kind.startswith("A") else tensor.shape[0]
            if expected != actual:
                raise AdapterLoadError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, the base layer wants {expected}"
                )

    def install(self, name: str, path: Path) -> None:
        """Inject an adapter that ``check`` accepted. The caller holds the model lock."""
        if name in self.names:
            self.remove(name)
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except Exception as exc:
            self._forget(name)
            raise AdapterLoadError(f"peft could not load {path}: {exc}") from exc
        self.peft.eval()
        self.failures.pop(name, None)

    def remove(self, name: str) -> None:
        """Delete an adapter; with none left, strip the LoRA layers so the base runs bare again."""
        if self.peft is None or name not in self.names:
            return
        if len(self.names) == 1:
            self.base = self.peft.unload()
            self.peft = None
        else:
            self.peft.delete_adapter(name)

    def _forget(self, name: str) -> None:
        if self.peft is not None and name in self.names:
            self.remove(name)
        elif self.peft is None:
            self._strip_half_injected_layers()

    def _strip_half_injected_layers(self) -> None:
        from peft.tuners.lora import LoraLayer

        for parent in list(self.base.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, LoraLayer):
                    setattr(parent, child_name, child.get_base_layer())

    def forward_kwargs(self, adapters: list[str | None]) -> dict[str, Any]:
        """The extra forward arguments that route each row to its adapter."""
        if self.peft is None:
            return {}
        return {"adapter_names": [a if a is not None else BASE for a in adapters]}
