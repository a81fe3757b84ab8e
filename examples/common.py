"""Shared pieces of the image examples: data, models, checkpoints, devices, AMP.

Every example imports this file as ``common`` (run them from anywhere as
``python examples/<script>.py``: Python puts the script's folder on ``sys.path``).

torchvision is optional. When it is importable, datasets are
``torchvision.datasets.ImageFolder`` with the usual ImageNet transforms and
``--arch resnet18`` is available; otherwise :class:`PILImageFolder` reads the
same folder layout with Pillow, and ``--arch tiny`` (a small CNN) works
everywhere. ``--loader pil`` forces the Pillow reader.

Folder layout (torchvision's): ``DATA/train/<class>/*.png`` and
``DATA/val/<class>/*.png``; or ``DATA/<class>/*.png`` (then the one split is used
for training and evaluation). Class indices follow the sorted folder names.
``make_data.py`` writes a tiny one to try the examples on.

``--quick`` is a CPU-sized preset (32-pixel images, a few epochs, no DataLoader
workers, one thread) under which the walk-through of docs/examples.md runs in
about a minute on two cores; options given explicitly override it.

Threads: PyTorch uses one thread per core by default, and each DataLoader
worker (and every other busy process) competes for the same cores. When they
outnumber the cores, PyTorch's OpenMP threads wait on each other and small
operations slow down many times over (the token example took 26 s with two
threads on a busy 2-core machine, 0.8 s with one). For small models on a CPU,
use ``--threads 1`` (or ``OMP_NUM_THREADS=1``); in general keep threads +
workers <= cores.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHS = ("tiny", "resnet18")

# Defaults of the options that --quick changes ("full" is the ImageNet-style setup).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "image_size": 224,
        "batch_size": 128,
        "workers": min(8, os.cpu_count() or 1),
        "epochs": 30,
        "threads": None,  # torch's default: one per core
    },
    "quick": {"image_size": 32, "batch_size": 32, "workers": 0, "epochs": 3, "threads": 1},
}


# ----------------------------------------------------------------------------- setup


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python and torch; return a generator for the DataLoader's shuffling.

    On the CPU this makes a run repeatable (same seed, same machine, same numbers).
    On CUDA, cuDNN autotuning is left on for speed, so runs may differ slightly.
    """
    random.seed(seed)  # some torchvision transforms draw from Python's RNG
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _preset_help(key: str) -> str:
    full = PRESETS["full"][key]
    return (
        f"(default: {'one per core' if full is None else full}; --quick: {PRESETS['quick'][key]})"
    )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every image example shares."""
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder root")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized preset for a first run: 32-pixel images, 3 epochs, batch 32, no "
        "DataLoader workers, 1 thread; options given explicitly win",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels " + _preset_help("image_size"),
    )
    parser.add_argument("--batch-size", type=int, default=None, help=_preset_help("batch_size"))
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader processes " + _preset_help("workers")
    )
    add_threads_arg(parser)
    parser.add_argument("--device", default=default_device(), help="default: cuda if available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--loader",
        choices=("auto", "torchvision", "pil"),
        default="auto",
        help="dataset reader: torchvision's ImageFolder when importable (auto) or Pillow",
    )


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; keep threads + DataLoader workers <= cores "
        + _preset_help("threads"),
    )


def finish_args(
    args: argparse.Namespace, *, keep_unset: tuple[str, ...] = ()
) -> argparse.Namespace:
    """Fill unset options from the preset (``--quick`` or the full defaults); apply ``--threads``.

    Options named in ``keep_unset`` stay ``None`` (the script fills them, e.g.
    ``distill.py`` takes the teacher's image size).
    """
    preset = PRESETS["quick" if getattr(args, "quick", False) else "full"]
    for key, value in preset.items():
        if key in vars(args) and getattr(args, key) is None and key not in keep_unset:
            setattr(args, key, value)
    for key in ("image_size", "batch_size", "epochs", "threads"):
        value = getattr(args, key, None)
        if value is not None and value < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "workers", None) is not None and args.workers < 0:
        fail(f"--workers must be >= 0, got {args.workers}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


# ----------------------------------------------------------------------------- checks


def fail(message: str) -> NoReturn:
    """One line on stderr, ``<script>: error: <message>``, and exit status 2 (like argparse)."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_common(args: argparse.Namespace) -> None:
    """Check ``--data`` and ``--device`` (called first in ``main``; parse_args only parses)."""
    check_data(args.data)
    check_device(args.device)


def check_data(data: Path) -> None:
    """``--data`` must be a folder (``DATA/train``, ``DATA/val`` or class folders)."""
    if not data.is_dir():
        fail(f"--data {data} is not a folder (expected DATA/train/<class>/*.png, ...)")


def check_device(device: str) -> None:
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"--device {device!r} is not usable here: {first[:160]}")


