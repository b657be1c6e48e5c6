"""Registry of dataset-distillation algorithms: ``distill.method`` -> a distiller function.

A distiller is a plain function ``(cfg: Config, out_dir: Path) -> dict`` that runs the whole algorithm (it may
read ``cfg.data``, ``cfg.model``, ``cfg.distill`` and ``cfg.seed``), writes its files into ``out_dir`` and
returns the results dictionary that ``tools/distill.py`` stores as ``results.json``.

Example:
    >>> from dataclasses import dataclass
    >>> from vsd.config import DistillConfig
    >>> @dataclass
    ... class ToyConfig(DistillConfig):
    ...     ipc: int = 1
    >>> @register_distiller("toy_doc", ToyConfig)
    ... def toy(cfg, out_dir):
    ...     return {"ipc": cfg.distill.ipc}
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

from vsd.config import Config, DistillConfig, register_distill_config

Distiller = Callable[[Config, Path], Dict[str, Any]]
_DISTILLERS: Dict[str, Distiller] = {}


def register_distiller(name: str, config_cls: type) -> Callable[[Distiller], Distiller]:
    """Decorator registering distiller ``name`` (selected by ``distill.method``) with its config dataclass,
    which must subclass :class:`vsd.config.DistillConfig`."""
    if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, DistillConfig)):
        raise TypeError(f"the config of distiller {name!r} must be a dataclass subclassing vsd.config.DistillConfig")

    def decorator(fn: Distiller) -> Distiller:
        if name in _DISTILLERS and _DISTILLERS[name] is not fn:
            raise ValueError(f"distiller {name!r} is registered twice")
        _DISTILLERS[name] = fn
        register_distill_config(name, config_cls)
        return fn

    return decorator


def list_distillers() -> List[str]:
    """Names accepted by ``distill.method``."""
    return sorted(_DISTILLERS)


def get_distiller(name: str) -> Distiller:
    """The distiller registered as ``name``; a readable error listing the available ones otherwise."""
    if name not in _DISTILLERS:
        raise ValueError(f"unknown distill.method {name!r}; available: {', '.join(list_distillers()) or 'none'}")
    return _DISTILLERS[name]


def run_distiller(cfg: Config, out_dir: Union[str, Path]) -> Dict[str, Any]:
    """Run the distiller selected by ``cfg.distill.method``, writing into ``out_dir``; return its results."""
    if cfg.distill is None:
        raise ValueError("the config has no 'distill' section; set e.g. distill.method=mtt")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return get_distiller(cfg.distill.method)(cfg, out)
