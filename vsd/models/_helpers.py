"""Small helpers shared by the vsd model families."""
from torch import nn


def match_device_dtype(new: nn.Module, ref: nn.Module) -> nn.Module:
    """Move ``new`` to the device and dtype of ``ref``'s first parameter (unchanged if ``ref`` has none).

    Used when a classifier is rebuilt (``reset_classifier``) on a model already moved, e.g. by ``.double()``.
    """
    param = next(ref.parameters(), None)
    return new if param is None else new.to(device=param.device, dtype=param.dtype)
