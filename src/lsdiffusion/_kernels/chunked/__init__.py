"""Chunked losses over a linear head: the logits are never held whole."""
