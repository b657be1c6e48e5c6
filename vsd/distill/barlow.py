"""The KRR-ST target model ``g``: a self-supervised encoder (Barlow Twins) trained on the unlabeled source data,
or any local checkpoint.

Barlow Twins (Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021,
https://arxiv.org/abs/2103.03230). Two augmented views of a batch go through the encoder and a projector MLP;
with ``z1, z2`` [N, D] standardised over the batch (zero mean, unit variance per dimension), the
cross-correlation ``C = z1^T z2 / N`` is pushed towards the identity::

    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2          (lambda = 5e-3)

The target representation is the encoder's penultimate feature (the projector is dropped), as in KRR-ST, whose
official code (db-Lee/selfsup_dd, ``train.py``) loads a Barlow Twins ResNet-18 with ``fc = Identity``.
Differences from the Barlow Twins official code (facebookresearch/barlowtwins): the standardisation uses the
batch statistics directly (equal to its ``BatchNorm1d(affine=False)`` in training mode, biased variance); the
optimizer is AdamW with a cosine schedule instead of LARS (small batches, CPU budgets); the augmentation
family is sized for small images (no blur; colour jitter restricted to brightness/contrast for 1-channel
images, where saturation, hue and grayscale are undefined).

Example:
    >>> z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    >>> float(barlow_twins_loss(z1, z1)) < float(barlow_twins_loss(z1, z2))
    True
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import kornia.augmentation as K
import torch
import torch.nn as nn

from vsd.distill.model_pool import head_keys, member_features

__all__ = ["FeatureEncoder", "barlow_twins_loss", "build_projector", "ssl_augmentation", "train_barlow_twins",
           "load_encoder_weights"]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins redundancy-reduction loss of two [N, D] embeddings (see the module docstring)."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"Barlow Twins embeddings must both have shape [N, D]; got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"Barlow Twins needs a batch of at least 2 to standardise over, got {z1.shape[0]}")
    n = z1.shape[0]

    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = standardise(z1).T @ standardise(z2) / n
    diag = torch.diagonal(c)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


def build_projector(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """Barlow Twins projector: ``Linear -> BN -> ReLU`` for every hidden width, then a bias-free ``Linear``
    to ``dims[-1]``."""
    if not dims:
        raise ValueError("the Barlow Twins projector needs at least one output width, e.g. [512, 512]")
    layers: List[nn.Module] = []
    prev = in_dim
    for width in dims[:-1]:
        layers += [nn.Linear(prev, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, dims[-1], bias=False))
    return nn.Sequential(*layers)


class FeatureEncoder(nn.Module):
    """Wrap a timm-style model so that ``forward`` returns its penultimate features [N, D]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return member_features(self.model, x)


def ssl_augmentation(image_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float], *,
                     min_scale: float = 0.2, flip: bool = True) -> nn.Module:
    """Kornia view generator for normalized images: de-normalize, random resized crop, (flip), colour jitter,
    (grayscale), solarization, re-normalize."""
    mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
    if len(mean_t) != in_chans or len(std_t) != in_chans:
        raise ValueError(f"normalization mean/std must have {in_chans} entries (one per channel), got "
                         f"{len(mean_t)} and {len(std_t)}")
    ops: List[nn.Module] = [K.Denormalize(mean_t, std_t),
                            K.RandomResizedCrop((image_size, image_size), scale=(min_scale, 1.0))]
    if flip:
        ops.append(K.RandomHorizontalFlip())
    if in_chans == 3:
        ops += [K.ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    else:
        ops.append(K.ColorJiggle(brightness=0.4, contrast=0.4, p=0.8))
    ops += [K.RandomSolarize(thresholds=0.1, additions=0.0, p=0.2), K.Normalize(mean_t, std_t)]
    return nn.Sequential(*ops)


def train_barlow_twins(encoder: nn.Module, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor], *,
                       projector_dims: Sequence[int] = (512, 512), epochs: int = 50, batch_size: int = 256,
                       lr: float = 1e-3, weight_decay: float = 1e-4, lambd: float = 5e-3,
                       device: Union[str, torch.device] = "cpu", log: Optional[Callable[[str], None]] = None
                       ) -> FeatureEncoder:
    """Train ``encoder`` (a timm-style model; its head is ignored) by Barlow Twins on unlabeled ``images``
    [N, C, H, W] (normalized); return it wrapped as a :class:`FeatureEncoder` in eval mode.

    ``augment`` maps a batch to one random view (e.g. :func:`ssl_augmentation`); AdamW with a cosine decay to 0
    over ``epochs``; the last incomplete batch is dropped so the batch statistics stay meaningful."""
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"Barlow Twins needs images of shape [N >= 2, C, H, W], got {tuple(images.shape)}")
    batch_size = min(batch_size, images.shape[0])
    net = FeatureEncoder(encoder).to(device)
    with torch.no_grad():
        width = net(images[:2].to(device)).shape[1]
    projector = build_projector(width, projector_dims).to(device)
    params = list(net.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = images.shape[0] // batch_size
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    net.train()
    projector.train()
    for epoch in range(epochs):
        order = torch.randperm(images.shape[0])
        running = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            x = images[order[i * batch_size:(i + 1) * batch_size]].to(device)
            with torch.no_grad():
                v1, v2 = augment(x), augment(x)
            loss = barlow_twins_loss(projector(net(v1)), projector(net(v2)), lambd=lambd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach()
        if log is not None:
            log(f"barlow twins epoch {epoch + 1}/{epochs}: loss {float(running) / max(1, steps_per_epoch):.4f}")
    return net.eval()


def load_encoder_weights(model: nn.Module, path: Union[str, Path]) -> FeatureEncoder:
    """Load weights into ``model`` from a local checkpoint and return it as a :class:`FeatureEncoder` (eval mode).

    Accepted: a vsd checkpoint (its ``model`` entry) or a ``.safetensors`` weight file, or a foreign ``.pt``/
    ``.pth`` state dict read with ``torch.load(weights_only=True)`` (never unpickled). The classifier head may be
    missing from the file (encoders are often saved without one); any other missing or unexpected key is an
    error."""
    from vsd.engine.checkpoint import load_model_weights

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target model checkpoint {str(path)!r} does not exist")
    if path.suffix in (".pt", ".pth"):
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    else:
        state = load_model_weights(path)
    if not isinstance(state, dict):
        raise ValueError(f"target model checkpoint {str(path)!r} does not hold a state dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_keys(model)]
    if missing or unexpected:
        raise ValueError(f"target model checkpoint {str(path)!r} does not fit the model: missing keys "
                         f"{missing[:5]}, unexpected keys {unexpected[:5]}")
    return FeatureEncoder(model).eval()

