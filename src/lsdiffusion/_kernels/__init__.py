"""The loss engine behind `lsdiffusion.functional`.

* ``kd.py``, ``label_smoothing.py``: each loss bound to everything but the
  logits (``KDKernel``, ``LabelSmoothingKernel``), with its composite formula;
* ``eager/`` and ``triton/``: the fast first-order implementations, one file per
  loss with the same name in each (``eager/kd.py`` reads against
  ``triton/kd.py``); ``eager/blocks.py`` holds the row-block helpers,
  ``triton/kernels.py`` the ``@triton.jit`` kernels and ``triton/launch.py``
  their launch helpers;
* ``select.py``: the backend selector (``backend="auto" | "eager" | "triton"``
  to the implementation a bound loss runs on);
* ``composite.py``: the losses as ordinary differentiable PyTorch expressions,
  used wherever the fast path cannot serve: double backward, forward-mode AD,
  ``torch.func`` transforms, ``torch.compile``, ``torch.jit.trace`` and
  accelerator tensors bound to the eager backend;
* ``autograd.py``: the ``autograd.Function`` and the choice of path per call;
* ``base.py``: the interface of a bound loss and the shared helpers (the
  compute-dtype rule, masks);
* ``chunked/fused_linear.py``: the fused linear KD loss (the output head and
  the loss, chunked over tokens: ``Head``, token selection, reductions).
"""
