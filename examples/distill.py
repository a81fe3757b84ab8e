r"""Distil a student from a teacher checkpoint at temperature T.

    python examples/distill.py --data data/ --teacher teacher_ls.pt --temperature 1 \
        --epochs 30 --out student_T1.pt
    python examples/distill.py --data data/ --quick --teacher teacher_ls.pt -T 1   # CPU-sized

The loss is Hinton's KD, T² · KL(p_teacher^T ‖ p_student^T) averaged over the
batch (KDLoss). The paper's finding: with a label-smoothed teacher, distil at a
low temperature (T = 1); at higher T the student's features of a class drift
towards semantically similar classes (measure it with analyze.py). ``--beta``
below 1 mixes in the cross-entropy with the labels: (1 - β)·CE + β·KD (the
paper uses β = 1). The teacher runs in eval mode under ``torch.no_grad()`` on
the same augmented batch as the student; the hard (label CE) and soft (T²·KL)
terms are logged from ``KDLoss.terms``. The checkpoint is saved after every
epoch (atomically).
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
    check_classes,
    check_common,
    check_file,
    check_out_file,
    check_range,
    dataset_classes,
    evaluate,
    finish_args,
    image_folder,
    load_checkpoint,
    make_loader,
    save_checkpoint,
    seed_everything,
    sgd_cosine,
)

from lsdiffusion import KDLoss


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    add_amp_args(parser)
    parser.add_argument("--teacher", required=True, help="checkpoint from train_teacher.py")
    parser.add_argument("--temperature", "-T", type=float, required=True)
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the KD term")
    parser.add_argument("--arch", choices=ARCHS, default="tiny", help="student architecture")
    parser.add_argument("--epochs", type=int, default=None, help="(default: 30; --quick: 3)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--out", default=None, help="default: student_T<temperature>.pt")
    parser.set_defaults(image_size=None)  # default: the teacher's
    return finish_args(parser.parse_args(argv), keep_unset=("image_size",))


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no training, before any (one line and status 2 on failure)."""
    check_common(args)
    check_file(args.teacher, "--teacher")
    check_range("temperature", args.temperature, 0.0, math.inf, open_low=True)
    check_range("beta", args.beta, 0.0, 1.0)
    check_range("lr", args.lr, 0.0, math.inf, open_low=True)
    check_out_file(args.out or f"student_T{args.temperature:g}.pt")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_args(args)
    generator = seed_everything(args.seed)
    device = torch.device(args.device)
    precision = Precision(args, device)
    out = args.out or f"student_T{args.temperature:g}.pt"
    teacher, teacher_ckpt = load_checkpoint(args.teacher, device)
    if args.image_size is None:
        args.image_size = int(teacher_ckpt["meta"].get("image_size", 224))

    train_set = image_folder(args, "train", train=True)
    val_set = image_folder(args, "val", train=False)
    classes = dataset_classes(train_set)
    train_loader = make_loader(train_set, args, train=True, generator=generator)
    val_loader = make_loader(val_set, args, train=False)

    check_classes(teacher_ckpt, classes, f"teacher {args.teacher}")
    teacher = teacher.to(memory_format=precision.memory_format).eval().requires_grad_(False)
    teacher_acc = evaluate(teacher, val_loader, device, precision.memory_format, precision.autocast)

    student = build_model(args.arch, len(classes)).to(device, memory_format=precision.memory_format)
    criterion = KDLoss(temperature=args.temperature, beta=args.beta)
    optimizer, scheduler = sgd_cosine(student.parameters(), args, args.epochs * len(train_loader))
    print(
        f"student {args.arch} <- teacher {teacher_ckpt['arch']} "
        f"(alpha={teacher_ckpt['meta'].get('alpha')}, val acc {teacher_acc:.2%}), "
        f"{criterion}, {device}, {precision}"
    )

    history: list[dict[str, float]] = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        student.train()
        sums = torch.zeros(3, device=device)  # loss, hard, soft (summed over samples)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for images, labels in batches(train_loader, device, precision.memory_format):
            with precision.autocast():
                with torch.no_grad():
                    teacher_logits = teacher(images)
                student_logits = student(images)
                # hard: the label cross-entropy, reported whenever labels are passed; it
                # enters the loss with weight 1 - beta (0 for the paper's beta = 1).
                loss, hard, soft = criterion.terms(student_logits, teacher_logits, labels)
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
            scheduler.step()
            sums += torch.stack([loss.detach(), hard, soft]) * labels.numel()
            correct += (student_logits.argmax(dim=1) == labels).sum()
            seen += labels.numel()
        val_acc = evaluate(student, val_loader, device, precision.memory_format, precision.autocast)
        loss_avg, hard_avg, soft_avg = (sums / seen).tolist()
        stats = {
            "epoch": epoch,
            "loss": loss_avg,
            "hard": hard_avg,
            "soft": soft_avg,
            "train_acc": correct.item() / seen,
            "val_acc": val_acc,
        }
        history.append(stats)
        # KDTerms.hard is the label cross-entropy, logged even when beta == 1 (weight 0).
        hard_part = f"hard CE {hard_avg:.4f}, " if hard_avg > 0 else ""
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {loss_avg:.4f}  "
            f"({hard_part}soft T²·KL {soft_avg:.4f})  "
            f"train acc {stats['train_acc']:6.2%}  val acc {val_acc:6.2%}  "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        save_checkpoint(  # every epoch: an interrupted run keeps its last epoch
            out,
            student,
            args.arch,
            classes,
            kind="student",
            temperature=args.temperature,
            beta=args.beta,
            teacher=str(args.teacher),
            teacher_alpha=teacher_ckpt["meta"].get("alpha"),
            epoch=epoch,
            epochs=args.epochs,
            seed=args.seed,
            image_size=args.image_size,
            val_acc=val_acc,
        )

    final_acc = history[-1]["val_acc"] if history else float("nan")
    path = Path(out)
    print(f"teacher val acc {teacher_acc:.2%}; student val acc {final_acc:.2%}")
    print(f"saved {path} (after every epoch)")
    return {"history": history, "teacher_acc": teacher_acc, "checkpoint": str(path)}


if __name__ == "__main__":
    main()
