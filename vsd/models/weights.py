"""Reading model weights safely from every checkpoint format a vsd user meets, and fitting them to a model.

:func:`read_state_dict` accepts, by content (not by file name):

* a vsd checkpoint (``vsd.engine.checkpoint``: its ``model`` entry, or ``ema`` with ``ema=True``);
* a plain ``.safetensors`` weight file;
* a PyTorch file (``torch.save``): the checkpoints timm's ``train.py`` / ``legacy_train.py`` write
  (``model_best.pth.tar``, ``checkpoint-*.pth.tar``, ``last.pth.tar``: a dict with ``state_dict``,
  ``state_dict_ema``, ``arch``, ``args``, ``epoch``, ``optimizer``, ``metric``...), timm's cleaned ``.pth``
  files, and the common ``{'model': ...}`` / ``{'model_ema': ...}`` layouts.

PyTorch files are read with ``torch.load(weights_only=True)``; the only extra type allowed is
``argparse.Namespace`` (:data:`SAFE_GLOBALS`: timm stores its command-line ``args`` in every training
checkpoint; a namespace holds plain values and runs no code when rebuilt). Anything else that would need
unpickling stops with an error naming the offending globals. ``module.`` (DDP) and ``_orig_mod.``
(``torch.compile``) prefixes are stripped. With ``ema=True`` the EMA weights are read (``state_dict_ema`` /
``model_ema`` / vsd's ``ema``); a file without EMA weights is an error, never a silent fallback.

:func:`load_weights` fits a state dict strictly (teachers); :func:`load_pretrained` tolerates a classifier of
another shape and extra entries (fine-tuning: ``model.checkpoint``).

Example:
    >>> import timm, torch
    >>> from vsd.models.weights import read_state_dict
    >>> model = timm.create_model("resnet10t", num_classes=3)
    >>> _ = torch.save({"state_dict": model.state_dict(), "epoch": 1}, "/tmp/_vsd_example.pth.tar")
    >>> sorted(read_state_dict("/tmp/_vsd_example.pth.tar")) == sorted(model.state_dict())
    True
"""
from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from vsd.engine.checkpoint import FORMAT, load_checkpoint

__all__ = ["SAFE_GLOBALS", "read_state_dict", "load_weights", "load_pretrained"]

#: Non-tensor types allowed while reading a PyTorch checkpoint (timm stores ``args`` as a Namespace).
SAFE_GLOBALS = (argparse.Namespace,)

#: Where each layout keeps its weights: (plain, EMA) entry names, tried in order.
_ENTRIES = (("state_dict", "state_dict_ema"), ("model", "model_ema"))
_PREFIXES = ("module.", "_orig_mod.")

