"""Eager (plain PyTorch op) kernels: one file per loss."""
