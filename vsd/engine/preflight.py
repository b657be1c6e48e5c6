"""Checks of a whole run's inputs before any work: config values and device (:func:`vsd.config.validate_config`),
the data set (name, options, root, at least two classes), the model (name and ``model.kwargs``, built on the
``meta`` device so nothing is allocated), the optimizer name, and every file the config refers to
(``model.checkpoint``, teacher checkpoints, exports). Each failure is one :class:`~vsd.config.ConfigError`,
``ValueError`` or ``FileNotFoundError`` naming the key and what was expected.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Tuple

import torch

from vsd.config import Config, ConfigError, validate_config

#: Config leaves naming a file or folder that must exist when set.
_FILE_KEYS = ("checkpoint", "teacher_checkpoint", "tm_export")


def check_inputs(cfg: Config) -> Any:
    """Run every check above; return the data set's :class:`~vsd.data.DatasetInfo`."""
    from vsd.data import dataset_info

    validate_config(cfg)
    for key, value in _referenced_files(cfg):
        if not Path(value).exists():
            raise FileNotFoundError(f"config key '{key}': {value!r} does not exist")
    d = cfg.data
    info = dataset_info(d.name, d.image_size, root=d.root, **d.kwargs)
    if info.num_classes < 2:
        raise ValueError(f"data set {d.name!r} has {info.num_classes} class ({', '.join(info.classes)}); "
                         "classification needs at least 2")
    _check_optimizer(cfg.train.opt)
    _check_model(cfg, info)
    return info


def _referenced_files(obj: Any, prefix: str = "") -> Iterator[Tuple[str, str]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _referenced_files(value, f"{prefix}{f.name}.")
        elif f.name in _FILE_KEYS and isinstance(value, str) and value:
            yield f"{prefix}{f.name}", value


def _check_optimizer(name: str) -> None:
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name.lower() not in known:
        raise ConfigError(f"config key 'train.opt': unknown optimizer {name!r}; timm's optimizers include "
                          f"sgd, momentum, nesterov, adam, adamw, lamb, lars, rmsprop (see timm.optim.list_optimizers())")


def _check_model(cfg: Config, info: Any) -> None:
    """Build the model on the meta device: an unknown name or ``model.kwargs`` key fails here, for free."""
    from vsd.models import create_network

    try:
        with torch.device("meta"):
            create_network(cfg.model.name, cfg.model.kwargs, info.num_classes, info.in_chans, info.image_size)
    except TypeError as err:
        raise ConfigError(f"config key 'model.kwargs': {cfg.model.kwargs!r} does not fit model "
                          f"{cfg.model.name!r}: {err}") from None
