"""Token-level distillation of a small sequence model on synthetic "translation" data.

    python examples/distill_tokens.py --temperature 1            # about 1 minute on a 2-core CPU
    python examples/distill_tokens.py --quick                    # a few seconds

Sequence models emit logits of shape (B, L, V), the class (vocabulary) dim last,
as in the paper's translation experiments. Both losses take ``dim=-1``, and
padded positions are masked through the target: they hold the PAD token, which
is the loss's ``ignore_index``, so they count in neither the hard nor the soft
term, nor in the averages.

The task: sentences of random length (``--min-len`` to ``--max-len`` tokens,
right-padded with PAD = 0) are translated word by word with one of two
dictionaries, chosen by whether the previous source word is odd or even (so the
model needs context). Output words come in groups of four "synonyms"; with
probability ``--noise`` a training target is replaced by a random synonym, so
the data has semantically similar classes, like ImageNet's retrievers. Accuracy
is measured on held-out sentences against the noise-free translation.

1. The teacher (a GRU) is trained with LabelSmoothingLoss(alpha, dim=-1, ignore_index=PAD).
2. A smaller student is distilled with KDLoss(T, dim=-1, ignore_index=PAD).

The models are small, so on a CPU the default is one thread (``--threads``):
with one thread per core, PyTorch's threads wait on each other whenever
another process is busy, and each step gets many times slower.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lsdiffusion import KDLoss, LabelSmoothingLoss
from lsdiffusion.entropy import TargetEntropy

PAD = 0  # padding token of the inputs and ignore_index of the targets
SYNONYMS = 4  # output words come in groups of this many


class SyntheticTranslation:
    """Random source sentences and their (optionally noisy) word-by-word translations."""

    def __init__(self, vocab: int, min_len: int, max_len: int, noise: float, seed: int) -> None:
        if vocab < 2 * SYNONYMS + 1 or not 1 <= min_len <= max_len:
            raise SystemExit(f"need --vocab >= {2 * SYNONYMS + 1} and 1 <= --min-len <= --max-len")
        g = torch.Generator().manual_seed(seed)
        words = vocab - 1  # tokens 1..vocab-1; 0 is PAD
        # Two dictionaries (permutations of the words), chosen by the previous word's parity.
        self.dictionaries = torch.stack([torch.randperm(words, generator=g) + 1 for _ in range(2)])
        self.vocab, self.min_len, self.max_len, self.noise = vocab, min_len, max_len, noise

    def batch(
        self, size: int, generator: torch.Generator, noisy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(source, target, clean_target)``, each (size, max length in batch)."""
        lengths = torch.randint(self.min_len, self.max_len + 1, (size,), generator=generator)
        length = int(lengths.max())
        source = torch.randint(1, self.vocab, (size, length), generator=generator)
        pad = torch.arange(length) >= lengths.unsqueeze(1)
        source[pad] = PAD
        previous = torch.cat([torch.ones(size, 1, dtype=torch.long), source[:, :-1]], dim=1)
        which = previous % 2  # PAD never precedes a word: padding is on the right
        clean = self.dictionaries[which, (source - 1).clamp(min=0)]
        target = clean.clone()
        if noisy and self.noise > 0:
            flip = torch.rand(size, length, generator=generator) < self.noise
            group = (clean - 1) // SYNONYMS * SYNONYMS + 1
            synonym = group + torch.randint(0, SYNONYMS, (size, length), generator=generator)
            target = torch.where(flip & (synonym < self.vocab), synonym, clean)
        target[pad] = PAD
        clean[pad] = PAD
        return source, target, clean


