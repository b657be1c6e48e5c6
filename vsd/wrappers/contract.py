"""timm's model contract for vsd's wrappers: a wrapped model must look like the model it wraps to timm's tools.

timm's scripts and utilities read, besides ``forward``: ``pretrained_cfg`` / ``default_cfg`` (data config:
``resolve_data_config(model=...)``), ``num_classes``, ``num_features``, ``get_classifier`` /
``reset_classifier``, ``set_grad_checkpointing`` (``--grad-checkpointing``), ``no_weight_decay`` and
``group_matcher`` (``create_optimizer_v2``: weight-decay exclusions and layer-wise lr decay). A wrapper that
mixes in :class:`TimmContract` passes all of them on to the model it wraps (the submodule named by
``wrapped_attr``), with parameter names prefixed by that attribute (``model.`` / ``student.``) so
``no_weight_decay`` and ``group_matcher`` name the wrapper's own parameters. Parameters the wrapper adds (a weak
head, a joint head) join the wrapped model's top layer group (its classifier's).

Example:
    >>> import timm
    >>> from timm.data import resolve_data_config
    >>> from vsd.wrappers import MidFeatureWrapper
    >>> model = timm.create_model("resnet18", num_classes=10)
    >>> resolve_data_config(model=MidFeatureWrapper(model)) == resolve_data_config(model=model)
    True
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Set

from timm.models import group_parameters
from timm.optim._param_groups import auto_group_layers
from torch import nn

__all__ = ["TimmContract"]


class TimmContract:
    """Mixin for an ``nn.Module`` wrapper: pass timm's model contract on to ``getattr(self, wrapped_attr)``.

    Subclasses that own the classifier (new heads) override ``num_classes`` / ``get_classifier`` /
    ``reset_classifier``; everything else follows the wrapped model.
    """

    wrapped_attr: str = "model"

    @property
    def wrapped(self) -> nn.Module:
        """The timm model inside the wrapper."""
        return getattr(self, self.wrapped_attr)

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """The wrapped model's ``pretrained_cfg`` (the same dict): preprocessing is unchanged by wrapping."""
        return getattr(self.wrapped, "pretrained_cfg", {})

    @property
    def default_cfg(self) -> Dict[str, Any]:
        """timm's older name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    @property
    def num_classes(self) -> int:
        return int(getattr(self.wrapped, "num_classes", 0))

    @property
    def num_features(self) -> int:
        return int(self.wrapped.num_features)

    @property
    def in_chans(self) -> int:
        return int(getattr(self.wrapped, "in_chans", 3))

    def get_classifier(self) -> nn.Module:
        return self.wrapped.get_classifier()

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        self.wrapped.reset_classifier(num_classes, *args, **kwargs)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if not hasattr(self.wrapped, "set_grad_checkpointing"):
            raise AttributeError(f"{type(self.wrapped).__name__} does not support gradient checkpointing "
                                 f"(no set_grad_checkpointing)")
        self.wrapped.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> Set[str]:
        """The wrapped model's exclusions (``pos_embed``, ``cls_token``...) under the wrapper's parameter names."""
        inner = getattr(self.wrapped, "no_weight_decay", None)
        return {f"{self.wrapped_attr}.{name}" for name in (inner() if inner is not None else ())}

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """Layer groups of the wrapped model under the wrapper's names: each wrapped parameter keeps the group id
        timm gives it unwrapped (its ``group_matcher``, else ``auto_group_layers``); the wrapper's own parameters
        (new heads, a frozen teacher) join the top group, the classifier's."""
        inner = self.wrapped
        matcher = getattr(inner, "group_matcher", None)
        layers = (group_parameters(inner, matcher(coarse=coarse), reverse=True) if matcher is not None
                  else auto_group_layers(inner))
        top = max(layers.values(), default=0)
        prefix = f"{self.wrapped_attr}."

        def layer_id(name: str) -> int:
            return layers.get(name[len(prefix):], top) if name.startswith(prefix) else top

        return layer_id
