"""K experts sharing a stem (MDCS / RIDE style) built from a timm ResNet or vsd's CIFAR ResNets.

The model is split into a stem, stages and a classifier (timm ResNets: ``conv1 ... maxpool`` then
``layer1..layer4``; vsd's ``resnet*_cifar``: ``stem`` then ``layers``). The stem and the first
``shared_stages`` stages are shared; every expert owns a copy of the remaining stages, a global average pool
and a cosine classifier ``scale * cos(feature, w_c)`` (the official ``NormedLinear`` with ``s = 30``).
Train mode returns :class:`ExpertsOutput` ``(mean of the expert logits, [expert logits, ...])``; eval mode the
mean of the raw expert logits, as the official inference.

Official MDCS (fistyee/MDCS): CIFAR ResNet-32 shares the stem + stage 1 (``shared_stages=1``); ImageNet
ResNets share stages 1-2 (``shared_stages=2``). The experts keep the model's stage widths: the official
``reduce_dimension`` is ``resnet32_cifar`` built with ``widths=(16, 24, 48)``. Deliberate differences: expert 0
starts from the model's own weights and experts 1..K-1 from a fresh Kaiming initialisation of the same stages,
and the model's dropout before the classifier is not applied.

timm's model contract: ``pretrained_cfg``/``default_cfg`` are the source model's (data config unchanged),
``num_classes``, ``num_features``, ``get_classifier()`` (the experts' cosine classifiers),
``reset_classifier(n)``, ``set_grad_checkpointing()`` (per stage), ``no_weight_decay()`` (empty, as a ResNet's)
and ``group_matcher()`` (stem, then stages in depth order - an expert's stage k with the shared stage k of the
source model's numbering - then the classifiers). ``state_dict`` keys: ``shared.0.*`` (stem), ``shared.<i>.*``
(shared stages), ``experts.<e>.<j>.*`` (expert e's own stages), ``classifiers.<e>.weight``.

Example:
    >>> import timm, torch
    >>> model = ExpertsWrapper(timm.create_model("resnet18", num_classes=10), num_experts=3)
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.logits.shape, len(out.expert_logits)
    (torch.Size([2, 10]), 3)
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable, Dict, List, NamedTuple, Set, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CosineClassifier", "ExpertsOutput", "ExpertsWrapper", "split_stages"]


class ExpertsOutput(NamedTuple):
    """Train-mode output: mean logits first (timm keeps ``output[0]``), then one [B, C] tensor per expert."""

    logits: torch.Tensor
    expert_logits: List[torch.Tensor]


class CosineClassifier(nn.Module):
    """``scale * normalize(x) @ normalize(W)^T`` (the official ``NormedLinear`` times ``s``)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def split_stages(model: nn.Module) -> Tuple[nn.Module, List[nn.Module]]:
    """``(stem, [stage, ...])`` of a timm ResNet (``layer1..N``) or a vsd CIFAR ResNet (``stem``, ``layers``)."""
    if isinstance(getattr(model, "stem", None), nn.Module) and isinstance(getattr(model, "layers", None),
                                                                         nn.Sequential):
        return model.stem, list(model.layers)
    names = [name for name, _ in model.named_children()]
    if "layer1" not in names:
        raise ValueError(f"{type(model).__name__} is not a ResNet-like model: expected children 'layer1', "
                         f"'layer2', ... (timm ResNet) or 'stem' + 'layers' (vsd CIFAR ResNet)")
    children = dict(model.named_children())
    stem = nn.Sequential(*[children[n] for n in names[:names.index("layer1")]])
    stages, i = [], 1
    while f"layer{i}" in children:
        stages.append(children[f"layer{i}"])
        i += 1
    return stem, stages


