"""The end-to-end demo: the LS x KD study on a synthetic class hierarchy.

``lsdiffusion demo`` (or ``python -m lsdiffusion demo``) reproduces the study of
Chandrasegaran et al. (ICML 2022) on data it makes itself:

1. a hierarchical classification task: Gaussian clusters arranged as
   superclasses x subclasses, so that semantically similar classes (siblings
   under one superclass) exist by construction;
2. teachers trained with label smoothing alpha in {0, 0.1}
   ([`LabelSmoothingLoss`][lsdiffusion.LabelSmoothingLoss]);
3. students distilled from each teacher at several temperatures with
   [`KDLoss`][lsdiffusion.KDLoss] (beta = 1), over several seeds;
4. the measurements: accuracies, the diffusion index of every class against
   its siblings (similar) and the other superclasses (dissimilar), and the
   teachers' target entropies.

It prints the paper-style tables, writes ``results.json`` (and a Figure-1-style
PNG when matplotlib is installed) into ``--out``. Every number comes from the
run; a given seed gives the same result every time on the same machine.

The package, by job: ``config`` (what defines a run), ``task`` (the synthetic
task and the training loop), ``study`` (the studies, their worker processes and
[`run_demo`][lsdiffusion.demo.run_demo]), ``result`` (the measurements and the
checks), ``report`` (the printed tables), ``figures``, ``output`` (atomic
saving, signals) and ``cli`` (the sub-command).
"""

from lsdiffusion.demo.cli import add_parser
from lsdiffusion.demo.config import MAX_SEED, MAX_TEMPERATURE, MIN_TEMPERATURE, DemoConfig
from lsdiffusion.demo.output import OUTPUT_FILES, save_demo
from lsdiffusion.demo.result import DemoResult
from lsdiffusion.demo.study import run_demo
from lsdiffusion.demo.task import HierarchicalTask, make_hierarchical_task

__all__ = [
    "MAX_SEED",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "OUTPUT_FILES",
    "DemoConfig",
    "DemoResult",
    "HierarchicalTask",
    "add_parser",
    "make_hierarchical_task",
    "run_demo",
    "save_demo",
]
