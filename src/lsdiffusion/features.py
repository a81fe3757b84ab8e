"""Capture penultimate-layer features (the input of the final `nn.Linear`) of any model.

* [`find_final_linear`][lsdiffusion.features.find_final_linear] locates the classifier
  layer (the last registered `nn.Linear`) or resolves a user-given name such as
  `"fc"` (torchvision ResNets) or `"classifier.1"` (MobileNetV2).
* [`FeatureCapture`][lsdiffusion.features.FeatureCapture] is a context manager
  that records that layer's input on every forward pass and removes its hook on exit.
  With the automatic choice it checks, at the first forward pass, that the layer is
  the one producing the model's output, and raises listing the candidates when
  several `nn.Linear` layers could be the classifier (two heads, a head registered
  before its trunk).
* [`iter_features`][lsdiffusion.features.iter_features] streams
  `(features, labels, logits)` batch by batch through a `DataLoader` (feed them to
  [`ClassCentroids`][lsdiffusion.centroids.ClassCentroids] without keeping them), and
  [`collect_features`][lsdiffusion.features.collect_features] concatenates them.

Batches. A batch is `(inputs, labels, ...)` (a tuple or list; extra items are
ignored) or a mapping with a `"labels"` (or `"label"`) entry, the other entries
being the inputs (what Hugging Face data collators yield). The inputs are called as
`model(inputs)` for a tensor, `model(*inputs)` for a tuple or list and
`model(**inputs)` for a mapping (a `dict` or a Hugging Face `BatchEncoding`).

Token features. Features of any shape `(..., D)` pass through with labels of shape
`(...)` when the logits have the same leading shape `(..., C)` (a language model's
`(B, L, D)` features with `(B, L)` token labels); `ignore_index` marks the labels
(padding) that are exempt from the range check, for accumulators that skip them.
A sequence classifier whose head runs on every token and pools afterwards (Hugging
Face's `GPT2ForSequenceClassification`: `(B, L, D)` features, `(B, C)` logits) needs
`pool="prediction"`: the feature of the token whose head output is the prediction
(for Hugging Face's sequence classifiers, the last non-padding token).

Compiled models. A `torch.compile`d module (or one whose `.compile()` was called)
does not run hooks added after it was compiled, so while a capture is active such
modules run their original (eager) forward; they are compiled again on exit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from types import TracebackType
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from typing_extensions import Self

from lsdiffusion._batches import (
    EagerCompiled,
    Running,
    as_labels,
    call,
    check_max_batches,
    logits_of,
    model_device,
    move,
    output_tensor,
    pool_prediction,
    split_batch,
)
from lsdiffusion._validation import check_ignore_index, check_labels

__all__ = [
    "FeatureBatch",
    "FeatureCapture",
    "collect_features",
    "find_final_linear",
    "iter_features",
]

_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


def find_final_linear(
    model: nn.Module, layer: str | nn.Module | None = None
) -> tuple[str, nn.Module]:
    """Return `(name, module)` of the layer whose input is the penultimate feature.

    With `layer=None` this is the last `nn.Linear` in `model.named_modules()`
    (registration order), which is the classifier of torchvision ResNets
    (`"fc"`), MobileNetV2 (`"classifier.1"`), ViTs (`"heads.head"`) and most
    models. This static choice is checked at the first forward pass by
    [`FeatureCapture`][lsdiffusion.features.FeatureCapture] and
    [`iter_features`][lsdiffusion.features.iter_features]. A name is looked up with
    `model.get_submodule`, also through a `DataParallel`/DDP (`module.`) or
    `torch.compile` (`_orig_mod.`) wrapper.

    Args:
        model: any `nn.Module`.
        layer: `None` (automatic), a dotted submodule name, or the submodule itself.

    Returns:
        The dotted name (`""` for the model itself) and the module.

    Raises:
        ValueError: if the model has no `nn.Linear` or the name does not exist.

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