def _reinit(module: nn.Module) -> None:
    """Fresh Kaiming init of convs, reset norms; zero-init the last BN of timm blocks that ask for it."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.reset_parameters()
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    for m in module.modules():  # after the norms were reset
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()


class ExpertsWrapper(nn.Module):
    """Multi-expert network from ``model`` (see the module docstring).

    Args:
        model: a timm ResNet or vsd ``resnet*_cifar`` (its ``num_classes`` sets the experts' classes).
        num_experts: K (official 3).
        shared_stages: stages shared after the stem (official: 1 on CIFAR, 2 on ImageNet).
        scale: cosine-classifier scale (official 30).
    """

    def __init__(self, model: nn.Module, num_experts: int = 3, shared_stages: int = 1, scale: float = 30.0) -> None:
        super().__init__()
        stem, stages = split_stages(model)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 0 <= shared_stages < len(stages):
            raise ValueError(f"shared_stages must be in [0, {len(stages) - 1}] for a model with {len(stages)} "
                             f"stages (each expert needs at least one own stage), got {shared_stages}")
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 1:
            raise ValueError(f"{type(model).__name__} must have num_classes >= 1 to build the experts' classifiers")
        self._check_split(model, stem, stages)
        self.num_classes = num_classes
        self.num_experts = num_experts
        self.shared = nn.Sequential(stem, *stages[:shared_stages])
        own = nn.Sequential(*stages[shared_stages:])
        experts = [own] + [copy.deepcopy(own) for _ in range(num_experts - 1)]
        for expert in experts[1:]:
            _reinit(expert)
        self.experts = nn.ModuleList(experts)
        self.num_features = int(model.num_features)
        self.scale = scale
        self.shared_stages = shared_stages
        self.classifiers = self._classifiers(num_classes)
        self.pretrained_cfg: Dict[str, Any] = getattr(model, "pretrained_cfg", {})
        self.in_chans = getattr(model, "in_chans", 3)
        self.grad_checkpointing = False

    def _classifiers(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(CosineClassifier(self.num_features, num_classes, self.scale)
                             for _ in range(self.num_experts))

    # ------------------------------------------------------------------ timm's model contract
    @property
    def default_cfg(self) -> Dict[str, Any]:
        return self.pretrained_cfg

    def get_classifier(self) -> nn.ModuleList:
        """The experts' cosine classifiers."""
        return self.classifiers

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """Fresh cosine classifiers for ``num_classes`` classes (on the old ones' device and dtype)."""
        if num_classes < 1:
            raise ValueError(f"ExpertsWrapper needs num_classes >= 1, got {num_classes}")
        old = self.classifiers[0].weight
        self.num_classes = int(num_classes)
        self.classifiers = self._classifiers(self.num_classes).to(device=old.device, dtype=old.dtype)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every stage in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> Set[str]:
        return set()

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Tuple[float, ...]]:
        """Stem (0), stages by depth (1..), classifiers last; ``coarse`` is accepted for timm's signature."""
        shared = re.compile(r"^shared\.(\d+)\.")
        own = re.compile(r"^experts\.\d+\.(\d+)\.")

        def ordinal(name: str) -> Tuple[float, ...]:
            if shared.match(name):
                return (float(shared.match(name).group(1)),)
            if own.match(name):
                return (float(self.shared_stages + 1 + int(own.match(name).group(1))),)
            return (float("inf"),)

        return ordinal

    @staticmethod
    def _check_split(model: nn.Module, stem: nn.Module, stages: List[nn.Module]) -> None:
        """The stem + stages must reproduce ``model.forward_features`` (checked once, eval mode, 32x32 input)."""
        if not hasattr(model, "forward_features"):
            return
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                param = next(model.parameters())
                x = torch.randn(2, int(getattr(model, "in_chans", 3)), 32, 32, device=param.device, dtype=param.dtype)
                ours = stem(x)
                for stage in stages:
                    ours = stage(ours)
                same = torch.allclose(ours, model.forward_features(x), atol=1e-5)
        finally:
            model.train(was_training)
        if not same:
            raise ValueError(f"{type(model).__name__}: stem + stages do not reproduce forward_features; "
                             f"ExpertsWrapper supports plain ResNets (stem, then stages in order)")

    def _run(self, stages: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return stages(x)
        for stage in stages:
            x = checkpoint(stage, x, use_reentrant=False)
        return x

    def forward_experts(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Logits of every expert [B, C] (scaled cosine)."""
        shared = self._run(self.shared, x)
        return [head(self._run(expert, shared).mean(dim=(2, 3)))
                for expert, head in zip(self.experts, self.classifiers)]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, ExpertsOutput]:
        logits = self.forward_experts(x)
        mean = torch.stack(logits).mean(dim=0)
        return ExpertsOutput(mean, logits) if self.training else mean
