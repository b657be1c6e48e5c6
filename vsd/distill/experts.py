r"""Expert trajectories (the "buffer"): networks trained on real data, with a flat parameter snapshot at
initialisation and after every epoch.

MTT (Cazenavette et al., CVPR 2022, ``buffer.py``): plain SGD lr 0.01, no momentum, no weight decay, batch 256,
50 epochs, DSA on the real batches. Smooth experts (Shen et al., AST, ``buffer.py`` / ``utils.epoch_flat`` /
``utils.epoch_gp``): SGD momentum 0.9, weight decay 1e-3, lr 0.003, lr x0.6 at epoch ``epochs // 2 + 1``, the
cross-entropy scaled by :math:`0.5 + 0.05 e` in epochs :math:`e = 0..9` ("loss scaling"), and a gradient penalty

.. math::
    \lambda \cdot \mathrm{mean}_i \big(\lVert \partial \textstyle\sum_k f_k(x_i) / \partial x_i \rVert_2 - 1\big)^2
    \quad(\lambda = 2).

As in AST's ``buffer.py`` the x``lr_decay`` drop builds a new SGD optimizer at the lower lr, so the momentum buffer
starts from zero again (an in-place lr change would keep the momentum accumulated at the higher lr).

AST's weight perturbation of the matching start point (``distill.py`` ``weightPerturb``, used by
:mod:`vsd.distill.mtt` when ``distill.weight_perturb`` > 0) is :func:`perturb_weights`: per convolution weight
``W`` (each 4-d parameter on its own), ``W + alpha * W * D / ||D||_F`` with ``D ~ N(0, I)`` of ``W``'s shape.

Deliberate differences from the official code: the gradient-penalty norm is taken per sample over all pixels and
channels (the official code takes it over the channel axis only, per pixel); the penalty uses the un-augmented
batch like the official code. Each expert has its own seed (``seed * 100003 + index``), so an interrupted buffer
run resumes by training only the missing experts and gives the same buffer as an uninterrupted run.

Experts are augmented with ``spec.dsa_strategy``, the strategy the distillation and the evaluation use (MTT's
``buffer.py`` and ``distill.py`` share ``--dsa_strategy``), so e.g. digits experts never see flips.

Storage: a folder with ``buffer.json`` (format, the identity: model, model kwargs, data set, image size,
channels, classes, ZCA flag, parameter names and shapes; the training spec, DSA strategy and autocast
included) and ``expert_XXX.safetensors``
(``trajectory`` [epochs + 1, P], float32 or float16). :func:`load_buffer` refuses a buffer whose identity differs
from the caller's (another architecture or data set) with :class:`BufferMismatchError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vsd.distill.augment import DEFAULT_STRATEGY, DSA
from vsd.distill.flat import FlatModel
from vsd.distill.precision import autocast
from vsd.engine.io import atomic_path, atomic_write_json

BUFFER_FORMAT = "vsd-expert-buffer"
BUFFER_VERSION = 1
LOSS_SCALES = tuple(0.5 + 0.05 * e for e in range(10))
AUTOCAST = {"none": None, "bfloat16": torch.bfloat16}


class BufferMismatchError(ValueError):
    """An expert buffer was made for another architecture, data set or training spec, or is corrupt."""


@dataclass
class ExpertSpec:
    """How experts are trained (MTT defaults; AST's smooth experts: momentum 0.9, weight_decay 1e-3, lr 0.003,
    lr_decay 0.6, loss_scaling True, grad_penalty 2.0)."""

    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    lr_decay: float = 1.0
    loss_scaling: bool = False
    grad_penalty: float = 0.0
    augment: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    autocast: str = "none"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"expert epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"expert lr must be positive, got {self.lr}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"expert storage dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if self.autocast not in AUTOCAST:
            raise ValueError(f"expert autocast must be one of {sorted(AUTOCAST)}, got {self.autocast!r}")


def loss_scale(epoch: int, enabled: bool) -> float:
    """AST's loss-scaling factor: 0.5, 0.55, ..., 0.95 in epochs 0..9, then 1 (always 1 when disabled)."""
    return LOSS_SCALES[epoch] if enabled and epoch < len(LOSS_SCALES) else 1.0


