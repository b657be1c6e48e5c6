"""Mixed precision for training: what ``train.amp`` means on a device.

* ``true`` (default; the original boolean): bf16 autocast on CUDA, full float32 elsewhere;
* ``false`` or ``none``: float32 everywhere;
* ``bf16``: bf16 autocast on any device, CPU included;
* ``fp16``: float16 autocast with dynamic loss scaling (:class:`torch.amp.GradScaler`).

Autocast covers the task's forward pass (network and loss) and the evaluation forward; parameters, gradients and
optimizer states stay float32. Matrix products run in the low precision; the softmax / log-softmax / KL / MSE
terms of every loss are computed in float32 because the losses upcast the network outputs first
(:func:`vsd.losses.nkd.at_least_float32`), as the papers' float32 losses need.

Example:
    >>> import torch
    >>> autocast_dtype("bf16", torch.device("cpu")), autocast_dtype(True, torch.device("cpu"))
    (torch.bfloat16, None)
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Optional, Union

import torch

from vsd.config import AMP_CHOICES

_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(amp: Union[bool, str], device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype ``train.amp`` asks for on ``device`` (``None``: float32)."""
    if isinstance(amp, bool):
        return torch.bfloat16 if amp and device.type == "cuda" else None
    if amp not in _DTYPES:
        raise ValueError(f"train.amp must be true, false or one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    return _DTYPES[amp]


def autocast(dtype: Optional[torch.dtype], device: torch.device) -> ContextManager:
    """``torch.autocast`` for ``device`` in ``dtype``, or a no-op when ``dtype`` is ``None``."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