PathLike = Union[str, Path]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _clean(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip DDP / torch.compile prefixes, in any order and nesting."""
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))):]
        out[key] = value
    return out


def _magic(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(4)


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # a legacy (non-zip) file cannot be scanned: report the loader's own first line
            found = str(err).splitlines()[0]
        raise ValueError(f"checkpoint {str(path)!r} holds objects other than tensors, plain containers and "
                         f"argparse.Namespace ({found}); vsd reads PyTorch files with weights_only=True and will "
                         f"not unpickle them. Re-save the weights alone, e.g. torch.save(model.state_dict(), ...) "
                         f"or timm's clean_checkpoint.py") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or truncated (a PyTorch file that cannot be "
                         f"read: {str(err).splitlines()[0]})") from None


def _pick(obj: Any, path: Path, ema: bool) -> Mapping[str, torch.Tensor]:
    """The (EMA) state dict inside a loaded PyTorch object."""
    if isinstance(obj, Mapping):
        for plain, averaged in _ENTRIES:
            key = averaged if ema else plain
            if _is_state_dict(obj.get(key)):
                return obj[key]
    if _is_state_dict(obj) and not ema:
        return obj
    entries = sorted(k for k, v in obj.items() if _is_state_dict(v)) if isinstance(obj, Mapping) else []
    want = "EMA weights ('state_dict_ema' or 'model_ema')" if ema else \
        "state dict of tensors (at the top level or under 'state_dict' or 'model')"
    found = f"weight entries found: {entries}" if entries else f"top-level {type(obj).__name__}" + (
        f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
    raise ValueError(f"checkpoint {str(path)!r} holds no {want}; {found}")


def _read_safetensors(path: Path, ema: bool) -> Dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        is_vsd = (handle.metadata() or {}).get("format") == FORMAT
    if is_vsd:
        state = load_checkpoint(path)
        key = "ema" if ema else "model"
        if key not in state:
            raise ValueError(f"checkpoint {str(path)!r} is a vsd checkpoint without EMA weights (train.ema was "
                             f"off); drop the EMA option to read its model weights")
        return state[key]
    if ema:
        raise ValueError(f"{str(path)!r} is a plain safetensors weight file: it holds one set of weights, no "
                         f"separate EMA weights; drop the EMA option")
    return load_file(str(path))


def read_state_dict(path: PathLike, ema: bool = False) -> Dict[str, torch.Tensor]:
    """Model weights from a vsd checkpoint, a safetensors file or a PyTorch file (see the module docstring).

    Args:
        path: the local file.
        ema: read the EMA weights instead of the trained ones.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is of no supported format, would need unpickling, or holds no (EMA) weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    magic = _magic(path)
    if magic == b"PK\x03\x04":  # torch.save's zip archive (torch >= 1.6)
        return _clean(_pick(_torch_load(path), path, ema))
    try:
        return _clean(_read_safetensors(path, ema))
    except SafetensorError:
        if magic[:2] == b"\x80\x02":  # a legacy torch.save pickle stream (protocol 2)
            return _clean(_pick(_torch_load(path), path, ema))
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or truncated, or of another format: neither a "
                         f"safetensors file (vsd checkpoint or weights) nor a PyTorch file written by torch.save "
                         f"(e.g. timm's model_best.pth.tar)") from None


def _listing(keys: list, limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _compare(model: nn.Module, state: Mapping[str, torch.Tensor], skip: Tuple[str, ...] = ()
             ) -> Tuple[list, list, list]:
    own = model.state_dict()
    kept = [k for k in own if not (skip and k.startswith(skip))]
    missing = sorted(k for k in kept if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in kept
                    if k in state and state[k].shape != own[k].shape)
    return missing, unexpected, shapes


def load_weights(model: nn.Module, path: PathLike, ema: bool = False) -> None:
    """Load ``path`` into ``model`` strictly; one error lists the missing, unexpected and mis-shaped keys."""
    state = read_state_dict(path, ema)
    missing, unexpected, shapes = _compare(model, state)
    if missing or unexpected or shapes:
        problems = [f"missing keys: {_listing(missing)}" if missing else "",
                    f"unexpected keys: {_listing(unexpected)}" if unexpected else "",
                    f"shape mismatches (checkpoint vs model): {_listing(shapes)}" if shapes else ""]
        raise ValueError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: "
                         + "; ".join(p for p in problems if p))
    model.load_state_dict(state)


def _classifier_prefixes(model: nn.Module) -> Tuple[str, ...]:
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "head") or "head"
    names = name if isinstance(name, (list, tuple)) else [name]
    return tuple(f"{n}." for n in names)


def load_pretrained(model: nn.Module, path: PathLike, ema: bool = False) -> None:
    """Initialise ``model`` from ``path`` for fine-tuning: a classifier whose shape differs (another label set)
    and entries the model lacks (e.g. an MAE decoder) are skipped; any other missing or mis-shaped key is an
    error listing the keys."""
    state = read_state_dict(path, ema)
    head = _classifier_prefixes(model)
    missing, _, shapes = _compare(model, state, skip=head)
    if missing or shapes:
        problems = [f"missing keys: {_listing(missing)}" if missing else "",
                    f"shape mismatches (checkpoint vs model): {_listing(shapes)}" if shapes else ""]
        raise ValueError(f"checkpoint {str(path)!r} does not fit model {type(model).__name__}: "
                         + "; ".join(p for p in problems if p))
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