def conv_slices(shapes: Sequence[Sequence[int]]) -> List[slice]:
    """The flat-vector ranges of the 4-d (convolution) weights, given every parameter's shape in flat order."""
    out, start = [], 0
    for shape in shapes:
        n = int(math.prod(shape))
        if len(shape) == 4:
            out.append(slice(start, start + n))
        start += n
    return out


def perturb_weights(w0: torch.Tensor, layers: Sequence[slice], alpha: float,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """AST's weight perturbation, normalised per layer: for each range ``l`` of ``layers`` (one convolution
    weight), ``w_l + alpha * w_l * d_l / ||d_l||`` with ``d_l ~ N(0, I)``; other entries unchanged."""
    out = w0.clone()
    for layer in layers:
        w = w0[layer]
        d = torch.randn(w.numel(), generator=generator).to(w)
        out[layer] = w + alpha * w * d / d.norm()
    return out


def gradient_penalty(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``mean_i (||d sum_k f_k(x_i) / d x_i||_2 - 1)^2`` with a graph (so it can be minimised)."""
    x = x.detach().requires_grad_(True)
    grad = torch.autograd.grad(model(x).float().sum(), x, create_graph=True)[0]
    return ((grad.float().flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def train_expert(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: ExpertSpec,
                 augment: Optional[DSA] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Train ``model`` in place on (images, labels) and return its trajectory [epochs + 1, P] (float32).

    ``spec.autocast='bfloat16'``: forward/backward under bf16 autocast (the cross-entropy, the gradient penalty's
    norm and the parameters stay float32)."""
    fm = FlatModel(model)
    amp = AUTOCAST[spec.autocast]
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    snapshots = [fm.flatten_module().float().cpu()]
    model.train()
    n = images.shape[0]
    for epoch in range(spec.epochs):
        order = torch.randperm(n, generator=generator).to(images.device)  # CPU generator: same draws anywhere
        for start in range(0, n, spec.batch_size):
            idx = order[start:start + spec.batch_size]
            x, y = images[idx], labels[idx]
            x_aug = augment(x, generator=generator) if augment is not None else x
            with autocast(amp, images.device):
                loss = F.cross_entropy(model(x_aug), y).float() * loss_scale(epoch, spec.loss_scaling)
                if spec.grad_penalty:
                    loss = loss + spec.grad_penalty * gradient_penalty(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        snapshots.append(fm.flatten_module().float().cpu())
        if epoch == spec.epochs // 2 + 1 and spec.lr_decay != 1.0:  # AST: a new optimizer, momentum reset
            opt = torch.optim.SGD(model.parameters(), lr=opt.param_groups[0]["lr"] * spec.lr_decay,
                                  momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.stack(snapshots)


def expert_seed(seed: int, index: int) -> int:
    """The seed of expert ``index`` in a run seeded ``seed``."""
    return seed * 100003 + index


def _expert_path(folder: Path, index: int) -> Path:
    return folder / f"expert_{index:03d}.safetensors"


def _header(identity: Dict[str, Any], spec: ExpertSpec) -> Dict[str, Any]:
    return {"format": BUFFER_FORMAT, "format_version": BUFFER_VERSION, "identity": identity,
            "spec": dataclasses.asdict(spec)}


def _mismatch(kind: str, stored: Dict[str, Any], wanted: Dict[str, Any], folder: Path) -> None:
    diff = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if diff:
        detail = "; ".join(f"{k}: buffer has {_short(stored.get(k))}, expected {_short(wanted.get(k))}" for k in diff)
        raise BufferMismatchError(f"expert buffer {str(folder)!r} was made with another {kind} ({detail}); "
                                  "use another buffer folder or rebuild it")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_header(folder: Path) -> Dict[str, Any]:
    try:
        header = json.loads((folder / "buffer.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BufferMismatchError(f"expert buffer {str(folder)!r} has no readable buffer.json: {err}") from None
    if header.get("format") != BUFFER_FORMAT or header.get("format_version") != BUFFER_VERSION:
        raise BufferMismatchError(f"{str(folder / 'buffer.json')!r} is not a vsd expert buffer of version "
                                  f"{BUFFER_VERSION} (format {header.get('format')!r}, version "
                                  f"{header.get('format_version')!r})")
    return header


def check_buffer(folder: Path, identity: Dict[str, Any], spec: Optional[ExpertSpec] = None) -> Dict[str, Any]:
    """Read ``buffer.json`` and refuse it when its identity (or spec, when given) differs from the expected."""
    header = _read_header(folder)
    _mismatch("architecture or data set", header["identity"], identity, folder)
    if spec is not None:
        _mismatch("expert training spec", header["spec"], dataclasses.asdict(spec), folder)
    return header


def _complete(path: Path, epochs: int, num_params: int) -> bool:
    if not path.is_file():
        return False
    try:
        traj = load_file(str(path))["trajectory"]
    except (SafetensorError, OSError, KeyError, ValueError):
        return False
    return tuple(traj.shape) == (epochs + 1, num_params)


def build_buffer(folder: Path, identity: Dict[str, Any], spec: ExpertSpec, num_experts: int,
                 make_model: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, seed: int,
                 rank: int = 0, world_size: int = 1, progress: Optional[Callable[[str], None]] = None) -> List[int]:
    """Train the experts missing from ``folder`` (this rank: indices ``i % world_size == rank``); return the
    indices trained now. A folder made for another identity or spec is refused."""
    folder = Path(folder)
    if (folder / "buffer.json").exists():
        check_buffer(folder, identity, spec)
    else:  # every rank may write it: identical content, atomic replace
        atomic_write_json(folder / "buffer.json", _header(identity, spec))
    num_params = sum(p.numel() for p in make_model().parameters())
    augment = DSA(spec.dsa_strategy) if spec.augment else None
    trained = []
    for index in range(rank, num_experts, world_size):
        path = _expert_path(folder, index)
        if _complete(path, spec.epochs, num_params):
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(expert_seed(seed, index))
            model = make_model().to(images.device)
            generator = torch.Generator().manual_seed(expert_seed(seed, index))
            traj = train_expert(model, images, labels, spec, augment, generator)
        store = traj.half() if spec.dtype == "float16" else traj
        with atomic_path(path) as tmp:
            save_file({"trajectory": store.contiguous()}, str(tmp), metadata={"index": str(index)})
        trained.append(index)
        if progress is not None:
            progress(f"expert {index + 1}/{num_experts} trained")
    return trained


def load_buffer(folder: Path, identity: Dict[str, Any], num_experts: Optional[int] = None) -> List[torch.Tensor]:
    """The trajectories ([epochs + 1, P] float32 each) of a buffer made for ``identity``."""
    folder = Path(folder)
    header = check_buffer(folder, identity)
    epochs = header["spec"]["epochs"]
    num_params = sum(int(torch.tensor(s).prod()) if s else 1 for s in identity["param_shapes"])
    paths = sorted(folder.glob("expert_*.safetensors"))
    if num_experts is not None:
        paths = [_expert_path(folder, i) for i in range(num_experts)]
    out = []
    for path in paths:
        if not _complete(path, epochs, num_params):
            raise BufferMismatchError(f"expert file {str(path)!r} is missing, corrupt or not [{epochs + 1}, "
                                      f"{num_params}]; rebuild the buffer (missing experts are retrained)")
        out.append(load_file(str(path))["trajectory"].float())
    if not out:
        raise BufferMismatchError(f"expert buffer {str(folder)!r} holds no experts")
    return out


def buffer_identity(model_name: str, model_kwargs: Dict[str, Any], fm: FlatModel, dataset: str, image_size: int,
                    in_chans: int, num_classes: int, zca: bool) -> Dict[str, Any]:
    """What a buffer must match to be reused: architecture, its parameter layout, data set and preprocessing."""
    layout = fm.layout()
    return {"model": model_name, "model_kwargs": dict(model_kwargs), "dataset": dataset,
            "image_size": int(image_size), "in_chans": int(in_chans), "num_classes": int(num_classes),
            "zca": bool(zca), "param_names": layout["names"], "param_shapes": layout["shapes"]}
