"""Export of a distilled data set: ``distilled.safetensors`` + ``distilled.json``, PNG grids, ImageFolder.

``distilled.safetensors`` holds ``images`` [N, C, H, W] float32 (in the space the trainer consumes: normalized
with ``mean``/``std`` and, when ``zca`` is true, ZCA-whitened), ``labels`` ([N] int64 class indices or [N, K]
soft targets), optionally ``targets`` (e.g. KRR-ST representations) and any extra tensors (e.g. ZCA matrices).
``distilled.json`` describes it (format version, method, source data set, class names, ipc, image size,
normalization, ZCA flag, learned syn_lr, the resolved config, the vsd version, and ``eval_recipe``: the protocol
the export's reported accuracy was measured with, see :func:`evaluation_recipe`) and records the SHA-256 of the
tensor file, which :func:`load_distilled` verifies. Writes are atomic.

Example:
    >>> import tempfile, torch
    >>> out = tempfile.mkdtemp()
    >>> meta = {"method": "mtt", "dataset": "digits", "classes": ["0", "1"], "mean": [0.5], "std": [0.5]}
    >>> _ = save_distilled(out, torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), meta)
    >>> tensors, meta = load_distilled(out)
    >>> meta["ipc"], tuple(tensors["images"].shape)
    (1, (2, 1, 4, 4))
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vsd.engine.io import atomic_path, atomic_write_bytes, atomic_write_json
from vsd.version import __version__

FORMAT = "vsd-distilled"
FORMAT_VERSION = 1
TENSOR_FILE = "distilled.safetensors"
META_FILE = "distilled.json"
_REQUIRED_META = ("method", "dataset", "classes", "mean", "std")
_RESERVED = ("images", "labels", "targets")


class DistilledFormatError(ValueError):
    """A distilled export is missing, corrupt (hash mismatch), or of another format or version."""


def _hard_labels(labels: torch.Tensor) -> torch.Tensor:
    return labels.argmax(dim=1) if labels.dim() == 2 else labels


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, meta: Dict[str, Any],
                  targets: Optional[torch.Tensor]) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor [N, C, H, W], got {getattr(images, 'shape', type(images))}")
    n = images.shape[0]
    if labels.dim() not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"labels must be [N] class indices or [N, K] soft targets with N={n}, "
                         f"got {tuple(labels.shape)}")
    if labels.dim() == 1 and labels.dtype.is_floating_point:
        raise ValueError(f"1-d labels must be integer class indices, got {labels.dtype}")
    if targets is not None and targets.shape[0] != n:
        raise ValueError(f"targets must have {n} rows like images, got {tuple(targets.shape)}")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"distilled meta is missing {missing}; required keys: {list(_REQUIRED_META)}")
    classes = len(meta["classes"])
    if labels.dim() == 1 and n and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"label {bad} out of range for {classes} classes (expected 0..{classes - 1})")
    chans = images.shape[1]
    for key in ("mean", "std"):
        if len(meta[key]) != chans:
            raise ValueError(f"meta[{key!r}] must have one value per channel ({chans}), got {meta[key]}")


def _dsa_strategy(distill: Dict[str, Any], dataset: str) -> Optional[str]:
    """The DSA strategy the distillation evaluated with (``auto``: drop ``flip`` where flips change the class)."""
    from vsd.distill.augment import DEFAULT_STRATEGY

    if not distill.get("dsa", True):
        return None
    strategy = distill.get("dsa_strategy", "auto")
    if strategy == "auto":
        try:
            from vsd.data.registry import dataset_info

            hflip = dataset_info(dataset).hflip
        except (ValueError, TypeError, KeyError):
            hflip = True
        strategy = DEFAULT_STRATEGY if hflip else DEFAULT_STRATEGY.replace("_flip", "")
    return strategy


def evaluation_recipe(meta: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The training protocol behind the accuracy an export reports, from its meta (``None`` when unknown).

    Trajectory matching (``vsd.distill.evaluate.train_network``, MTT's ``evaluate_synset``): the distillation
    model (``model``, ``model_kwargs``), SGD with momentum 0.9 (``opt: momentum``, no Nesterov) at the learned
    ``syn_lr``, weight decay 5e-4, ``distill.eval_epochs`` epochs of batches ``distill.eval_batch_size``, the lr
    x0.1 at half of the epochs, DSA with the distillation's strategy (``augmentation: dsa``, ``dsa_strategy``).
    KRR-ST: the transfer pre-training (MSE on ``targets``; ``use: pretraining``).
    """
    config = meta.get("config") or {}
    distill = config.get("distill") or {}
    model = config.get("model") or {}
    if meta.get("method") == "krr_st":
        transfer = distill.get("transfer") or {}
        return {"use": "pretraining", "loss": "mse", "model": transfer.get("model") or model.get("name"),
                "model_kwargs": transfer.get("model_kwargs") if transfer.get("model") else model.get("kwargs", {}),
                "opt": "momentum", "momentum": 0.9, "lr": transfer.get("pretrain_lr", 0.1),
                "weight_decay": transfer.get("pretrain_weight_decay", 1e-3),
                "epochs": transfer.get("pretrain_epochs", 1000), "batch_size": transfer.get("pretrain_batch_size", 256),
                "decay_milestones": [transfer.get("pretrain_epochs", 1000) // 2], "decay_rate": 0.1,
                "augmentation": "none"}
    if meta.get("method") != "mtt" or not distill or meta.get("syn_lr") is None:
        return None
    epochs = int(distill.get("eval_epochs", 1000))
    strategy = _dsa_strategy(distill, meta["dataset"])
    return {"use": "training", "loss": "ce", "model": model.get("name"), "model_kwargs": model.get("kwargs", {}),
            "opt": "momentum", "momentum": 0.9, "lr": float(meta["syn_lr"]), "weight_decay": 5e-4,
            "epochs": epochs, "batch_size": int(distill.get("eval_batch_size", 256)),
            "sched": "multistep", "decay_milestones": [epochs // 2], "decay_rate": 0.1,
            "augmentation": "dsa" if strategy else "none", "dsa_strategy": strategy}


def save_distilled(out_dir: Union[str, Path], images: torch.Tensor, labels: torch.Tensor, meta: Dict[str, Any],
                   targets: Optional[torch.Tensor] = None,
                   extra_tensors: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, Any]:
    """Write ``distilled.safetensors`` and ``distilled.json`` into ``out_dir``; return the written meta.

    ``meta`` must hold ``method``, ``dataset``, ``classes`` (class names), ``mean`` and ``std`` (per channel);
    optional ``zca`` (bool), ``syn_lr`` (float), ``config`` (dict) and any other JSON values. ``ipc``,
    ``num_images``, ``image_size``, ``in_chans``, ``label_kind``, the format version, the vsd version and the
    SHA-256 of the tensor file are filled in here.
    """
    _check_inputs(images, labels, meta, targets)
    tensors: Dict[str, torch.Tensor] = {"images": images.detach().float().cpu().contiguous(),
                                        "labels": labels.detach().cpu().contiguous()}
    if targets is not None:
        tensors["targets"] = targets.detach().float().cpu().contiguous()
    for key, value in (extra_tensors or {}).items():
        if key in _RESERVED:
            raise ValueError(f"extra tensor name {key!r} is reserved; use another name")
        tensors[key] = value.detach().cpu().contiguous()
    payload = st_save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    counts = torch.bincount(_hard_labels(tensors["labels"]), minlength=len(meta["classes"]))
    full_meta: Dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "vsd_version": __version__,
        "zca": False, "syn_lr": None, "config": {},
        **meta,
        "ipc": meta.get("ipc", int(counts.max()) if len(counts) else 0),
        "num_images": int(images.shape[0]),
        "image_size": [int(images.shape[2]), int(images.shape[3])],
        "in_chans": int(images.shape[1]),
        "label_kind": "soft" if labels.dim() == 2 else "hard",
        "tensor_file": TENSOR_FILE,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    if "eval_recipe" not in full_meta:
        full_meta["eval_recipe"] = evaluation_recipe(full_meta)
    out = Path(out_dir)
    atomic_write_bytes(out / TENSOR_FILE, payload)
    atomic_write_json(out / META_FILE, full_meta)
    return full_meta


def load_distilled(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read an export (its folder or its ``distilled.json``); verify format, version and SHA-256.

    Returns ``(tensors, meta)``; raises :class:`DistilledFormatError` with a readable message otherwise.
    """
    path = Path(path)
    meta_path = path / META_FILE if path.is_dir() else path
    if not meta_path.is_file():
        raise DistilledFormatError(f"no distilled export at {str(path)!r} (expected {META_FILE} in that folder)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistilledFormatError(f"{str(meta_path)!r} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DistilledFormatError(f"{str(meta_path)!r} is not a vsd distilled export (format "
                                   f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DistilledFormatError(f"{str(meta_path)!r} has format version {meta.get('format_version')!r}; this "
                                   f"vsd ({__version__}) reads version {FORMAT_VERSION}")
    tensor_path = meta_path.parent / meta.get("tensor_file", TENSOR_FILE)
    if not tensor_path.is_file():
        raise DistilledFormatError(f"distilled tensor file {str(tensor_path)!r} is missing")
    payload = tensor_path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != meta.get("sha256"):
        raise DistilledFormatError(f"distilled tensor file {str(tensor_path)!r} is corrupt: SHA-256 {digest} does "
                                   f"not match the {meta.get('sha256')!r} recorded in {META_FILE}")
    tensors = st_load(payload)
    if "images" not in tensors or "labels" not in tensors:
        raise DistilledFormatError(f"{str(tensor_path)!r} lacks 'images' or 'labels'")
    return tensors, meta


def to_display(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
               zca_inverse: Optional[torch.Tensor] = None, zca_mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Map stored images back to [0, 1] pixels: undo ZCA (``x @ zca_inverse + zca_mean``, kornia's convention,
    when given) and the normalization."""
    x = images.detach().float().cpu()
    if zca_inverse is not None:
        shift = zca_mean.float().reshape(1, -1) if zca_mean is not None else 0.0
        x = (x.flatten(1) @ zca_inverse.float() + shift).view_as(x)
    m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


def _write_png(path: Path, image: torch.Tensor) -> None:
    """Write a [C, H, W] image in [0, 1] as PNG (grayscale or RGB), atomically."""
    from PIL import Image

    arr = (image * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr[:3].permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_class_grids(out_dir: Union[str, Path], pixels: torch.Tensor, labels: torch.Tensor,
                     classes: Sequence[str], upscale: int = 1) -> List[Path]:
    """Write one PNG grid per class (``grid_<class>.png``) and one of all classes (``grid_all.png``, a row per
    class) from ``pixels`` in [0, 1] (see :func:`to_display`); return the written paths."""
    from torchvision.utils import make_grid

    out = Path(out_dir)
    hard = _hard_labels(labels)
    if upscale > 1:
        pixels = torch.nn.functional.interpolate(pixels, scale_factor=upscale, mode="nearest")
    names = sanitized_names(classes)
    written: List[Path] = []
    rows = []
    per_class = int(torch.bincount(hard, minlength=len(classes)).max()) if len(hard) else 0
    for c, name in enumerate(names):
        members = pixels[hard == c]
        if len(members) == 0:
            continue
        grid = make_grid(members, nrow=min(10, len(members)), padding=1, pad_value=1.0)
        path = out / f"grid_{name}.png"
        _write_png(path, grid)
        written.append(path)
        padded = torch.ones(per_class, *pixels.shape[1:])
        padded[: len(members)] = members
        rows.append(padded)
    if rows:
        grid = make_grid(torch.cat(rows), nrow=per_class if per_class > 1 else len(rows), padding=1, pad_value=1.0)
        _write_png(out / "grid_all.png", grid)
        written.append(out / "grid_all.png")
    return written


def sanitized_names(classes: Sequence[str]) -> List[str]:
    """File-system-safe, unique class names: characters outside ``[A-Za-z0-9._-]`` become ``_``; empty, dotted or
    duplicate names get the class index."""
    out: List[str] = []
    seen = set()
    for i, name in enumerate(classes):
        clean = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
        if not clean or clean in seen:
            clean = f"{i:03d}_{clean}" if clean else f"class_{i:03d}"
        seen.add(clean)
        out.append(clean)
    return out


def imagefolder_note(meta: Dict[str, Any]) -> str:
    """What timm's ``train.py`` needs to train on the ImageFolder tree close to the export's reported accuracy
    (written as ``README.txt`` beside the class folders)."""
    recipe = meta.get("eval_recipe") or evaluation_recipe(meta)
    lines = [f"Distilled with {meta.get('method')} from {meta.get('dataset')} ({meta.get('ipc')} images per class).",
             "PNG pixels in [0, 1]; normalise with the export's mean/std: "
             f"--mean {' '.join(f'{v:.4f}' for v in meta['mean'])} --std {' '.join(f'{v:.4f}' for v in meta['std'])}"]
    if meta.get("zca"):
        lines.append("This export is ZCA-whitened: the PNGs are the un-whitened pixels, so a network trained on them "
                     "does not see what the reported accuracy was measured on; use the safetensors export instead.")
    if not recipe or recipe.get("use") != "training":
        lines.append("No training recipe recorded for this export.")
        return "\n".join(lines) + "\n"
    c, h, w = meta["in_chans"], *meta["image_size"]
    lines += [
        "The reported accuracy was measured with (distilled.json eval_recipe): "
        f"model {recipe['model']} {recipe['model_kwargs']}, SGD momentum {recipe['momentum']} lr {recipe['lr']:.6g}, "
        f"weight decay {recipe['weight_decay']}, {recipe['epochs']} epochs, batch {recipe['batch_size']}, lr x"
        f"{recipe['decay_rate']} at epoch {recipe['decay_milestones'][0]}, augmentation "
        f"{recipe['augmentation']} {recipe.get('dsa_strategy') or ''}.",
        "timm train.py arguments that follow it (vsd models after `import vsd`):",
        f"  --model {recipe['model']} --input-size {c} {h} {w} --opt momentum --momentum {recipe['momentum']} "
        f"--lr {recipe['lr']:.6g} --weight-decay {recipe['weight_decay']} --epochs {recipe['epochs']} "
        f"--sched step --decay-epochs {recipe['decay_milestones'][0]} --decay-rate {recipe['decay_rate']} "
        f"--warmup-epochs 0 --smoothing 0 -b {min(recipe['batch_size'], meta['num_images'])} --no-aug",
        "timm has no DSA (differentiable siamese augmentation): --no-aug trains without it. What that costs is "
        "measured on digits in the README (section 4, train on an export).",
    ]
    return "\n".join(lines) + "\n"


def export_imagefolder(out_dir: Union[str, Path], pixels: torch.Tensor, labels: torch.Tensor,
                       classes: Sequence[str], meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``out_dir/<class>/<index>.png`` for each image (soft labels: arg-max class), readable by
    ``torchvision.datasets.ImageFolder`` and timm's training scripts, and ``out_dir/README.txt`` saying how to train
    on it with timm (:func:`imagefolder_note`; ``meta`` defaults to the ``distilled.json`` in ``out_dir``'s
    parent, i.e. the export the tree belongs to); return ``out_dir``."""
    from vsd.engine.io import atomic_write_text

    out = Path(out_dir)
    hard = _hard_labels(labels)
    names = sanitized_names(classes)
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(pixels, hard.tolist())):
        _write_png(out / names[label] / f"{i:05d}.png", image)
    if meta is None and (out.parent / META_FILE).is_file():
        meta = json.loads((out.parent / META_FILE).read_text(encoding="utf-8"))
    if meta is not None:
        atomic_write_text(out / "README.txt", imagefolder_note(meta))
    return out
