"""Small helpers shared by the vsd model families."""
from typing import Any, Dict

from torch import nn


def match_device_dtype(new: nn.Module, ref: nn.Module) -> nn.Module:
    """Move ``new`` to the device and dtype of ``ref``'s first parameter (unchanged if ``ref`` has none).

    Used when a classifier is rebuilt (``reset_classifier``) on a model already moved, e.g. by ``.double()``.
    """
    param = next(ref.parameters(), None)
    return new if param is None else new.to(device=param.device, dtype=param.dtype)


#: CIFAR-10 channel statistics, as in the MTT / DC / kuangliu code.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def cifar_cfg(first_conv: str, classifier: str, **kwargs: Any) -> Dict[str, Any]:
    """A timm ``pretrained_cfg`` for a 32x32 CIFAR-style model without pretrained weights."""
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD, "first_conv": first_conv,
        "classifier": classifier, "license": "mit", **kwargs,
    }
