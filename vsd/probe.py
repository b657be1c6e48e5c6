"""Linear and k-NN probes on frozen features of any model and any named layer.

* Features: by default the model's embedding before its classifier (``forward_head(forward_features(x),
  pre_logits=True)`` for timm models: the pooled ConvNet features, the ViT CLS token); or the output of any
  named sub-module (``layer="blocks.3"``), pooled to a vector (``avg``: mean over spatial positions / tokens,
  ``cls``: the first token of a token sequence, ``flatten``).
* Both probes standardise the features with the training split's mean and std (scikit-learn
  ``StandardScaler``), as the random-teacher code does.
* Linear probe: scikit-learn ``LogisticRegression`` (multinomial, L-BFGS).
* k-NN: ``KNeighborsClassifier(k=20)``, Euclidean distance, majority vote (the random-teacher code's faiss
  ``IndexFlat`` + mode of the k labels).

Accuracies are returned in percent.

Example:
    >>> feats = probe_model(model, train_loader, test_loader)       # doctest: +SKIP
    >>> feats                                                        # doctest: +SKIP
    {'linear': 91.2, 'knn': 88.5}
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

POOLS = ("avg", "cls", "flatten")


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's embedding before its classifier (timm ``pre_logits``), or its output if it has no head API."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return model(x)


def list_layers(model: nn.Module) -> List[str]:
    """Names accepted by ``layer=`` (every named sub-module)."""
    return [name for name, _ in model.named_modules() if name]


def _pool(feat: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "flatten" or feat.dim() == 2:
        return feat.flatten(1)
    if pool == "cls":
        if feat.dim() != 3:
            raise ValueError(f"pool='cls' needs token features [B, N, D], got {tuple(feat.shape)}")
        return feat[:, 0]
    return feat.flatten(2).mean(-1) if feat.dim() == 4 else feat.mean(1)


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable, layer: Optional[str] = None, pool: str = "avg",
                     device: Optional[torch.device] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Features [N, D] (float64) and labels [N] of every batch ``(x, y, ...)`` of ``loader``, model in eval mode.

    Raises:
        ValueError: ``layer`` is not a sub-module of ``model`` (the message lists the available ones), or
            ``pool`` is unknown.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}")
    modules = dict(model.named_modules())
    if layer is not None and (not layer or layer not in modules):
        raise ValueError(f"model {type(model).__name__} has no layer {layer!r}; available layers: "
                         f"{', '.join(list_layers(model))}")
    device = device or next(model.parameters()).device
    captured: List[torch.Tensor] = []
    handle = None
    if layer is not None:
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)  # type: ignore[index]

        handle = modules[layer].register_forward_hook(hook)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for batch in loader:
            x, y = batch[0].to(device), batch[1]
            if layer is None:
                feat = embed(model, x)
            else:
                captured.clear()
                model(x)
                feat = captured[-1]
            feats.append(_pool(feat.float(), pool).cpu().double())
            labels.append(torch.as_tensor(y).cpu())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _standardize(train_x: np.ndarray, test_x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D for train and test, got {train_x.shape} and "
                         f"{test_x.shape}")
    scaler = StandardScaler().fit(train_x)
    return scaler.transform(train_x), scaler.transform(test_x)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 C: float = 1.0, max_iter: int = 1000) -> float:
    """Test accuracy (%) of a logistic regression fitted on standardised training features."""
    from sklearn.linear_model import LogisticRegression

    train_x, test_x = _standardize(train_x, test_x)
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean() * 100.0)


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              k: int = 20) -> float:
    """Test accuracy (%) of a k-nearest-neighbour majority vote on standardised features."""
    from sklearn.neighbors import KNeighborsClassifier

    if not 1 <= k <= len(train_x):
        raise ValueError(f"k must be a positive integer at most the {len(train_x)} training samples, got {k}")
    train_x, test_x = _standardize(train_x, test_x)
    clf = KNeighborsClassifier(n_neighbors=k).fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean() * 100.0)


def probe_model(model: nn.Module, train_loader: Iterable, test_loader: Iterable, layer: Optional[str] = None,
                pool: str = "avg", k: int = 20, device: Optional[torch.device] = None) -> Dict[str, float]:
    """``{'linear': %, 'knn': %}`` for ``model``'s features (``layer``) on ``test_loader``, fitted on
    ``train_loader``."""
    train_x, train_y = extract_features(model, train_loader, layer, pool, device)
    test_x, test_y = extract_features(model, test_loader, layer, pool, device)
    return {"linear": linear_probe(train_x, train_y, test_x, test_y),
            "knn": knn_probe(train_x, train_y, test_x, test_y, k)}
