"""vsd architectures, registered with timm on import.

Importing this package (``import vsd`` does) registers ``convnet_d1`` .. ``convnet_d5``, ``resnet18_cifar``,
``resnet32_cifar``, ``vit_tiny_patch4_32`` and the MAE models of ``vsd.models.mae``, so
``timm.create_model(name, ...)`` builds them; ``list_vsd_models()`` lists them all.

Example:
    >>> from vsd.models import create_model, list_vsd_models
    >>> "convnet_d3" in list_vsd_models()
    True
    >>> model = create_model("resnet32_cifar", num_classes=100)
"""
import difflib
from typing import Any, Dict, List

import timm
from torch import nn

from vsd.models import convnet, resnet_cifar, vit_small  # noqa: F401  (registration)
from vsd.models import mae  # noqa: F401  (registers the MAE models)
from vsd.models.convnet import ConvNet
from vsd.models.resnet_cifar import CifarResNet

from vsd.models.weights import load_pretrained, load_weights, read_state_dict

__all__ = ["build_model", "create_model", "create_network", "list_vsd_models", "load_pretrained", "load_weights",
           "read_state_dict", "ConvNet", "CifarResNet"]


def list_vsd_models() -> List[str]:
    """Names of the architectures vsd registers with timm, sorted."""
    return sorted(
        name for name in timm.list_models()
        if timm.models.model_entrypoint(name).__module__.startswith(f"{__name__}.")
    )


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a readable error for unknown names.

    Args:
        name: Any timm model name (vsd's included); ``hf-hub:`` / ``local-dir:`` sources pass straight to timm.
        pretrained: Load pretrained weights (vsd's own models have none).
        **kwargs: Model arguments, e.g. ``num_classes``, ``in_chans``, ``img_size``.

    Raises:
        ValueError: ``name`` is not a timm model; the message lists vsd's models and close matches.
    """
    if ":" not in name and not timm.is_model(timm.models.split_model_name_tag(name)[0]):
        vsd_names = list_vsd_models()
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint}; vsd models: {', '.join(vsd_names)} "
            "(any timm model name works too; see timm.list_models())."
        )
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def create_network(name: str, kwargs: Dict[str, Any], num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """A fresh network with ``num_classes`` outputs for ``in_chans`` x ``image_size`` inputs.

    ``img_size`` is passed when the architecture accepts it (vsd's models and timm's ViTs do; most timm CNNs do
    not); ``kwargs`` override everything.

    Example:
        >>> create_network("convnet_d1", {"net_width": 8}, num_classes=3, in_chans=1, image_size=8).num_features
        128
    """
    base = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if "img_size" not in base:
        try:
            return create_model(name, img_size=image_size, **base)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return create_model(name, **base)


def build_model(cfg: Any, info: Any) -> nn.Module:
    """The model of a run: ``cfg.model.name`` sized for the data set ``info`` (``num_classes``, ``in_chans``,
    ``image_size``), initialised from ``cfg.model.checkpoint`` if given (its EMA weights with
    ``cfg.model.checkpoint_ema``; see :func:`vsd.models.weights.load_pretrained`)."""
    model = create_network(cfg.model.name, cfg.model.kwargs, info.num_classes, info.in_chans, info.image_size)
    if cfg.model.checkpoint:
        load_pretrained(model, cfg.model.checkpoint, ema=cfg.model.checkpoint_ema)
    return model
