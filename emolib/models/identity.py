"""What identifies a torch model's computation: a digest of its class and its state.

Stores that keep results of a model between runs (the streamed layer activations of
:mod:`emolib.rsa.streamed`, the occlusion parts of :func:`emolib.occlusion.occlude_by_fold`)
key them by :func:`model_digest`, so that other weights never return old results.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["model_digest"]


def model_digest(model: nn.Module) -> str:
    """blake2b (128 bits, hex) of the model's class and its ``state_dict``: every entry's
    name, dtype, shape and bytes (parameters and buffers, e.g. batch-norm statistics), read
    on the CPU. Equal models on any device give the same digest; changing one weight, one
    running statistic or the class changes it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
