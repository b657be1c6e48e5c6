"""Checkpoints in safe formats: one ``.safetensors`` file holding every tensor, with the rest of the state
(numbers, strings, nesting) as JSON in the file's metadata. Nothing is ever unpickled.

Any nested structure of dicts (any hashable JSON-able keys), lists, tuples, tensors, numbers, strings and
``None`` round-trips exactly: tensors are stored under generated keys and replaced in the JSON skeleton by
``{"__tensor__": key}``; tuples and dicts with non-string keys carry a marker so they come back as they went in.
Writes are atomic (see :mod:`vsd.engine.io`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vsd.engine.io import atomic_path

FORMAT = "vsd-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or of another format."""


def flatten_state(obj: Any) -> Tuple[Dict[str, torch.Tensor], Any]:
    """Split a nested state into ``(tensors, skeleton)``; the skeleton is JSON-serialisable."""
    tensors: Dict[str, torch.Tensor] = {}

    def visit(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = node.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node):
                return {k: visit(v) for k, v in node.items()}
            return {"__items__": [[visit(k), visit(v)] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [visit(v) for v in node]}
        if isinstance(node, list):
            return [visit(v) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store a {type(node).__name__} in a checkpoint (only tensors and JSON values)")

    return tensors, visit(obj)


def unflatten_state(tensors: Dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"__tensor__"}:
                return tensors[node["__tensor__"]]
            if set(node) == {"__tuple__"}:
                return tuple(visit(v) for v in node["__tuple__"])
            if set(node) == {"__items__"}:
                return {_hashable(visit(k)): visit(v) for k, v in node["__items__"]}
            return {k: visit(v) for k, v in node.items()}
        if isinstance(node, list):
            return [visit(v) for v in node]
        return node

    return visit(skeleton)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    """Write ``state`` (nested tensors + JSON values) to ``path`` atomically."""
    tensors, skeleton = flatten_state(state)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "state": json.dumps(skeleton)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` with a readable
    message when the file is missing, truncated, corrupt or not a vsd checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated (expected a vsd safetensors checkpoint): {err}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a vsd checkpoint (format {metadata.get('format')!r})")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {metadata.get('format_version')}, expected {FORMAT_VERSION}"
        )
    try:
        skeleton = json.loads(metadata["state"])
        return unflatten_state(tensors, skeleton)
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has corrupt metadata: {err}") from None


def load_model_weights(path: Union[str, Path], key: str = "model") -> Dict[str, torch.Tensor]:
    """Return a model state dict from a vsd checkpoint (``key`` entry) or a plain safetensors weight file."""
    path = Path(path)
    try:
        return load_checkpoint(path)[key]
    except CheckpointError as err:
        if "not a vsd checkpoint" not in str(err):
            raise
    return load_file(str(path))
