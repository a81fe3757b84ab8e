"""The synthetic hierarchical task, the networks and their training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lsdiffusion.demo.config import DemoConfig

__all__ = ["HierarchicalTask", "make_hierarchical_task", "mlp", "train"]


@dataclass
class HierarchicalTask:
    """A synthetic hierarchical classification task (float32 tensors on the CPU).

    Class ``c`` belongs to superclass ``c // subclasses``.
    """

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    superclass_of: list[int]

    def similar_sets(self) -> list[list[int]]:
        """For every class, its siblings (same superclass)."""
        sup = self.superclass_of
        return [
            [c for c in range(len(sup)) if sup[c] == sup[p] and c != p] for p in range(len(sup))
        ]

    def dissimilar_sets(self) -> list[list[int]]:
        """For every class, the classes of the other superclasses."""
        sup = self.superclass_of
        return [[c for c in range(len(sup)) if sup[c] != sup[p]] for p in range(len(sup))]


def make_hierarchical_task(config: DemoConfig, seed: int) -> HierarchicalTask:
    r"""Draw Gaussian clusters arranged as superclasses x subclasses.

    Superclass centres $s_j \sim N(0, \sigma_s^2 I)$, class means
    $m_c = s_{j(c)} + N(0, \sigma_c^2 I)$ and samples
    $x = m_c + N(0, \sigma_n^2 I)$: siblings are close, other
    superclasses far, and the noise keeps the accuracy well below 100%.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    k, d = config.subclasses, config.input_dim
    centres = torch.randn(config.superclasses, d, generator=g) * config.superclass_spread
    means = centres.repeat_interleave(k, 0)
    means = means + torch.randn(config.num_classes, d, generator=g) * config.subclass_spread

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(config.num_classes).repeat_interleave(per_class)
        x = means[y] + torch.randn(len(y), d, generator=g) * config.noise
        return x, y

    train_x, train_y = sample(config.train_per_class)
    test_x, test_y = sample(config.test_per_class)
    return HierarchicalTask(
        train_x, train_y, test_x, test_y, [c // k for c in range(config.num_classes)]
    )


def mlp(in_dim: int, width: int, features: int, classes: int, seed: int) -> Any:
    """``Linear-ReLU-Linear-ReLU-Linear`` seeded by ``seed``; ``[:-1]`` gives the features."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(in_dim, width),
        nn.ReLU(),
        nn.Linear(width, features),
        nn.ReLU(),
        nn.Linear(features, classes),
    )


def train(
    model: Any,
    x: Any,
    loss_fn: Callable[[Any, Any], Any],
    config: DemoConfig,
    seed: int,
) -> Any:
    """Adam with a cosine schedule; ``loss_fn(logits, batch_indices)``."""
    import torch

    device = torch.device(config.device)
    model.to(device)
    x = x.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for lo in range(0, n, config.batch_size):
            idx = perm[lo : lo + config.batch_size]
            loss = loss_fn(model(x[idx]), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model
