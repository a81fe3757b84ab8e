"""Capture penultimate-layer features (the input of the final ``nn.Linear``) of any model.

* [`find_final_linear`][lsdiffusion.find_final_linear] locates the classifier layer (the last
  registered ``nn.Linear``) or resolves a user-given name such as ``"fc"`` (torchvision
  ResNets) or ``"classifier.1"`` (MobileNetV2).
* [`capture_features`][lsdiffusion.capture_features] /
  [`FeatureCapture`][lsdiffusion.FeatureCapture] is a context manager that records that layer's
  input on every forward pass and removes its hook on exit.
* [`iter_features`][lsdiffusion.iter_features] streams ``(features, labels, logits)`` batch by batch
  through a ``DataLoader`` (feed them to [`ClassCentroids`][lsdiffusion.ClassCentroids]
  without keeping them), and [`collect_features`][lsdiffusion.collect_features] concatenates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, NamedTuple

import torch
from torch import nn
from typing_extensions import Self

from lsdiffusion._arrays import _check_labels

__all__ = [
    "FeatureBatch",
    "FeatureCapture",
    "capture_features",
    "collect_features",
    "find_final_linear",
    "iter_features",
]

_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


def find_final_linear(
    model: nn.Module, layer: str | nn.Module | None = None
) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` of the layer whose input is the penultimate feature.

    With ``layer=None`` this is the last ``nn.Linear`` in ``model.named_modules()``
    (registration order), which is the classifier of torchvision ResNets
    (``"fc"``), MobileNetV2 (``"classifier.1"``), ViTs (``"heads.head"``) and most
    models. A name is looked up with ``model.get_submodule``, also through a
    ``DataParallel``/DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) wrapper.

    Args:
        model: any ``nn.Module``.
        layer: ``None`` (automatic), a dotted submodule name, or the submodule itself.

    Returns:
        The dotted name (``""`` for the model itself) and the module.

    Raises:
        ValueError: if the model has no ``nn.Linear`` or the name does not exist.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> find_final_linear(net)[0]
        '3'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layer is None:
        found: tuple[str, nn.Module] | None = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                found = (name, module)
        if found is None:
            raise ValueError(
                f"{type(model).__name__} has no nn.Linear layer; pass layer='name' of the "
                "module whose input is the penultimate feature"
            )
        return found
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a str, an nn.Module or None, got {type(layer).__name__}")
    candidates = [layer] + [prefix + layer for prefix in _WRAPPER_PREFIXES]
    for candidate in candidates:
        try:
            return candidate, model.get_submodule(candidate)
        except AttributeError:
            continue
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    raise ValueError(
        f"layer {layer!r} is not a submodule of {type(model).__name__}; its nn.Linear "
        f"layers are {linears[-5:]}"
    )


class FeatureCapture:
    """Context manager that records the input of one layer on every forward pass.

    A forward pre-hook stores the (detached) input tensor of the layer; the hook
    is removed on exit, also when an exception escapes. Works under
    ``torch.no_grad()``, ``torch.inference_mode()`` and autocast (the features
    have whatever dtype reaches the layer, e.g. bfloat16 under CPU autocast).

    Attributes:
        layer_name: dotted name of the hooked layer.
        layer: the hooked module.
        features: the input of the layer at the latest forward pass (``None``
            before the first one).

    Args:
        model: any ``nn.Module``.
        layer: ``None`` (the last ``nn.Linear``, see
            [`find_final_linear`][lsdiffusion.find_final_linear]), a dotted name such as ``"fc"`` /
            ``"classifier.1"``, or the module itself.
        detach: detach the stored features from the autograd graph (default).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> with capture_features(net) as cap, torch.no_grad():
        ...     logits = net(torch.randn(4, 5))
        >>> cap.layer_name, tuple(cap.features.shape), tuple(logits.shape)
        ('2', (4, 8), (4, 3))
        >>> len(net[2]._forward_pre_hooks)  # removed on exit
        0
    """

    def __init__(
        self, model: nn.Module, layer: str | nn.Module | None = None, *, detach: bool = True
    ) -> None:
        self.layer_name, self.layer = find_final_linear(model, layer)
        self.detach = bool(detach)
        self.features: torch.Tensor | None = None
        self._handle: Any | None = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        value = args[0] if args else kwargs.get("input")
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"the input of layer {self.layer_name!r} is a {type(value).__name__}, not a "
                "tensor; pass layer=... naming a layer that takes one tensor"
            )
        self.features = value.detach() if self.detach else value

    def __enter__(self) -> Self:
        if self._handle is not None:
            raise RuntimeError("this FeatureCapture is already active (nested use)")
        self.features = None
        self._handle = self.layer.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hook (idempotent); the last features stay available."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def pop(self) -> torch.Tensor:
        """Return the latest features and clear them; raise if no forward pass happened."""
        if self.features is None:
            raise RuntimeError(
                f"layer {self.layer_name!r} was not called since the last pop(); did the "
                "model run a forward pass inside the `with` block?"
            )
        out, self.features = self.features, None
        return out


def capture_features(
    model: nn.Module, layer: str | nn.Module | None = None, *, detach: bool = True
) -> FeatureCapture:
    """Return a `FeatureCapture` context manager for ``model`` (see there)."""
    return FeatureCapture(model, layer, detach=detach)


class FeatureBatch(NamedTuple):
    """Features, labels and logits of a batch or of a whole dataset.

    Shape:
        - features: (N, D) (the layer input; extra dims are kept for sequence models).
        - labels: (N,) int64.
        - logits: (N, C), the model output.
    """

    features: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor


def _split_batch(batch: object) -> tuple[object, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        inputs, labels = batch[0], batch[1]
    else:
        raise TypeError(
            "each batch must be a (inputs, labels, ...) tuple or list, got "
            f"{type(batch).__name__}; wrap the loader to yield (inputs, labels)"
        )
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    return inputs, labels


def _move(value: object, device: torch.device, non_blocking: bool) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (tuple, list)):
        return type(value)(_move(v, device, non_blocking) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device, non_blocking) for k, v in value.items()}
    return value


def _logits_of(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(
        f"the model returned a {type(output).__name__}; expected a logits tensor "
        "(or an object with a .logits tensor)"
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def iter_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layer: str | nn.Module | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "features",
    eval_mode: bool = True,
    non_blocking: bool = True,
    max_batches: int | None = None,
) -> Iterator[FeatureBatch]:
    """Run ``loader`` through ``model`` and yield each batch's features, labels and logits.

    The forward passes run under ``torch.no_grad()`` and, with ``eval_mode=True``,
    in eval mode; every module's train/eval flag is restored afterwards, and the
    hook is removed even if the loop stops early. Results stay on the model's
    device (stream them into [`ClassCentroids`][lsdiffusion.ClassCentroids] or
    [`TargetEntropy`][lsdiffusion.TargetEntropy]). Wrap the loop in
    ``torch.autocast(...)`` for mixed precision.

    Args:
        model: the network.
        loader: an iterable of ``(inputs, labels, ...)`` batches (e.g. a ``DataLoader``).
        layer: the layer whose input is recorded (see
            [`find_final_linear`][lsdiffusion.find_final_linear]).
        device: where inputs are moved (default: the model's device).
        progress: show a progress line on stderr (off by default: library
            calls stay quiet unless asked).
        desc: the progress line's label.
        eval_mode: put the model in eval mode while running.
        non_blocking: passed to ``Tensor.to`` when moving inputs.
        max_batches: stop after this many batches.

    Yields:
        [`FeatureBatch`][lsdiffusion.FeatureBatch] ``(features, labels, logits)``, labels as int64.

    Raises:
        TypeError: labels that are not integers (float labels are never truncated).
        ValueError: labels that are not (N,), or not in [0, C) for (N, C)
            logits; features, logits and labels of different lengths. The
            checks are those of [`ClassCentroids`][lsdiffusion.ClassCentroids].

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> data = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))]
        >>> shapes = [tuple(b.features.shape) for b in iter_features(net, data)]
        >>> shapes
        [(4, 8)]
        >>> bad = [(torch.randn(4, 5), torch.tensor([0.0, 1.5, 2.0, 0.0]))]
        >>> next(iter_features(net, bad))
        Traceback (most recent call last):
        ...
        TypeError: labels must have an integer dtype, got torch.float32
    """
    from lsdiffusion._progress import Progress

    dev = _model_device(model) if device is None else torch.device(device)
    modes = {m: m.training for m in model.modules()}
    total = len(loader) if isinstance(loader, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    bar = Progress(total, desc, "batches", enabled=progress)
    try:
        with FeatureCapture(model, layer) as cap:
            if eval_mode:
                model.eval()
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                inputs, labels = _split_batch(batch)
                with torch.no_grad():  # only around the forward: the caller's code keeps grad
                    logits = _logits_of(model(_move(inputs, dev, non_blocking)))
                feats = cap.pop()
                labels = labels.to(logits.device)
                if labels.dim() != 1 or not feats.shape[0] == logits.shape[0] == labels.shape[0]:
                    raise ValueError(
                        f"batch {i}: features {tuple(feats.shape)}, logits "
                        f"{tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on "
                        "the number of samples (labels must be (N,))"
                    )
                num_classes = int(logits.shape[1]) if logits.dim() == 2 else 0
                _check_labels(labels, int(feats.shape[0]), num_classes, check_range=num_classes > 0)
                bar.update()
                yield FeatureBatch(feats, labels.long(), logits.detach())
    finally:
        bar.close()
        for module, training in modes.items():
            module.training = training


def collect_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layer: str | nn.Module | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    eval_mode: bool = True,
    to_cpu: bool = True,
    max_batches: int | None = None,
) -> FeatureBatch:
    """Run ``loader`` through ``model`` and concatenate features, labels and logits.

    Keeps everything in memory (N × D features): for ImageNet-size runs stream
    [`iter_features`][lsdiffusion.iter_features] into [`ClassCentroids`][lsdiffusion.ClassCentroids]
    instead.

    Args:
        model: the network.
        loader: an iterable of ``(inputs, labels, ...)`` batches.
        layer: the layer whose input is recorded (see
            [`find_final_linear`][lsdiffusion.find_final_linear]).
        device: where inputs are moved (default: the model's device).
        progress: show a progress line on stderr.
        eval_mode: put the model in eval mode while running.
        to_cpu: move each batch's results to CPU as they arrive.
        max_batches: stop after this many batches.

    Returns:
        [`FeatureBatch`][lsdiffusion.FeatureBatch] with features (N, D), labels (N,) int64 and
        logits (N, C).

    Raises:
        TypeError, ValueError: labels that [`ClassCentroids`][lsdiffusion.ClassCentroids]
            would reject (see [`iter_features`][lsdiffusion.iter_features]); a loader with no batch.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> data = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
        >>> out = collect_features(net, data)
        >>> tuple(out.features.shape), tuple(out.labels.shape), tuple(out.logits.shape)
        ((12, 8), (12,), (12, 3))
    """
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    for batch in iter_features(
        model,
        loader,
        layer=layer,
        device=device,
        progress=progress,
        eval_mode=eval_mode,
        max_batches=max_batches,
    ):
        if to_cpu:
            batch = FeatureBatch(*(t.cpu() for t in batch))
        feats.append(batch.features)
        labels.append(batch.labels)
        logits.append(batch.logits)
    if not feats:
        raise ValueError("the loader yielded no batch")
    return FeatureBatch(torch.cat(feats), torch.cat(labels), torch.cat(logits))