def check_range(
    name: str, value: float, low: float, high: float, *, open_low: bool = False
) -> None:
    """``low <= value <= high`` (``low < value`` with ``open_low``), else :func:`fail`."""
    ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        fail(f"--{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")


def check_out_file(path: str | Path, flag: str = "--out") -> None:
    """The checkpoint's folder can be created and written into (checked before training)."""
    out = Path(path)
    if out.is_dir():
        fail(f"{flag} {out} is a folder; give a file name such as {out / 'model.pt'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe-", dir=out.parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        fail(f"{flag} {out}: cannot write into {out.parent} ({exc.strerror or exc})")


def check_file(path: str | Path, flag: str) -> None:
    if not Path(path).is_file():
        fail(f"{flag} {path} is not a file")


def add_amp_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    parser.add_argument(
        "--amp-dtype",
        choices=("auto", "float16", "bfloat16"),
        default="auto",
        help="autocast dtype; auto: float16 (+ GradScaler) on CUDA, bfloat16 on CPU",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format (default: on for CUDA)",
    )


class Precision:
    """Autocast, gradient scaling and memory format, from the parsed ``--amp`` options."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.device_type = device.type
        self.enabled = bool(args.amp)
        if args.amp_dtype == "auto":
            self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        else:
            self.dtype = getattr(torch, args.amp_dtype)
        channels_last = args.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # float16 gradients can underflow: scale the loss. bfloat16 needs no scaling.
        use_scaler = self.enabled and self.dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def __str__(self) -> str:
        amp = f"autocast {str(self.dtype).removeprefix('torch.')}" if self.enabled else "float32"
        fmt = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        scaler = ", GradScaler" if self.scaler.is_enabled() else ""
        return f"{amp}{scaler}, {fmt}"


def batches(
    loader: DataLoader[Any], device: torch.device, memory_format: torch.memory_format
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` moved to ``device`` (images in ``memory_format``)."""
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        yield images, labels.to(device, non_blocking=True)


# ----------------------------------------------------------------------------- data


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or a torchvision built for another torch
        return False
    return True


class PILImageFolder(Dataset[tuple[torch.Tensor, int]]):
    """A minimal ``torchvision.datasets.ImageFolder`` with Pillow only.

    Same layout and attributes (``classes``, ``class_to_idx``, ``samples``,
    ``targets``). Images are centre-cropped to a square, resized to ``image_size``,
    randomly flipped when ``train`` is true, and normalised with ImageNet statistics.
    """

    def __init__(self, root: str | Path, image_size: int, train: bool) -> None:
        from PIL import Image

        self._image = Image
        self.root = Path(root)
        self.classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {self.root}")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for name in self.classes:
            for dirpath, _, files in sorted(os.walk(self.root / name, followlinks=True)):
                for file in sorted(files):
                    if file.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, file), self.class_to_idx[name]))
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {self.root}")
        self.targets = [label for _, label in self.samples]
        self.image_size = image_size
        self.train = train
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import ImageOps

        path, label = self.samples[index]
        with self._image.open(path) as img:
            size = (self.image_size, self.image_size)
            img = ImageOps.fit(img.convert("RGB"), size, self._image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).copy()
        x = torch.from_numpy(array).permute(2, 0, 1).float().div_(255)
        if self.train and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return (x - self.mean) / self.std, label


