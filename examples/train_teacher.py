"""Train a teacher with label smoothing on an ImageFolder dataset.

    python examples/train_teacher.py --data data/ --alpha 0.1 --epochs 30 --out teacher_ls.pt
    python examples/train_teacher.py --data data/ --quick --out teacher_ls.pt   # CPU-sized

The checkpoint is saved after every epoch (atomically), so an interrupted run
keeps its last finished epoch.

LabelSmoothingLoss(alpha) is ``F.cross_entropy(label_smoothing=alpha)``, computed
by a fused kernel. On CUDA the loop runs in channels_last and, with ``--amp``,
under float16 autocast with a GradScaler (``--amp-dtype bfloat16`` needs no
scaler; on the CPU ``--amp`` uses bfloat16). SGD with Nesterov momentum and a
cosine schedule stepped per batch. Use ``--alpha 0`` for a plain cross-entropy
teacher to compare against.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from common import (
    ARCHS,
    Precision,
    add_amp_args,
    add_common_args,
    batches,
    build_model,
    check_common,
    check_out_file,
    check_range,
    dataset_classes,
    evaluate,
    finish_args,
    image_folder,
    make_loader,
    save_checkpoint,
    seed_everything,
    sgd_cosine,
)

from lsdiffusion import LabelSmoothingLoss


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    add_amp_args(parser)
    parser.add_argument("--alpha", type=float, default=0.1, help="label smoothing")
    parser.add_argument("--arch", choices=ARCHS, default="tiny")
    parser.add_argument("--epochs", type=int, default=None, help="(default: 30; --quick: 3)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--out", default="teacher.pt", help="checkpoint path (default: teacher.pt)")
    return finish_args(parser.parse_args(argv))


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no training, before any (one line and status 2 on failure)."""
    check_common(args)
    check_range("alpha", args.alpha, 0.0, 1.0)
    check_range("lr", args.lr, 0.0, math.inf, open_low=True)
    check_out_file(args.out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_args(args)
    generator = seed_everything(args.seed)
    device = torch.device(args.device)
    precision = Precision(args, device)

    train_set = image_folder(args, "train", train=True)
    val_set = image_folder(args, "val", train=False)
    classes = dataset_classes(train_set)
    train_loader = make_loader(train_set, args, train=True, generator=generator)
    val_loader = make_loader(val_set, args, train=False)

    model = build_model(args.arch, len(classes)).to(device, memory_format=precision.memory_format)
    criterion = LabelSmoothingLoss(alpha=args.alpha)
    optimizer, scheduler = sgd_cosine(model.parameters(), args, args.epochs * len(train_loader))
    print(
        f"teacher {args.arch}, {len(classes)} classes, {len(train_set)} train / "
        f"{len(val_set)} val images, alpha={args.alpha}, {device}, {precision}"
    )

    history: list[dict[str, float]] = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        # Sums stay on the device: one sync per epoch, not one per batch.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for images, labels in batches(train_loader, device, precision.memory_format):
            with precision.autocast():
                logits = model(images)
                loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * labels.numel()
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += labels.numel()
        val_acc = evaluate(model, val_loader, device, precision.memory_format, precision.autocast)
        stats = {
            "epoch": epoch,
            "loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "val_acc": val_acc,
        }
        history.append(stats)
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {stats['loss']:.4f}  "
            f"train acc {stats['train_acc']:6.2%}  val acc {val_acc:6.2%}  "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        path = save_checkpoint(  # every epoch: an interrupted run keeps its last epoch
            args.out,
            model,
            args.arch,
            classes,
            kind="teacher",
            alpha=args.alpha,
            epoch=epoch,
            epochs=args.epochs,
            seed=args.seed,
            image_size=args.image_size,
            val_acc=val_acc,
        )
    print(f"saved {args.out} (after every epoch)")
    path = Path(args.out)
    return {"history": history, "checkpoint": str(path), "classes": classes}


if __name__ == "__main__":
    main()