def _describe(name: str, module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"{name!r} ({module.in_features} -> {module.out_features})"
    return repr(name)


class FeatureCapture:
    """Context manager that records the input of one layer on every forward pass.

    A forward hook stores the (detached) input tensor of the layer, and its
    output; the hook is removed on exit, also when an exception escapes. Works
    under `torch.no_grad()`, `torch.inference_mode()` and autocast (the features
    have whatever dtype reaches the layer, e.g. bfloat16 under CPU autocast), and
    on `torch.compile`d models (which run eagerly inside the block).

    With `layer=None`, the first forward pass inside a block checks the choice of
    [`find_final_linear`][lsdiffusion.features.find_final_linear]: it stands when
    the layer's output is the model's output, or when it is the only `nn.Linear`
    called whose width is that of the logits (a head applied before pooling).
    Otherwise the forward pass raises `ValueError` listing the candidates (for
    example timm's distilled DeiT, whose `head` and `head_dist` both feed the
    prediction, or a model that registers its head before its trunk): pass
    `layer=` to choose. The check needs the forward pass of the model itself (not
    of a submodule). For a model returning a tuple, the layer must be the only
    `nn.Linear` whose output is among the tuple's tensors. Logits made by no
    `nn.Linear` (tied embeddings used as `F.linear(h, embedding.weight)`) raise,
    saying so, as does a hidden layer that only has the logits' width next to an
    embedding with one row per class.

    Attributes:
        layer_name: dotted name of the hooked layer.
        layer: the hooked module.
        features: the input of the layer at the latest forward pass (`None`
            before the first one).
        output: the layer's output at the latest forward pass (detached like
            the features).

    Args:
        model: any `nn.Module`.
        layer: `None` (the last `nn.Linear`, checked as above), a dotted name such
            as `"fc"` / `"classifier.1"`, or the module itself.
        detach: detach the stored features from the autograd graph (default).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> with FeatureCapture(net) as cap, torch.no_grad():
        ...     logits = net(torch.randn(4, 5))
        >>> cap.layer_name, tuple(cap.features.shape), tuple(logits.shape)
        ('2', (4, 8), (4, 3))
        >>> len(net[2]._forward_hooks)  # removed on exit
        0
    """

    def __init__(
        self, model: nn.Module, layer: str | nn.Module | None = None, *, detach: bool = True
    ) -> None:
        self.model = model
        self.layer_name, self.layer = find_final_linear(model, layer)
        self.detach = bool(detach)
        self.features: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._eager = EagerCompiled(model)
        self._unchecked = layer is None
        self._called: dict[str, torch.Tensor] = {}

    def _hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        value = args[0] if args else kwargs.get("input")
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"the input of layer {self.layer_name!r} is a {type(value).__name__}, not a "
                "tensor; pass layer=... naming a layer that takes one tensor"
            )
        self.features = value.detach() if self.detach else value
        if isinstance(output, torch.Tensor):
            self.output = output.detach() if self.detach else output

    def _record(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self._called[name] = output

        return hook

    def _check(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """At the model's first forward pass: is the hooked layer the classifier?"""
        called, self._called = self._called, {}
        logits = output_tensor(output)
        items: list[torch.Tensor] = []
        if logits is None and isinstance(output, (tuple, list)):
            items = [t for t in output if isinstance(t, torch.Tensor) and t.dim() > 0]
        if (logits is None or logits.dim() == 0) and not items:
            return  # nothing to compare with (iter_features reports the output type)
        self._unchecked = False
        self._remove_checks()
        modules = dict(self.model.named_modules())
        name = type(self.model).__name__
        if logits is None:  # a tuple: the Linears whose output is one of its tensors
            producers = [n for n, out in called.items() if any(out is t for t in items)]
            if not producers or producers == [self.layer_name]:
                return
            self._unchecked = True
            listed = ", ".join(_describe(n, modules[n]) for n in producers)
            raise ValueError(
                f"cannot tell which nn.Linear of {name} is the classifier: the model returns a "
                f"{type(output).__name__} of {len(output)}, holding the outputs of {listed} "
                f"(the last registered nn.Linear is {_describe(self.layer_name, self.layer)}); "
                "pass layer='name' to choose"
            )
        if called.get(self.layer_name) is logits:
            return
        width = logits.shape[-1]
        producers = [n for n, out in called.items() if out is logits]
        candidates = producers or [n for n, out in called.items() if out.shape[-1] == width]
        # A candidate of the logits' width and shape that does not output them, next to an
        # embedding with one row per class: maybe tied embeddings used as F.linear (a head
        # applied before pooling has another shape and stands).
        unpooled = not candidates or any(called[c].shape == logits.shape for c in candidates)
        tied = [
            (n, m)
            for n, m in modules.items()
            if unpooled
            and isinstance(m, nn.Embedding)
            and m.num_embeddings == width
            and not any(getattr(modules[c], "weight", None) is m.weight for c in candidates)
        ]
        if candidates == [self.layer_name] and (producers or not tied):
            return
        self._unchecked = True  # the next forward pass checks again
        if not producers and (tied or not candidates):
            raise ValueError(self._no_head_message(logits, candidates, tied, modules))
        listed = ", ".join(_describe(n, modules[n]) for n in candidates)
        raise ValueError(
            f"cannot tell which nn.Linear of {name} is the classifier: "
            f"the last registered one is {_describe(self.layer_name, self.layer)}, but the "
            f"layers called in the forward pass whose output could be the logits "
            f"{tuple(logits.shape)} are {listed}; pass layer='name' to choose"
        )

    def _no_head_message(
        self,
        logits: torch.Tensor,
        candidates: list[str],
        tied: Sequence[tuple[str, nn.Module]],
        modules: dict[str, nn.Module],
    ) -> str:
        """The logits are no nn.Linear's output: a functional head, e.g. tied embeddings."""
        width = int(logits.shape[-1])
        same = (
            f"; {', '.join(_describe(n, modules[n]) for n in candidates)} "
            f"{'has' if len(candidates) == 1 else 'have'} their width but "
            f"{'does' if len(candidates) == 1 else 'do'} not output them"
            if candidates
            else ""
        )
        if tied:
            why = (
                f"; embedding {tied[0][0]!r} has {width} rows, as many as the logits have "
                "classes: tied embeddings computed as F.linear(h, embedding.weight)? Then no "
                "layer's input is the feature: make the head an nn.Linear sharing the weight "
                "(head = nn.Linear(D, V, bias=False); head.weight = embedding.weight) and call "
                "it, or pass layer='name'"
            )
        else:
            why = " (a functional head: F.linear or a matmul?); pass layer='name'"
        return (
            f"cannot tell which layer of {type(self.model).__name__} is the classifier: the "
            f"logits {tuple(logits.shape)} are made by no nn.Linear called in the forward "
            f"pass{same}{why} of the module whose input is the penultimate feature"
        )

    def _remove_checks(self) -> None:
        while len(self._handles) > 1:
            self._handles.pop().remove()

    def __enter__(self) -> Self:
        if self._handles:
            raise RuntimeError("this FeatureCapture is already active (nested use)")
        self.features = None
        self.output = None
        self._eager.__enter__()
        self._handles.append(self.layer.register_forward_hook(self._hook, with_kwargs=True))
        if self._unchecked:
            for name, module in self.model.named_modules():
                if isinstance(module, nn.Linear):
                    self._handles.append(module.register_forward_hook(self._record(name)))
            self._handles.append(self.model.register_forward_hook(self._check))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (idempotent); the last features stay available."""
        while self._handles:
            self._handles.pop().remove()
        self._called = {}
        self._eager.__exit__()

    def pop(self) -> torch.Tensor:
        """Return the latest features and clear them; raise if no forward pass happened."""
        if self.features is None:
            raise RuntimeError(
                f"layer {self.layer_name!r} was not called since the last pop(); did the "
                "model run a forward pass inside the `with` block?"
            )
        out, self.features = self.features, None
        return out


class FeatureBatch(NamedTuple):
    """Features, labels and logits of a batch or of a whole dataset.

    Shapes: features `(..., D)` (the layer input: `(N, D)` for image classifiers,
    `(B, L, D)` for token features), labels `(...)` int64, logits `(..., C)`.
    """

    features: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor


def _shape_batch(
    i: int,
    feats: torch.Tensor,
    head: torch.Tensor | None,
    logits: torch.Tensor,
    labels: torch.Tensor,
    cap: FeatureCapture,
    pool: str | None,
    ignore_index: int | None,
) -> FeatureBatch:
    if pool == "prediction" and feats.shape[:-1] != logits.shape[:-1]:
        feats = pool_prediction(feats, head, logits, cap.layer_name)
    lead = tuple(feats.shape[:-1])
    if lead != tuple(logits.shape[:-1]) and logits.dim() >= 1 and feats.dim() > logits.dim():
        raise ValueError(
            f"batch {i}: the features of layer {cap.layer_name!r} are {tuple(feats.shape)} "
            f"(one per token) but the logits are {tuple(logits.shape)}: the model pools after "
            "its head (e.g. GPT2ForSequenceClassification); pass pool='prediction' to take "
            "the token that feeds the prediction (the last non-padding token)"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if tuple(labels.shape) != lead or feats.dim() == 0:
        raise ValueError(
            f"batch {i}: features {tuple(feats.shape)}, logits {tuple(logits.shape)} and "
            f"labels {tuple(labels.shape)} disagree on the number of samples (labels must be "
            "(N,) for (N, D) features, (...) for (..., D))"
        )
    labels = labels.long()
    checked = labels.reshape(-1)
    if ignore_index is not None:
        checked = checked[checked != ignore_index]
    same_lead = lead == tuple(logits.shape[:-1]) and logits.dim() >= 1
    num_classes = int(logits.shape[-1]) if same_lead else 0
    check_labels(checked, checked.shape[0], num_classes, check_range=num_classes > 0)
    return FeatureBatch(feats, labels, logits.detach())


def iter_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layer: str | nn.Module | None = None,
    pool: Literal["prediction"] | None = None,
    ignore_index: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "features",
    eval_mode: bool = True,
    non_blocking: bool = True,
    max_batches: int | None = None,
) -> Iterator[FeatureBatch]:
    """Run `loader` through `model` and yield each batch's features, labels and logits.

    Each forward pass runs under `torch.no_grad()` and, with `eval_mode=True`, in
    eval mode, with the capture hook attached; the hook is removed and every
    module's train/eval flag restored before each batch is yielded, so the model is
    untouched between batches and after a `break` (its BatchNorm statistics update
    in a later training forward). Results stay on the model's device (stream them
    into [`ClassCentroids`][lsdiffusion.centroids.ClassCentroids] or
    [`TargetEntropy`][lsdiffusion.entropy.TargetEntropy]). Wrap the loop in
    `torch.autocast(...)` for mixed precision. The accepted batch forms and the
    token-feature rules are in the module's documentation: `(inputs, labels, ...)`
    or a mapping with `"labels"`; inputs called as `model(x)`, `model(*x)` or
    `model(**x)`.

    Args:
        model: the network (also `torch.compile`d: it runs eagerly while captured).
        loader: an iterable of batches (e.g. a `DataLoader`).
        layer: the layer whose input is recorded (see
            [`FeatureCapture`][lsdiffusion.features.FeatureCapture] for the check
            of the automatic choice).
        pool: `None` (features as the layer sees them) or `"prediction"`: for a
            head applied to every token before the model pools (`(B, L, D)`
            features, `(B, C)` logits), the feature of the token whose head output
            is the logits row (Hugging Face sequence classifiers: the last
            non-padding token).
        ignore_index: a label value exempt from the range check (padding tokens);
            the labels are passed through unchanged.
        device: where inputs are moved (default: the model's device).
        progress: show a progress line on stderr (off by default: library
            calls stay quiet unless asked).
        desc: the progress line's label.
        eval_mode: put the model in eval mode while running.
        non_blocking: passed to `Tensor.to` when moving inputs.
        max_batches: stop after this many batches (a positive int).

    Yields:
        [`FeatureBatch`][lsdiffusion.features.FeatureBatch] `(features, labels,
        logits)`, labels as int64.

    Raises:
        TypeError: labels that are not integers (float labels are never
            truncated); a batch of another form; `max_batches` not an int.
        ValueError: labels whose shape is not the features' leading shape, or not
            in [0, C) for `(..., C)` logits; token features with pooled logits
            without `pool="prediction"`; two candidate classifiers; `max_batches`
            below 1.

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
    check_max_batches(max_batches)
    if pool not in (None, "prediction"):
        raise ValueError(f"pool must be None or 'prediction', got {pool!r}")
    if ignore_index is not None:
        check_ignore_index(ignore_index)
    return _iter_features(
        model, loader, layer, pool, ignore_index, device, progress, desc, eval_mode,
        non_blocking, max_batches,
    )  # fmt: skip


def _iter_features(
    model: nn.Module,
    loader: Iterable[Any],
    layer: str | nn.Module | None,
    pool: str | None,
    ignore_index: int | None,
    device: torch.device | str | None,
    progress: bool,
    desc: str,
    eval_mode: bool,
    non_blocking: bool,
    max_batches: int | None,
) -> Iterator[FeatureBatch]:
    from lsdiffusion._progress import Progress

    cap = FeatureCapture(model, layer)
    dev = model_device(model) if device is None else torch.device(device)
    total = len(loader) if isinstance(loader, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    running = Running(model, eval_mode)
    with Progress(total, desc, "batches", enabled=progress) as bar:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            inputs, labels = split_batch(batch)
            with running, cap:  # hooks and modes only around the forward pass
                logits = logits_of(call(model, move(inputs, dev, non_blocking)))
            feats, head = cap.pop(), cap.output
            label_t = as_labels(labels, i).to(logits.device)
            out = _shape_batch(i, feats, head, logits, label_t, cap, pool, ignore_index)
            bar.update()
            yield out


def collect_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layer: str | nn.Module | None = None,
    pool: Literal["prediction"] | None = None,
    ignore_index: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    eval_mode: bool = True,
    to_cpu: bool = True,
    max_batches: int | None = None,
) -> FeatureBatch:
    """Run `loader` through `model` and concatenate features, labels and logits.

    Keeps everything in memory (N × D features): for ImageNet-size runs stream
    [`iter_features`][lsdiffusion.features.iter_features] into
    [`ClassCentroids`][lsdiffusion.centroids.ClassCentroids] instead. Token
    features `(B, L, D)` are concatenated along the first dimension (every batch
    must then have the same `L`).

    Args:
        model: the network.
        loader: an iterable of batches (see
            [`iter_features`][lsdiffusion.features.iter_features]).
        layer: the layer whose input is recorded.
        pool: see [`iter_features`][lsdiffusion.features.iter_features].
        ignore_index: see [`iter_features`][lsdiffusion.features.iter_features].
        device: where inputs are moved (default: the model's device).
        progress: show a progress line on stderr.
        eval_mode: put the model in eval mode while running.
        to_cpu: move each batch's results to CPU as they arrive.
        max_batches: stop after this many batches.

    Returns:
        [`FeatureBatch`][lsdiffusion.features.FeatureBatch] with features (N, D),
        labels (N,) int64 and logits (N, C) (or their token shapes).

    Raises:
        TypeError: see [`iter_features`][lsdiffusion.features.iter_features].
        ValueError: see [`iter_features`][lsdiffusion.features.iter_features]; a
            loader with no batch.

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
        pool=pool,
        ignore_index=ignore_index,
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
