"""Initialisation of a synthetic set: random real images, Gaussian noise, or representative real images.

Representative initialisation (AST, ``get_repre_images``): per class, k-means with ``ipc`` clusters on the logits
an expert network gives the real images, then the real image nearest each centre. Deliberate difference: the
official code clusters into 10 groups and takes ``int(ipc / 10)`` images near each centre, which selects nothing
below 10 images per class; here the clusters are exactly ``ipc`` and each centre takes its nearest image not
taken yet, so 1 image per class picks the image nearest the class's mean logit.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
import torch


def class_members(labels: torch.Tensor, num_classes: int) -> List[torch.Tensor]:
    """Indices of each class's samples."""
    return [torch.nonzero(labels == c, as_tuple=False).flatten() for c in range(num_classes)]


def check_ipc(labels: torch.Tensor, num_classes: int, ipc: int, classes: Optional[List[str]] = None) -> None:
    """Refuse ``ipc`` < 1 or larger than the smallest class (naming that class)."""
    if ipc < 1:
        raise ValueError(f"ipc (images per class) must be >= 1, got {ipc}")
    counts = torch.bincount(labels, minlength=num_classes)
    smallest = int(counts.argmin())
    if ipc > int(counts[smallest]):
        name = classes[smallest] if classes else str(smallest)
        raise ValueError(f"ipc={ipc} is larger than the smallest class: class {name!r} has only "
                         f"{int(counts[smallest])} training images; use ipc <= {int(counts[smallest])}")


def synthetic_labels(num_classes: int, ipc: int) -> torch.Tensor:
    """``[0]*ipc + [1]*ipc + ...``: the class of each synthetic image."""
    return torch.arange(num_classes).repeat_interleave(ipc)


def random_real(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` distinct random real images per class (also the random-real-subset baseline)."""
    check_ipc(labels, num_classes, ipc)
    picks = [m[torch.randperm(len(m), generator=generator)[:ipc]] for m in class_members(labels, num_classes)]
    return images[torch.cat(picks)].clone(), synthetic_labels(num_classes, ipc)


def noise(shape: Tuple[int, ...], generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal images (the inputs are normalized, so this is on the data's scale)."""
    return torch.randn(shape, generator=generator)


def representative(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int,
                   logits_fn: Callable[[torch.Tensor], torch.Tensor], seed: int = 0,
                   batch_size: int = 512) -> Tuple[torch.Tensor, torch.Tensor]:
    """The real images nearest the k-means centres (``ipc`` per class) of an expert's logits."""
    from sklearn.cluster import KMeans

    check_ipc(labels, num_classes, ipc)
    chosen = []
    for members in class_members(labels, num_classes):
        with torch.no_grad():
            feats = torch.cat([logits_fn(images[members[i:i + batch_size]]).float().cpu()
                               for i in range(0, len(members), batch_size)]).numpy().astype(np.float64)
        centres = KMeans(n_clusters=ipc, random_state=seed, n_init=10).fit(feats).cluster_centers_
        taken: List[int] = []
        for centre in centres:
            order = np.argsort(((feats - centre) ** 2).sum(axis=1))
            taken.append(int(next(i for i in order if int(i) not in taken)))
        chosen.append(members[torch.tensor(taken)])
    return images[torch.cat(chosen)].clone(), synthetic_labels(num_classes, ipc)
