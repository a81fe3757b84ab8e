"""Models by name, state-dict checkpoints and evaluation data for `lsdiffusion analyze`.

Optional packages (timm, torchvision, Pillow, a user's module) are imported only
when a name asks for them; a missing one is reported as a `ValueError` naming it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

__all__ = ["load_data", "load_model", "load_state_dict", "read_torch_file", "strip_prefixes"]

_PREFIXES = ("module.", "_orig_mod.", "model.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise ValueError(
            f"{what} needs the Python package {missing!r}, which is not importable here "
            f"({exc}); pip install {missing.split('.')[0]}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_torch_file(path: str | Path, what: str, expected: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; any failure is one `ValueError` line.

    Args:
        path: the file.
        what: how the message names it (`"--teacher t.pt"`).
        expected: what the file should hold, for the message about a pickled object.

    Raises:
        ValueError: the file is empty or cut short, is not a torch file, or holds
            Python objects that `weights_only` loading refuses (a whole pickled
            model: the class is named).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is not None:
            raise ValueError(
                f"{what}: holds a pickled {found.group(1)} object, which torch.load("
                f"weights_only=True) does not run; save {expected} instead"
            ) from None
        raise ValueError(
            f"{what}: not a torch file (written with torch.save); the unpickler failed: "
            f"{_weights_only_reason(exc)}"
        ) from None
    except EOFError:
        raise ValueError(f"{what}: empty or cut short; not a torch file") from None
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{what}: cannot read it as a torch file ({_first_line(exc)})") from None


def _weights_only_reason(exc: BaseException) -> str:
    """The unpickler's own reason inside torch's long weights_only message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return lines[i + 1][:200]
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:200]
    return _first_line(exc)


def load_model(spec: str, num_classes: int) -> nn.Module:
    """Build an untrained model from `timm:NAME`, `torchvision:NAME` or `package.module:factory`.

    Args:
        spec: `timm:NAME` (`timm.create_model(NAME, pretrained=False,
            num_classes=K)`), `torchvision:NAME` (`torchvision.models.get_model(NAME,
            weights=None, num_classes=K)`) or `package.module:factory` (called as
            `factory(num_classes=K)`; the module is imported from `sys.path`).
        num_classes: K, the number of classes of the data.

    Returns:
        The model (random weights; load a checkpoint into it).

    Raises:
        ValueError: a malformed name, a missing package or factory.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or "" in spec.split(":"):
        raise ValueError(
            f"--model must be timm:NAME, torchvision:NAME or package.module:factory, got {spec!r}"
        )
    source, name = spec.split(":")
    if source == "timm":
        timm = _import("timm", f"--model {spec}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)  # type: ignore[no-any-return]
    if source == "torchvision":
        models = _import("torchvision.models", f"--model {spec}")
        return models.get_model(name, weights=None, num_classes=num_classes)  # type: ignore[no-any-return]
    module = _import(source, f"--model {spec}")
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: module {source!r} has no callable {name!r}")
    model = factory(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the `module.` (DDP), `_orig_mod.` (torch.compile) and `model.` key prefixes.

    A prefix is removed only when every key carries it, repeatedly
    (`module._orig_mod.fc.weight` becomes `fc.weight`).

    Examples:
        >>> sorted(strip_prefixes({"module._orig_mod.fc.weight": 1, "module._orig_mod.fc.bias": 2}))
        ['fc.bias', 'fc.weight']
    """
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def load_state_dict(path: str | Path, model: nn.Module, flag: str = "checkpoint") -> None:
    """Load a state-dict file into `model` (a plain state dict or one nested under a key).

    Accepted: `{name: tensor}`, or a dict holding one under `state_dict`,
    `model_state_dict`, `model` or `module` (training scripts' checkpoints);
    key prefixes are stripped with
    `strip_prefixes`. Read with
    `torch.load(weights_only=True)`: no code from the file runs.

    Raises:
        ValueError: an unreadable file, no state dict in it, or keys/shapes that
            do not match the model (the first few named).
    """
    obj = read_torch_file(
        path, f"{flag} {path}", "a state dict (torch.save(model.state_dict(), path))"
    )
    state = obj
    for key in _NESTED_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{flag} {path}: holds no state dict (a mapping of names to tensors)")
    state = strip_prefixes(state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ValueError(
            f"{flag} {path} does not fit --model {type(model).__name__}: {' '.join(first)}"
        ) from None


class ImageFolderEval(Dataset[tuple[torch.Tensor, int]]):
    """`DATA/<class>/*.png` read with Pillow, centre-cropped, resized and normalised (ImageNet)."""

    def __init__(self, root: Path, image_size: int) -> None:
        self.image = _import("PIL.Image", "--data (an image folder)")
        self.ops = _import("PIL.ImageOps", "--data (an image folder)")
        self.classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.samples = [
            (os.path.join(dirpath, f), i)
            for i, name in enumerate(self.classes)
            for dirpath, _, files in sorted(os.walk(root / name, followlinks=True))
            for f in sorted(files)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        self.size = (image_size, image_size)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with self.image.open(path) as img:
            img = self.ops.fit(img.convert("RGB"), self.size, self.image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = data.view(self.size[1], self.size[0], 3).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, label


def load_data(
    path: str | Path, *, image_size: int = 224, split: str = "val"
) -> tuple[Dataset[Any], list[str]]:
    """The evaluation data and its class names, from an image folder or a tensor file.

    Args:
        path: a folder `DATA/<split>/<class>/*.png` (or `DATA/<class>/*.png`), or a
            file saved with `torch.save`: `{"inputs": (N, ...), "labels": (N,),
            "classes": [names]}` (`classes` optional) or `(inputs, labels)`.
        image_size: side of the (square) images read from a folder.
        split: the sub-folder to use when it exists.

    Returns:
        `(dataset, class names)`; classes of a folder follow the sorted folder
        names, those of a tensor file without names are `"0"`, `"1"`, ...

    Raises:
        ValueError: a missing path, a folder without classes or images, a tensor
            file of another form.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"--data {root} does not exist")
    if root.is_dir():
        if (root / split).is_dir():
            root = root / split
        folder = ImageFolderEval(root, image_size)
        if not folder.classes or not folder.samples:
            raise ValueError(f"--data {root}: no class folders with images in it")
        return folder, folder.classes
    obj = read_torch_file(
        root, f"--data {root}", "tensors (torch.save({'inputs': x, 'labels': y}, path))"
    )
    names: list[str] | None = None
    if isinstance(obj, Mapping) and "inputs" in obj and "labels" in obj:
        inputs, labels = obj["inputs"], obj["labels"]
        names = [str(c) for c in obj["classes"]] if "classes" in obj else None
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        inputs, labels = obj
    else:
        raise ValueError(
            f"--data {root}: a tensor file must hold {{'inputs', 'labels'[, 'classes']}} or "
            "(inputs, labels)"
        )
    if not isinstance(inputs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"--data {root}: inputs and labels must be tensors")
    if labels.dim() != 1 or labels.shape[0] != inputs.shape[0] or labels.is_floating_point():
        raise ValueError(
            f"--data {root}: labels must be (N,) integers with N = {inputs.shape[0]}, got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    k = int(labels.max()) + 1 if labels.numel() else 0
    names = names or [str(i) for i in range(k)]
    if k > len(names) or (labels.numel() and int(labels.min()) < 0):
        raise ValueError(f"--data {root}: labels outside [0, {len(names) - 1}]")
    return TensorDataset(inputs, labels.long()), names
