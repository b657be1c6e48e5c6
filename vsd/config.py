"""Typed configuration tree: YAML (``yaml.safe_load``) + ``--set a.b=c`` overrides.

Every section is a dataclass with defaults. Loading is strict:

* an unknown key raises :class:`ConfigError` naming the key and the closest valid one;
* a value of the wrong type raises :class:`ConfigError` naming the key, the value and the expected type;
* ``--set`` strings are parsed with YAML rules (``3`` -> int, ``1e-3`` -> float, ``[1, 2]`` -> list) and then
  coerced to the field's type;
* a value out of its range raises :class:`ConfigError` naming the key, the value and the allowed range: every
  float must be finite, and a field may declare bounds with ``field(metadata=bounds(...))`` or
  ``metadata={"choices": (...)}`` (checked whenever a section is built, so a bad value never reaches a run);
* a YAML file holding the same key twice is refused.

:func:`validate_config` adds the checks that depend on the machine (is ``train.device`` available?);
:func:`load_config` calls it.

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
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and what was expected."""


def bounds(lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
           hi_open: bool = False, increasing: bool = False) -> Dict[str, Any]:
    """Field metadata: the value (each item of a list; ``None`` is always allowed for an Optional) must lie in
    ``[lo, hi]`` (``(lo, ...`` / ``..., hi)`` when open); ``increasing``: list items strictly increase."""
    return {"bounds": (lo, hi, lo_open, hi_open, increasing)}


#: Largest accepted ``data.image_size`` (one 3 x 2048 x 2048 image is 12 MB as uint8).
MAX_IMAGE_SIZE = 2048
DEVICE_TYPES = ("cpu", "cuda", "mps")


# --------------------------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Which data set to train on (see ``vsd.data.list_datasets()``)."""

    name: str = "digits"
    root: Optional[str] = None
    image_size: Optional[int] = field(default=None, metadata=bounds(1, MAX_IMAGE_SIZE))
    download: bool = False
    # vsd.data.transforms.PRESETS, plus "dsa" (differentiable siamese augmentation; distilled exports only)
    train_transform: str = field(default="train", metadata={"choices": ("eval", "train", "weak", "strong", "none",
                                                                        "dsa")})
    num_workers: int = field(default=0, metadata=bounds(0, 256))
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which architecture (any timm or vsd model name) and its constructor keyword arguments."""

    name: str = "convnet_d3"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    checkpoint_ema: bool = False  # read the EMA weights of model.checkpoint (timm: state_dict_ema)


AMP_CHOICES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Optimisation settings; ``opt``/``sched`` are names understood by timm's factories (``sched: multistep``
    decays the lr by ``decay_rate`` at each epoch in ``decay_milestones``). ``amp``: ``true`` (bf16 autocast on
    CUDA only), ``false``/``none``, ``bf16`` (any device, CPU too) or ``fp16`` (with loss scaling); see
    :mod:`vsd.engine.amp`."""

    epochs: int = field(default=30, metadata=bounds(1))
    batch_size: int = field(default=64, metadata=bounds(1))
    eval_batch_size: int = field(default=256, metadata=bounds(1))
    opt: str = "sgd"
    lr: float = field(default=0.05, metadata=bounds(0, lo_open=True))
    momentum: float = field(default=0.9, metadata=bounds(0, 1))
    weight_decay: float = field(default=5e-4, metadata=bounds(0))
    sched: str = field(default="cosine", metadata={"choices": ("cosine", "tanh", "step", "multistep", "constant",
                                                               "poly", "plateau", "none")})
    decay_milestones: List[int] = field(default_factory=lambda: [90, 180, 270],
                                        metadata=bounds(1, increasing=True))
    decay_rate: float = field(default=0.1, metadata=bounds(0, 1, lo_open=True))
    warmup_epochs: int = field(default=0, metadata=bounds(0))
    min_lr: float = field(default=0.0, metadata=bounds(0))
    label_smoothing: float = field(default=0.0, metadata=bounds(0, 1, hi_open=True))
    clip_grad: Optional[float] = field(default=None, metadata=bounds(0, lo_open=True))
    ema: bool = False
    ema_decay: float = field(default=0.999, metadata=bounds(0, 1))
    amp: Union[bool, str] = True
    channels_last: bool = True
    checkpoint_every: int = field(default=1, metadata=bounds(1))
    log_interval: int = field(default=50, metadata=bounds(1))
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.amp, str) and self.amp not in AMP_CHOICES:
            raise ConfigError(f"config key 'train.amp': {self.amp!r} is not one of true, false, "
                              f"{', '.join(AMP_CHOICES)}")


