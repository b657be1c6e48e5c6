"""Mixed precision for distillation: ``train.amp`` read as an autocast dtype.

bf16 autocast runs the networks' forward (and so backward) passes of expert training and of evaluation in
bfloat16 where PyTorch deems it safe; parameters, optimizer states, stored trajectories and every loss the papers
need exact stay float32: the cross-entropy (autocast computes it in float32), the trajectory-matching inner loop
and loss (never autocast), the KRR solve (its features are cast to float32 first).

``train.amp`` may be a choice (``"none"`` / ``"bf16"``: bf16 on any device, CPU included) or the boolean
(``true`` = bf16 on CUDA only, as the trainer reads it; ``false`` = off). ``fp16`` is refused here: expert
training and evaluation have no loss scaler.

Example:
    >>> import torch
    >>> autocast_dtype("bf16", torch.device("cpu")), autocast_dtype(True, torch.device("cpu"))
    (torch.bfloat16, None)
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Optional, Union

import torch

BF16 = ("bf16", "bfloat16")
OFF = ("none", "off", "fp32", "float32")


def autocast_dtype(amp: Union[bool, str, None], device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype that ``train.amp`` asks for on ``device`` (None: full float32)."""
    if isinstance(amp, bool) or amp is None:
        return torch.bfloat16 if amp and device.type == "cuda" else None
    if isinstance(amp, str) and amp.lower() in BF16:
        return torch.bfloat16
    if isinstance(amp, str) and amp.lower() in OFF:
        return None
    raise ValueError(f"train.amp must be true, false, 'none' or 'bf16' for distillation (no loss scaling for "
                     f"fp16), got {amp!r}")


def autocast(dtype: Optional[torch.dtype], device: torch.device) -> ContextManager:
    """``torch.autocast`` for ``device`` in ``dtype``, or a no-op context when ``dtype`` is None."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    """``'none'`` or the dtype's short name (``'bfloat16'``), as recorded in expert buffers and results."""
    return "none" if dtype is None else str(dtype).replace("torch.", "")
