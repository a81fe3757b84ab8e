"""What defines a demo run: [`DemoConfig`][lsdiffusion.demo.DemoConfig] and its checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_SEED", "MAX_TEMPERATURE", "MIN_TEMPERATURE", "DemoConfig", "check_device"]

MIN_TEMPERATURE = 0.01
"""Lowest temperature the demo accepts (float32 ``z / T`` stays far from overflow)."""
MAX_TEMPERATURE = 1000.0
"""Highest temperature the demo accepts (float32 ``T² · KL`` keeps its digits)."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit: ``0 <= seed <= MAX_SEED``."""


def _listed(values: Sequence[float]) -> str:
    """``[1.0, 2.0]``, cut after 8 values for error messages."""
    shown = ", ".join(repr(v) for v in values[:8])
    return f"[{shown}, ... ({len(values)} values)]" if len(values) > 8 else f"[{shown}]"


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (the defaults: 1-2 minutes on 2 shared CPU cores).

    Attributes:
        superclasses: number of superclasses.
        subclasses: classes per superclass (siblings).
        input_dim: dimension of the inputs.
        superclass_spread: std of the superclass centres.
        subclass_spread: std of a class mean around its superclass centre.
        noise: std of the samples around their class mean.
        train_per_class: training samples per class.
        test_per_class: test samples per class.
        teacher_width: hidden width of the teacher MLP.
        teacher_features: penultimate width of the teacher.
        student_width: hidden width of the student MLP.
        student_features: penultimate width of the student (the features measured).
        epochs: training epochs for every network.
        batch_size: minibatch size.
        lr: Adam learning rate (cosine-annealed to 0).
        alphas: label smoothing of the teachers.
        temperatures: distillation temperatures (the first is T0 of the diffusion index).
        seeds: one full study per seed.
        diffusion_t1: the T1 at which the diffusion-index check is made.
        device: torch device for training.
    """

    superclasses: int = 8
    subclasses: int = 4
    input_dim: int = 32
    superclass_spread: float = 2.0
    subclass_spread: float = 0.8
    noise: float = 1.3
    train_per_class: int = 60
    test_per_class: int = 200
    teacher_width: int = 256
    teacher_features: int = 64
    student_width: int = 64
    student_features: int = 8
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    alphas: tuple[float, ...] = (0.0, 0.1)
    temperatures: tuple[float, ...] = (1.0, 2.0, 3.0, 64.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    diffusion_t1: float = 3.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("superclasses", "input_dim", "train_per_class", "test_per_class", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.subclasses < 2:
            raise ValueError(f"subclasses must be >= 2 (siblings), got {self.subclasses}")
        if self.superclasses < 2:
            raise ValueError(
                f"superclasses must be >= 2 (dissimilar classes), got {self.superclasses}"
            )
        self._check_temperatures()
        self._check_seeds()
        self._check_alphas()
        if self.diffusion_t1 not in self.temperatures[1:]:
            raise ValueError(
                f"diffusion_t1={self.diffusion_t1} must be one of the temperatures after T0 "
                f"({list(self.temperatures[1:])})"
            )

    def _check_temperatures(self) -> None:
        if len(self.temperatures) < 2:
            raise ValueError(
                f"temperatures must hold T0 and at least one T1, got {list(self.temperatures)}"
            )
        if any(not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE for t in self.temperatures):
            raise ValueError(
                f"temperatures must be finite and in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
                "(beyond, float32 logits / T or T² · KL lose their digits), "
                f"got {_listed(self.temperatures)}"
            )
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures must be distinct, got {_listed(self.temperatures)}")
        t0 = self.temperatures[0]
        if any(t <= t0 for t in self.temperatures[1:]):
            raise ValueError(
                f"temperatures after the first (T0 = {t0:g}) must be > T0, since the diffusion "
                f"index measures T0 -> T1 > T0, got {_listed(self.temperatures)}"
            )

    def _check_seeds(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED
            for s in self.seeds
        ):
            raise ValueError(
                f"seeds must be integers in [0, {MAX_SEED}] (32-bit), got {_listed(self.seeds)}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(
                f"seeds must be distinct (each runs one study), got {_listed(self.seeds)}"
            )

    def _check_alphas(self) -> None:
        if any(not 0.0 <= a < 1.0 for a in self.alphas) or not self.alphas:
            raise ValueError(f"alphas must be in [0, 1), got {_listed(self.alphas)}")
        if len(set(self.alphas)) != len(self.alphas):
            raise ValueError(f"alphas must be distinct, got {_listed(self.alphas)}")
        if 0.0 not in self.alphas or max(self.alphas) <= 0.0:
            raise ValueError(
                "alphas must hold 0 (the plain teacher) and at least one alpha > 0 "
                f"(an LS teacher) for the comparison, got {list(self.alphas)}"
            )

    @property
    def num_classes(self) -> int:
        """Total number of classes."""
        return self.superclasses * self.subclasses


def check_device(device: str, flag: str = "device") -> None:
    """Check that ``device`` names a torch device that works here.

    Raises:
        ValueError: an unknown device string (``"gpu"``), a meta device, or one
            this machine lacks (``"cuda"`` on a CPU-only torch).

    Examples:
        >>> check_device("cpu")
        >>> check_device("gpu", flag="--device")
        Traceback (most recent call last):
        ...
        ValueError: --device must be a torch device such as cpu, cuda or cuda:1, got 'gpu'
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"{flag} must be a torch device such as cpu, cuda or cuda:1, got {device!r}"
        ) from None
    if parsed.type == "meta":
        raise ValueError(f"{flag} meta holds no data; use cpu or an accelerator such as cuda")
    try:
        torch.zeros(1, device=parsed)
    except (RuntimeError, AssertionError) as exc:  # torch not compiled with CUDA, no such GPU
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if len(first) > 120:  # a dispatcher message ("Could not run 'aten::...' ..."): its gist
            first = first[:117].rstrip() + "..."
        raise ValueError(f"{flag} {device} is not available here: {first}") from None