@dataclass
class EvalConfig:
    """Evaluation settings shared by training and distillation."""

    ece_bins: int = field(default=15, metadata=bounds(1, 10000))


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

    seed: int = field(default=0, metadata=bounds(0, 2**32 - 1))
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
    obj = cls(**values)
    for f in dataclasses.fields(cls):
        _check_value(f, getattr(obj, f.name), f"{prefix}{f.name}")
    return obj


def _check_value(f: dataclasses.Field, value: Any, key: str) -> None:
    """Range checks of one built field: finite floats, declared :func:`bounds` and ``choices``."""
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(item, float) and not math.isfinite(item):
            where = f"[{i}]" if isinstance(value, list) else ""
            raise ConfigError(f"config key '{key}{where}': value {item} is not a finite number")
    if key == "train.device":
        _check_device_name(value)
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}': value {value!r} is not one of {', '.join(map(str, choices))}")
    if "bounds" not in f.metadata or value is None:
        return
    lo, hi, lo_open, hi_open, increasing = f.metadata["bounds"]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        too_low = lo is not None and (item <= lo if lo_open else item < lo)
        too_high = hi is not None and (item >= hi if hi_open else item > hi)
        if too_low or too_high:
            allowed = " and ".join(part for part in (
                None if lo is None else f"{'>' if lo_open else '>='} {lo}",
                None if hi is None else f"{'<' if hi_open else '<='} {hi}") if part)
            shown = f"{item!r}" if item is value else f"{value!r} (item {item!r})"
            raise ConfigError(f"config key '{key}': value {shown} is out of range; expected {allowed}")
    if increasing and any(b <= a for a, b in zip(items, items[1:])):
        raise ConfigError(f"config key '{key}': value {value!r} must be strictly increasing")


def _check_device_name(name: str) -> None:
    if name == "auto":
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"config key 'train.device': value {name!r} is not a device; expected auto, cpu, cuda, "
                          "cuda:<index> or mps")


def check_device_available(name: str) -> None:
    """Raise :class:`ConfigError` unless device ``name`` (``auto``, ``cpu``, ``cuda[:i]``, ``mps``) exists here."""
    _check_device_name(name)
    if name in ("auto", "cpu"):
        return
    import torch

    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"config key 'train.device': {name!r} is not available (this machine has no CUDA "
                              "device); use train.device=cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"config key 'train.device': {name!r} is not available (CUDA devices: 0..{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config key 'train.device': {name!r} is not available here; use train.device=cpu or auto")


def validate_config(cfg: Config) -> Config:
    """The checks of a whole config: every value's range (again, for a ``Config`` built in Python rather than
    loaded) and that ``train.device`` is available on this machine. Returns ``cfg``."""
    _check_tree(cfg, "")
    check_device_available(cfg.train.device)
    return cfg


def _check_tree(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_tree(value, f"{prefix}{f.name}.")
        else:
            _check_value(f, value, f"{prefix}{f.name}")


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
        value = safe_load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse override {item!r}: value {text!r} is not valid YAML "
                          f"({_yaml_error(err)})") from None
    nested: Dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice (YAML keys are unique; PyYAML
    would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _yaml_error(err: yaml.YAMLError) -> str:
    """One line: the problem and where it is."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (the SafeLoader subclass above, driven directly)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read as UTF-8 text: {err}") from None
    try:
        raw = safe_load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_error(err)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return raw


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                base: Optional[Config] = None) -> Config:
    """Load a config: defaults (or ``base``) <- YAML file <- ``--set`` overrides, in that order; then
    :func:`validate_config`."""
    cfg = config_from_dict(_read_yaml(path), base) if path is not None else (base or Config())
    for item in overrides:
        cfg = config_from_dict(parse_override(item), cfg)
    return validate_config(cfg)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict of a config (JSON/YAML safe)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML (atomically)."""
    from vsd.engine.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