def _torchvision_folder(root: Path, image_size: int, train: bool) -> Dataset[Any]:
    from torchvision import datasets, transforms

    if train:
        tf = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        tf = [transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size)]
    tf += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return datasets.ImageFolder(str(root), transform=transforms.Compose(tf))  # type: ignore[no-any-return]


def split_root(data: Path, split: str) -> Path:
    """``DATA/<split>`` when it exists, else ``DATA`` itself (a single split)."""
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a directory")
    sub = data / split
    return sub if sub.is_dir() else data


def image_folder(args: argparse.Namespace, split: str, train: bool) -> Dataset[Any]:
    """The ImageFolder of ``split`` (``"train"``/``"val"``), with train or eval transforms."""
    root = split_root(args.data, split)
    use_tv = args.loader == "torchvision" or (args.loader == "auto" and torchvision_available())
    if use_tv:
        return _torchvision_folder(root, args.image_size, train)
    return PILImageFolder(root, args.image_size, train)


def make_loader(
    dataset: Dataset[Any],
    args: argparse.Namespace,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=train,
        drop_last=False,
        num_workers=args.workers,
        pin_memory=str(args.device).startswith("cuda"),
        persistent_workers=args.workers > 0,
        generator=generator,
    )


def dataset_classes(dataset: Dataset[Any]) -> list[str]:
    return list(dataset.classes)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- models


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU blocks, global average pooling, and a final ``nn.Linear`` named ``fc``.

    The input of ``fc`` (``width * 4`` features) is the penultimate feature the
    analysis measures, as for torchvision's ResNets.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, width, 1),
            _conv_bn(width, 2 * width, 2),
            _conv_bn(2 * width, 4 * width, 2),
            _conv_bn(4 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def build_model(arch: str, num_classes: int) -> nn.Module:
    """``"tiny"`` (:class:`TinyCNN`, no dependency) or ``"resnet18"`` (torchvision, untrained)."""
    if arch == "tiny":
        return TinyCNN(num_classes)
    if arch == "resnet18":
        if not torchvision_available():
            raise SystemExit("--arch resnet18 needs torchvision (pip install torchvision)")
        from torchvision.models import resnet18

        return resnet18(weights=None, num_classes=num_classes)
    raise SystemExit(f"--arch must be one of {ARCHS}, got {arch!r}")


def sgd_cosine(
    params: Any, args: argparse.Namespace, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Nesterov SGD with a per-step cosine decay to zero (the usual ImageNet recipe)."""
    optimizer = torch.optim.SGD(
        params,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=True,
        weight_decay=args.weight_decay,
    )
    steps = max(1, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    return optimizer, scheduler


def save_checkpoint(
    path: str | Path, model: nn.Module, arch: str, classes: list[str], **meta: Any
) -> Path:
    """Save the weights with what is needed to rebuild the model (arch, classes) and ``meta``.

    ``meta`` holds plain values (numbers, strings), so ``torch.load(weights_only=True)``
    reads the file back. The file is written atomically (a temporary file, then a
    rename): the training scripts save after every epoch, and an interrupt leaves
    the previous epoch's checkpoint, never a truncated one.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    ckpt = {
        "arch": arch,
        "num_classes": len(classes),
        "classes": list(classes),
        "state_dict": state,
        "meta": meta,
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint`; return it (on ``device``) and the dict."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["arch"], int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device), ckpt


def check_classes(ckpt: dict[str, Any], classes: list[str], what: str) -> None:
    if list(ckpt["classes"]) != list(classes):
        raise SystemExit(
            f"{what} was trained on classes {ckpt['classes'][:5]}... ({ckpt['num_classes']}), "
            f"but --data has {classes[:5]}... ({len(classes)}); use the same dataset"
        )


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (one device sync at the end)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for images, labels in batches(loader, device, memory_format):
        with autocast():
            logits = model(images)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += labels.numel()
    model.train(was_training)
    return correct.item() / max(seen, 1)