class Translator(nn.Module):
    """Embedding, one GRU layer, and a linear layer to the vocabulary: (B, L) -> (B, L, V)."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.fc = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.rnn(self.embed(tokens))  # left to right: right padding never leaks in
        return self.fc(hidden)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few-second run: --steps 100 --eval-batches 4 (options given explicitly win)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps of each model (default: 600)"
    )
    parser.add_argument("--vocab", type=int, default=128, help="V, PAD included")
    parser.add_argument("--temperature", "-T", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.1, help="teacher's label smoothing")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the KD term")
    parser.add_argument("--noise", type=float, default=0.1, help="synonym-noise probability")
    parser.add_argument("--min-len", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-dim", type=int, default=128)
    parser.add_argument("--student-dim", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-batches", type=int, default=None, help="(default: 20)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; see the docstring)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    preset = {"steps": 100, "eval_batches": 4} if args.quick else {"steps": 600, "eval_batches": 20}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    def fail(message: str) -> None:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    for key in ("steps", "eval_batches", "threads", "batch_size", "min_len", "max_len", "vocab"):
        if getattr(args, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.min_len > args.max_len:
        fail(f"--min-len ({args.min_len}) must not exceed --max-len ({args.max_len})")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        fail(f"--temperature must be finite and > 0, got {args.temperature:g}")
    for key in ("alpha", "beta", "noise"):
        if not 0 <= getattr(args, key) <= 1:
            fail(f"--{key} must be in [0, 1], got {getattr(args, key):g}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        fail(f"--lr must be finite and > 0, got {args.lr:g}")
    return args


@torch.no_grad()
def token_accuracy(
    model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> float:
    """Accuracy over the non-PAD positions against the noise-free translation."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    total = torch.zeros((), dtype=torch.int64)
    for source, _, clean in data:
        mask = clean != PAD
        prediction = model(source).argmax(dim=-1)  # (B, L)
        correct += ((prediction == clean) & mask).sum().cpu()
        total += mask.sum().cpu()
    model.train(was_training)
    return correct.item() / max(total.item(), 1)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    task = SyntheticTranslation(args.vocab, args.min_len, args.max_len, args.noise, args.seed)
    held_out = torch.Generator().manual_seed(args.seed + 1)
    eval_data = []
    for _ in range(args.eval_batches):
        source, target, clean = task.batch(args.batch_size, held_out, noisy=False)
        eval_data.append((source.to(device), target.to(device), clean.to(device)))

    def train(model: nn.Module, loss_fn: Any, name: str, teacher: nn.Module | None = None) -> None:
        generator = torch.Generator().manual_seed(args.seed + 2)  # same batches for both models
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=max(1, args.steps)
        )
        sums = torch.zeros(3, device=device)
        tokens = torch.zeros((), device=device)
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            source, target, _ = (t.to(device) for t in task.batch(args.batch_size, generator))
            logits = model(source)  # (B, L, V)
            if teacher is None:
                loss = loss_fn(logits, target)  # LabelSmoothingLoss(dim=-1, ignore_index=PAD)
                hard = soft = torch.zeros((), device=device)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(source)
                loss, hard, soft = loss_fn.terms(logits, teacher_logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = (target != PAD).sum()
            sums += torch.stack([loss.detach(), hard, soft]) * n
            tokens += n
            if step % max(1, args.steps // 5) == 0 or step == args.steps:
                avg = (sums / tokens).tolist()
                hard_part = f"hard CE {avg[1]:.4f}, "  # label CE, logged whatever beta
                detail = f" ({hard_part}soft T²·KL {avg[2]:.4f})" if teacher else ""
                print(
                    f"{name} step {step:5d}/{args.steps}  loss/token {avg[0]:.4f}{detail}  "
                    f"held-out token acc {token_accuracy(model, eval_data):6.2%}  "
                    f"({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
                sums.zero_()
                tokens.zero_()
        model.eval()

    teacher = Translator(args.vocab, args.teacher_dim).to(device)
    print(f"teacher: GRU {args.teacher_dim}, LabelSmoothingLoss(alpha={args.alpha}), {device}")
    train(teacher, LabelSmoothingLoss(alpha=args.alpha, dim=-1, ignore_index=PAD), "teacher")
    teacher.requires_grad_(False)

    # How smooth are the teacher's targets at T? Only real tokens: select them before pooling.
    entropy = TargetEntropy(sorted({1.0, args.temperature}), dim=-1)
    with torch.no_grad():
        for source, _, clean in eval_data:
            entropy.update(teacher(source)[clean != PAD])  # (tokens, V)
    entropy_report = entropy.compute()

    student = Translator(args.vocab, args.student_dim).to(device)
    kd = KDLoss(temperature=args.temperature, beta=args.beta, dim=-1, ignore_index=PAD)
    print(f"student: GRU {args.student_dim}, {kd}")
    train(student, kd, "student", teacher=teacher)

    teacher_acc = token_accuracy(teacher, eval_data)
    student_acc = token_accuracy(student, eval_data)
    print(f"\nteacher target entropy over real tokens\n{entropy_report}")
    print(f"\nteacher token accuracy: {teacher_acc:.2%}")
    print(f"student token accuracy: {student_acc:.2%} (T={args.temperature:g})")
    return {"teacher_acc": teacher_acc, "student_acc": student_acc, "entropy": entropy_report}


if __name__ == "__main__":
    main()
