"""The loss engine behind `lsdiffusion.functional`.

* `eager` holds the fast first-order kernels (plain PyTorch ops arranged
  so that one logits-sized buffer, the gradient, is the only large allocation);
* `composite` holds the same losses written as ordinary differentiable
  PyTorch expressions, used wherever the fast path cannot serve: double
  backward, forward-mode AD, ``torch.func`` transforms, ``torch.compile``,
  ``torch.jit.trace`` and non-CPU devices without a fused kernel;
* `autograd` holds the ``autograd.Function`` and the dispatch between them.
"""
