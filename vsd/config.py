"""Typed configuration tree: YAML (``yaml.safe_load``) + ``--set a.b=c`` overrides.

Every section is a dataclass with defaults. Loading is strict:

* an unknown key raises :class:`ConfigError` naming the key and the closest valid one;
* a value of the wrong type raises :class:`ConfigError` naming the key, the value and the expected type;
* ``--set`` strings are parsed with YAML rules (``3`` -> int, ``1e-3`` -> float, ``[1, 2]`` -> list) and then
  coerced to the field's type.

Two sections are *dynamic*: ``method`` (selected by ``method.name``) and ``distill`` (selected by
``distill.method``). Their remaining keys are validated against the dataclass registered for that name with
:func:`register_method_config` / :func:`register_distill_config`.

Example:
    >>> cfg = load_config(None, ["train.epochs=3", "data.name=digits"])
    >>> cfg.train.epochs
    3
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and what was expected."""


# --------------------------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Which data set to train on (see ``vsd.data.list_datasets()``)."""

    name: str = "digits"
    root: Optional[str] = None
    image_size: Optional[int] = None
    download: bool = False
    train_transform: str = "train"
    num_workers: int = 0
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which architecture (any timm or vsd model name) and its constructor keyword arguments."""

    name: str = "convnet_d3"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    checkpoint_ema: bool = False  # read the EMA weights of model.checkpoint (timm: state_dict_ema)


@dataclass
class TrainConfig:
    """Optimisation settings; ``opt``/``sched`` are names understood by timm's factories (``sched: multistep``
    decays the lr by ``decay_rate`` at each epoch in ``decay_milestones``)."""

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 256
    opt: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    sched: str = "cosine"
    decay_milestones: List[int] = field(default_factory=lambda: [90, 180, 270])
    decay_rate: float = 0.1
    warmup_epochs: int = 0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: Optional[float] = None
    ema: bool = False
    ema_decay: float = 0.999
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: int = 1
    log_interval: int = 50
    device: str = "auto"


@dataclass
class EvalConfig:
    """Evaluation settings shared by training and distillation."""

    ece_bins: int = 15


@dataclass
class MethodConfig:
    """Base class of every method's config; ``name`` selects the training task."""

    name: str = "ce"


@dataclass
class DistillConfig:
    """Base class of every dataset-distillation method's config; ``method`` selects the algorithm."""

    method: str = "mtt"


_METHOD_CONFIGS: Dict[str, type] = {"ce": MethodConfig}
_DISTILL_CONFIGS: Dict[str, type] = {}


def register_method_config(name: str, cls: type) -> type:
    """Register the config dataclass of training method ``name`` (must subclass :class:`MethodConfig`)."""
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, MethodConfig)):
        raise TypeError(f"method config for {name!r} must be a dataclass subclassing MethodConfig")
    _METHOD_CONFIGS[name] = cls
    return cls


def register_distill_config(name: str, cls: type) -> type:
    """Register the config dataclass of distillation method ``name`` (must subclass :class:`DistillConfig`)."""
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, DistillConfig)):
        raise TypeError(f"distill config for {name!r} must be a dataclass subclassing DistillConfig")
    _DISTILL_CONFIGS[name] = cls
    return cls


@dataclass
class Config:
    """The root of the configuration tree (stable keys: data.name, data.root, model.name, method.name,
    train.epochs, train.batch_size, seed, output)."""

    seed: int = 0
    output: str = "runs/default"
    overwrite: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    distill: Optional[DistillConfig] = None


_DYNAMIC = {"method": ("name", _METHOD_CONFIGS, "ce"), "distill": ("method", _DISTILL_CONFIGS, "mtt")}


# --------------------------------------------------------------------------------------------- parsing
def _import_registrations() -> None:
    """Import the packages that register method/distill configs (lazy to keep ``vsd.config`` light)."""
    import importlib

    for module in ("vsd.tasks", "vsd.distill"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a package not built yet must not break config loading
            if err.name != module:
                raise


def _closest(key: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to annotation ``tp`` or raise :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type {_type_name(tp)}")
    if tp is Any:
        return value
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type dict")
        return dict(value)
    if origin in (list, List, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type list")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type bool (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads '1e-3' as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type float")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': value {value!r} is not of the expected type str")
    raise ConfigError(f"config key '{key}': unsupported field type {_type_name(tp)}")


def _section_class(name: str, raw: Dict[str, Any], current: Any) -> type:
    selector, registry, default = _DYNAMIC[name]
    chosen = raw.get(selector, getattr(current, selector, default) if current is not None else default)
    if chosen not in registry:
        _import_registrations()
    if chosen not in registry:
        raise ConfigError(
            f"config key '{name}.{selector}': unknown {name} {chosen!r}; available: {', '.join(sorted(registry))}"
        )
    return registry[chosen]


def _build(cls: type, raw: Any, prefix: str, current: Any = None) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``, on top of ``current`` (an instance) when given."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {}
    if current is not None and type(current) is cls:
        values = {k: getattr(current, k) for k in fields}
    elif current is not None:  # dynamic section switched class: keep the shared fields
        values = {k: getattr(current, k) for k in fields if hasattr(current, k)}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}'{_closest(key, list(fields))}")
        tp = hints[key]
        if key in _DYNAMIC and cls is Config:
            if value is None:
                values[key] = None
                continue
            sub_cls = _section_class(key, value, values.get(key))
            values[key] = _build(sub_cls, value, f"{full}.", values.get(key))
        elif dataclasses.is_dataclass(tp):
            values[key] = _build(tp, value, f"{full}.", values.get(key))
        else:
            values[key] = _coerce(value, tp, full)
    return cls(**values)


def config_from_dict(raw: Optional[Dict[str, Any]], base: Optional[Config] = None) -> Config:
    """Build a :class:`Config` from a nested mapping (e.g. parsed YAML), on top of ``base`` if given."""
    return _build(Config, raw or {}, "", base)


def parse_override(item: str) -> Dict[str, Any]:
    """Turn ``"a.b=c"`` into ``{"a": {"b": value}}`` with YAML scalar parsing of ``c``."""
    if "=" not in item:
        raise ConfigError(f"cannot parse override {item!r}: expected key=value, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"cannot parse override {item!r}: the key {key!r} is empty or malformed")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse override {item!r}: value {text!r} is not valid YAML ({err})") from None
    nested: Dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return raw


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                base: Optional[Config] = None) -> Config:
    """Load a config: defaults (or ``base``) <- YAML file <- ``--set`` overrides, in that order."""
    cfg = config_from_dict(_read_yaml(path), base) if path is not None else (base or Config())
    for item in overrides:
        cfg = config_from_dict(parse_override(item), cfg)
    return cfg


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict of a config (JSON/YAML safe)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML (atomically)."""
    from vsd.engine.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
