"""The ``distilled`` data set: a folder written by ``tools/distill.py`` (``distilled.safetensors`` +
``distilled.json``), read back with its SHA-256 and format version checked (:func:`vsd.distill.load_distilled`).

* ``split="train"``: the distilled images, already in the space the networks consume (normalized with the
  source's mean/std, and ZCA-whitened when the export says ``zca``). Labels are the class indices; for soft-label
  exports ``targets`` holds the arg-max class and ``soft_targets`` the [N, K] probabilities.
* ``split="test"``: the source data set's test split, normalized (and ZCA-whitened with the exported matrices),
  so ``tools/train.py --set data.name=distilled data.root=<folder>`` trains on the distilled set and tests on
  real data.

Transforms act on the float images: ``"eval"`` / ``"none"`` return them unchanged, ``"train"`` / ``"weak"`` apply
the source's random crop with padding (and flip when the source allows flips), ``"dsa"`` applies DSA
(:class:`vsd.distill.augment.DSA`) with the strategy of the export's evaluation recipe; ``"strong"`` is refused
(its AutoAugment needs uint8 pixels); a callable receives the float image.

Training on an export reproduces the accuracy it reports only with the protocol it was measured with (for MTT:
the distillation model, the learned lr, ``eval_epochs``, DSA). :func:`apply_export_recipe` (called once when
``tools/train.py`` resolves its config) fills every config value the user did not choose from the export's ``eval_recipe`` and says
which values it took; ``tools/train.py`` counts the keys of ``--config`` and ``--set`` as the user's (the default
recipe's are not). Deliberate difference from the evaluation loop: DSA here draws its family per image (in the
data set transform), the evaluation loop per batch; timm's optimizer exempts biases and norm weights from weight
decay.

Example:
    >>> ds = create_dataset("distilled", "train", root="runs/mtt/digits_ipc1")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torchvision.transforms import v2

from vsd.data._tensor_dataset import ImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.registry import create_dataset, dataset_info, register_dataset
from vsd.data.transforms import _identity, crop_padding
from vsd.data.wrappers import dataset_to_tensors


def _root(root: Union[str, Path, None]) -> Path:
    if root is None:
        raise ValueError("data set 'distilled' needs data.root = the folder written by tools/distill.py "
                         "(holding distilled.json and distilled.safetensors)")
    return Path(root)


class DSAImage:
    """DSA on one float image ``[C, H, W]`` (a batch of one; no gradient), picklable for DataLoader workers."""

    def __init__(self, strategy: str) -> None:
        from vsd.distill.augment import DSA

        self.dsa = DSA(strategy)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.dsa(image.unsqueeze(0))[0]


def _float_transform(transform: Any, info: DatasetInfo, meta: Dict[str, Any]) -> Callable[[torch.Tensor], Any]:
    if callable(transform):
        return transform
    if transform in ("eval", "none"):
        return _identity  # picklable, so DataLoader workers can use it
    if transform == "dsa":
        from vsd.distill.export import evaluation_recipe

        recipe = meta.get("eval_recipe") or evaluation_recipe(meta) or {}
        from vsd.distill.augment import DEFAULT_STRATEGY

        strategy = recipe.get("dsa_strategy") or (DEFAULT_STRATEGY if info.hflip else
                                                  DEFAULT_STRATEGY.replace("_flip", ""))
        return DSAImage(strategy)
    if transform in ("train", "weak"):
        ops = [v2.RandomCrop(info.image_size, padding=crop_padding(info.image_size))]
        if info.hflip:
            ops.append(v2.RandomHorizontalFlip())
        return v2.Compose(ops)
    raise ValueError(f"data set 'distilled' supports the transforms eval, none, train, weak, dsa or a callable on "
                     f"the float image; got {transform!r}")


@register_dataset("distilled")
class Distilled(ImageDataset):
    """A distilled export (see the module docstring)."""

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *, transform: Any = "eval",
                 image_size: Optional[int] = None, download: bool = False) -> None:
        from vsd.distill.export import load_distilled

        tensors, meta = load_distilled(_root(root))
        info = self.describe(root=root, image_size=image_size)
        self.meta = meta
        self.soft_targets: Optional[torch.Tensor] = None
        if split == "train":
            self.images = tensors["images"].float()
            labels = tensors["labels"]
            if labels.dim() == 2:
                self.soft_targets = labels.float()
                labels = labels.argmax(dim=1)
        else:
            source = create_dataset(meta["dataset"], split, transform="eval", image_size=info.image_size,
                                    **meta.get("config", {}).get("data", {}).get("kwargs", {}))
            self.images, labels = dataset_to_tensors(source)
            if meta.get("zca"):
                shift = tensors["zca_mean"].reshape(1, -1)
                self.images = ((self.images.flatten(1) - shift) @ tensors["zca_transform"]).view_as(self.images)
        super().__init__(info, labels.tolist(), split, "none")
        self.transform_name = transform if isinstance(transform, str) else None
        self.transform = _float_transform(transform, info, meta)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        import json

        from vsd.distill.export import META_FILE, DistilledFormatError

        path = _root(root) / META_FILE
        if not path.is_file():
            raise DistilledFormatError(f"no distilled export at {str(path.parent)!r} (expected {META_FILE})")
        meta = json.loads(path.read_text(encoding="utf-8"))
        size = int(meta["image_size"][0])
        if image_size is not None and image_size != size:
            raise ValueError(f"data set 'distilled' at {str(root)!r} holds {size}x{size} images; image_size="
                             f"{image_size} would need resizing distilled pixels, which is not supported")
        try:
            hflip = dataset_info(meta["dataset"]).hflip
        except (ValueError, TypeError):
            hflip = True
        return DatasetInfo(name="distilled", num_classes=len(meta["classes"]), in_chans=int(meta["in_chans"]),
                           image_size=size, mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                           classes=tuple(meta["classes"]), hflip=hflip)

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index].clone()


#: Recipe field -> the config key it fills (``data.train_transform`` from ``augmentation``).
RECIPE_KEYS: Dict[str, str] = {
    "model": "model.name", "model_kwargs": "model.kwargs", "opt": "train.opt", "momentum": "train.momentum",
    "lr": "train.lr", "weight_decay": "train.weight_decay", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "sched": "train.sched", "decay_milestones": "train.decay_milestones",
    "decay_rate": "train.decay_rate", "augmentation": "data.train_transform",
}
#: Config values the evaluation loop implies and a run must match (no warm-up, no label smoothing, no EMA).
_IMPLIED = {"train.warmup_epochs": 0, "train.label_smoothing": 0.0, "train.ema": False, "train.min_lr": 0.0}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def _flat_keys(raw: Any, prefix: str = "") -> List[str]:
    """Dotted leaf keys of a nested mapping (``{"train": {"lr": 1}}`` -> ``["train.lr"]``)."""
    if not isinstance(raw, dict) or not raw:
        return [prefix[:-1]] if prefix else []
    return [k for key, value in raw.items() for k in _flat_keys(value, f"{prefix}{key}.")]


def explicit_keys(config_file: Optional[Union[str, Path]], overrides: Sequence[str]) -> List[str]:
    """The config keys a user chose: every key of their ``--config`` YAML and of their ``--set`` overrides."""
    from vsd.config import _read_yaml, parse_override

    raw = [_read_yaml(config_file)] if config_file is not None else []
    return [k for r in raw + [parse_override(o) for o in overrides] for k in _flat_keys(r)]


def _is_explicit(key: str, explicit: Sequence[str]) -> bool:
    return any(e == key or e.startswith(key + ".") or key.startswith(e + ".") for e in explicit)


def export_recipe_overrides(cfg: Any, recipe: Dict[str, Any], explicit: Optional[Sequence[str]] = None
                            ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(take, kept)``: config key -> recipe value for every key the user did not choose, and config key -> the
    config's own value where the user chose one that differs from the recipe. ``explicit`` lists the keys the
    user chose (:func:`explicit_keys`); ``None`` counts every value that differs from ``Config()``'s default as
    chosen."""
    from vsd.config import Config

    default = Config()
    wanted: Dict[str, Any] = dict(_IMPLIED)
    for field_name, key in RECIPE_KEYS.items():
        if field_name in recipe and recipe[field_name] is not None:
            value = recipe[field_name]
            wanted[key] = {"dsa": "dsa", "none": "eval"}.get(value, value) if field_name == "augmentation" else value
    take, kept = {}, {}
    for key, value in wanted.items():
        current = _get(cfg, key)
        chosen = _is_explicit(key, explicit) if explicit is not None else current != _get(default, key)
        if not chosen:
            if current != value:
                take[key] = value
        elif current != value:
            kept[key] = current
    if "model.name" in kept:  # the recipe's constructor arguments belong to the recipe's model
        take.pop("model.kwargs", None)
    return take, kept


