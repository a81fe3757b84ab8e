"""The loss engine behind `lsdiffusion.functional`.

* ``kd.py``, ``label_smoothing.py``: each loss bound to everything but the
  logits (``KDKernel``, ``LabelSmoothingKernel``), with its composite formula;
* ``eager/`` and ``triton/``: the fast first-order implementations, one file per
  loss with the same name in each (``eager/kd.py`` reads against
  ``triton/kd.py``); ``eager/blocks.py`` holds the row-block helpers,
  ``triton/kernels.py`` the ``@triton.jit`` kernels and ``triton/launch.py``
  their launch helpers;
* ``topk.py``: KD against a cached top-k teacher (``TopKKDKernel``: one
  implementation in device-agnostic PyTorch ops, no host reads);
* ``select.py``: the backend selector (``backend="auto" | "eager" | "triton"``
  to the implementation a bound loss runs on) and the fallback of
  ``"auto"`` to the eager engine when a Triton kernel fails;
* ``composite.py``: the losses as ordinary differentiable PyTorch expressions,
  used wherever the fast path cannot serve: double backward, forward-mode AD,
  ``torch.func`` transforms, ``torch.compile``, ``torch.jit.trace`` and
  accelerator tensors bound to the eager backend;
* ``autograd.py``: the ``autograd.Function`` and the choice of path per call;
* ``base.py``: the interface of a bound loss and the shared helpers (the
  compute-dtype rule, masks);
* ``chunked/``: the fused linear losses (the output head and the loss, chunked
  over tokens): ``fused_linear.py`` holds ``Head``, the chunk loop, the budget
  and the token selection; ``losses.py`` the chunk losses (KD against a teacher
  head or a cached teacher, label smoothing), each binding one chunk's kernel.
"""
