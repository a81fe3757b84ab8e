"""Batches, model calls and model state for [`iter_features`][lsdiffusion.iter_features].

Private helpers of `features.py`: the accepted batch forms, how inputs are
called, the logits in a model's output, the per-forward eval mode, the eager
run of compiled modules while hooks are attached, and the token pooling.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Mapping

import torch
from torch import nn

LABEL_KEYS: tuple[str, ...] = ("labels", "label")


def output_tensor(output: object) -> torch.Tensor | None:
    """The logits in a model's output: a tensor, `.logits`, `["logits"]`, or None."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    return logits if isinstance(logits, torch.Tensor) else None


class EagerCompiled:
    """Run the `torch.compile`d modules of a model eagerly while active.

    Compiled graphs skip the guards on module hooks, so a hook added after the
    first compiled call never fires; the original forward always runs them.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._saved: list[tuple[nn.Module, str, object]] = []

    def __enter__(self) -> None:
        optimized: type | None = None
        if "torch._dynamo" in sys.modules:  # nothing can be compiled before dynamo loads
            optimized = sys.modules["torch._dynamo"].eval_frame.OptimizedModule
        for module in self.model.modules():
            if optimized is not None and isinstance(module, optimized):
                self._saved.append((module, "forward", module.forward))
                original: nn.Module = getattr(module, "_orig_mod")  # noqa: B009
                setattr(module, "forward", original.__call__)  # noqa: B010
            if getattr(module, "_compiled_call_impl", None) is not None:  # nn.Module.compile()
                self._saved.append((module, "_compiled_call_impl", module._compiled_call_impl))
                module._compiled_call_impl = None

    def __exit__(self, *exc: object) -> None:
        for module, attr, value in reversed(self._saved):
            setattr(module, attr, value)
        self._saved.clear()


def split_batch(batch: object) -> tuple[object, object]:
    if isinstance(batch, Mapping):
        found = [k for k in LABEL_KEYS if k in batch]
        if len(found) > 1:
            raise ValueError(
                f"a mapping batch holds both {found[0]!r} and {found[1]!r}; keep one, the "
                "labels (the other would be passed to the model as an input)"
            )
        key = found[0] if found else None
        if key is None:
            raise TypeError(
                f"a mapping batch must hold its labels under 'labels' or 'label', got keys "
                f"{sorted(map(str, batch))}"
            )
        return {k: v for k, v in batch.items() if k != key}, batch[key]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        "each batch must be a (inputs, labels, ...) tuple or list, or a mapping with a "
        f"'labels' entry, got {type(batch).__name__}; wrap the loader to yield (inputs, labels)"
    )


def as_labels(labels: object, batch: int) -> torch.Tensor:
    """A batch's labels as a tensor; a mapping or another non-array object is a TypeError."""
    if isinstance(labels, torch.Tensor):
        return labels
    if isinstance(labels, Mapping):
        keys = sorted(map(str, labels))
        raise TypeError(
            f"batch {batch}: the labels are a {type(labels).__name__} with keys {keys[:5]}; "
            "expected one tensor of class indices: pick one entry (wrap the loader to yield "
            "(inputs, labels[key]))"
        )
    try:
        return torch.as_tensor(labels)
    except (TypeError, RuntimeError, ValueError):
        raise TypeError(
            f"batch {batch}: labels must be a tensor (or a list or array of ints), got "
            f"{type(labels).__name__}"
        ) from None


def move(value: object, device: torch.device, non_blocking: bool) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (tuple, list)):
        return type(value)(move(v, device, non_blocking) for v in value)
    if isinstance(value, Mapping):  # dict, Hugging Face BatchEncoding
        return {k: move(v, device, non_blocking) for k, v in value.items()}
    return value


def call(model: nn.Module, inputs: object) -> object:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _describe_value(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor {tuple(value.shape)}"
    return type(value).__name__


def logits_of(output: object) -> torch.Tensor:
    logits = output_tensor(output)
    if logits is None:
        if isinstance(output, (tuple, list)):
            parts = [_describe_value(v) for v in output[:4]] + (["..."] if len(output) > 4 else [])
            raise TypeError(
                f"the model returned a {type(output).__name__} of {len(output)}: "
                f"({', '.join(parts)}); expected a logits tensor (or an object with a .logits "
                "tensor), and which item holds the logits is not guessed: wrap the model so "
                "that it returns them (a module whose forward returns model(x)[0]); Hugging "
                "Face models: keep return_dict=True"
            )
        raise TypeError(
            f"the model returned a {type(output).__name__}; expected a logits tensor "
            "(or an object with a .logits tensor)"
        )
    return logits


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class Running:
    """Eval mode (optionally) and no grad for one forward pass; every flag restored after."""

    def __init__(self, model: nn.Module, eval_mode: bool) -> None:
        self.model = model
        self.eval_mode = eval_mode
        self._modes: dict[nn.Module, bool] = {}
        self._no_grad = torch.no_grad()

    def __enter__(self) -> None:
        if self.eval_mode:
            self._modes = {m: m.training for m in self.model.modules()}
            self.model.eval()
        self._no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._no_grad.__exit__(None, None, None)
        for module, training in self._modes.items():
            module.training = training
        self._modes = {}


def pool_prediction(
    feats: torch.Tensor, head: torch.Tensor | None, logits: torch.Tensor, layer: str
) -> torch.Tensor:
    """Per sample, the feature of the (last) token whose head output is the logits row."""
    if head is None or feats.dim() != 3 or head.shape[:2] != feats.shape[:2]:
        raise ValueError(
            f"pool='prediction' needs (B, L, D) features and a (B, L, C) output of layer "
            f"{layer!r}, got features {tuple(feats.shape)} and output "
            f"{None if head is None else tuple(head.shape)}"
        )
    match = (head == logits.unsqueeze(1)).all(dim=-1)  # (B, L)
    found = match.any(dim=1)
    if not bool(found.all()):
        bad = torch.nonzero(~found).flatten()[:5].tolist()
        raise ValueError(
            f"pool='prediction': the logits of samples {bad} are not the output of layer "
            f"{layer!r} at any token; the model does more than pick a token"
        )
    positions = torch.arange(match.shape[1], device=match.device)
    last = torch.where(match, positions, -1).amax(dim=1)
    return feats[torch.arange(feats.shape[0], device=feats.device), last]


def check_max_batches(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"max_batches must be an int or None, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"max_batches must be >= 1 (or None for all), got {value}")
