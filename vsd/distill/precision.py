"""Mixed precision for distillation: ``train.amp`` (see :mod:`vsd.engine.amp`) read as an autocast dtype.

bf16 autocast runs the networks' forward (and so backward) passes of expert training and of evaluation in
bfloat16 where PyTorch deems it safe; parameters, optimizer states, stored trajectories and every loss the papers
need exact stay float32: the cross-entropy (autocast computes it in float32), the trajectory-matching inner loop
and loss (never autocast), the KRR solve (its features are cast to float32 first). ``fp16`` is refused here:
expert training and evaluation have no loss scaler.

Example:
    >>> import torch
    >>> autocast_dtype("bf16", torch.device("cpu")), autocast_dtype(True, torch.device("cpu"))
    (torch.bfloat16, None)
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from vsd.engine.amp import autocast, autocast_dtype as training_dtype

__all__ = ["autocast", "autocast_dtype", "dtype_name"]


def autocast_dtype(amp: Union[bool, str], device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype that ``train.amp`` asks for on ``device`` (None: full float32); fp16 is refused."""
    dtype = training_dtype(amp, device)
    if dtype == torch.float16:
        raise ValueError("train.amp must be true, false, 'none' or 'bf16' for distillation (no loss scaling for "
                         f"fp16), got {amp!r}")
    return dtype


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    """``'none'`` or the dtype's short name (``'bfloat16'``), as recorded in expert buffers and results."""
    return "none" if dtype is None else str(dtype).replace("torch.", "")