def apply_export_recipe(cfg: Any, say: Callable[[str], None] = print,
                        explicit: Optional[Sequence[str]] = None) -> Any:
    """For ``data.name: distilled``: the config with every value the user did not choose (``explicit``, see
    :func:`export_recipe_overrides`) replaced by the export's evaluation recipe (see the module docstring); other
    configs are returned unchanged. ``say`` reports the values taken and the user's values that differ from the
    recipe. ``tools/train.py`` calls it with the keys of ``--config`` and ``--set``."""
    if cfg.data.name != "distilled":
        return cfg
    from vsd.distill.export import META_FILE, evaluation_recipe

    import json

    meta = json.loads((_root(cfg.data.root) / META_FILE).read_text(encoding="utf-8")) \
        if (_root(cfg.data.root) / META_FILE).is_file() else None
    if meta is None:
        return cfg  # the data set itself reports the missing export
    recipe = meta.get("eval_recipe") or evaluation_recipe(meta)
    if not recipe:
        say(f"data.name=distilled: the export at {cfg.data.root!r} records no evaluation recipe; training with the "
            "config as given")
        return cfg
    if recipe.get("use") != "training":
        say(f"data.name=distilled: the export at {cfg.data.root!r} is a {meta.get('method')} pre-training set "
            f"(its recipe: {recipe.get('loss')} on its targets, used by the distillation's transfer benchmark); "
            "training on its labels with the config as given")
        return cfg
    take, kept = export_recipe_overrides(cfg, recipe, explicit)
    for key, value in take.items():
        cfg = _set(cfg, key, value)
    taken = ", ".join(f"{k}={v}" for k, v in take.items()) or "nothing (the config sets every value)"
    say(f"data.name=distilled: took from the export's evaluation recipe: {taken}")
    if kept:
        say("data.name=distilled: kept from the config (differ from the export's recipe): " +
            ", ".join(f"{k}={v} (recipe {_recipe_value(recipe, k)})" for k, v in kept.items()))
    return cfg


def _recipe_value(recipe: Dict[str, Any], key: str) -> Any:
    names: List[str] = [f for f, k in RECIPE_KEYS.items() if k == key]
    return recipe.get(names[0]) if names else _IMPLIED.get(key)
