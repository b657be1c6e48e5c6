"""Options that change the train split only: a low-data subset and label noise (``data.kwargs`` keys).

``samples_per_class: k`` keeps at most ``k`` train samples of each class: a seeded random choice (fixed seed 0,
so every run seed sees the same subset), kept in the original order. A list ``[k_0, ..., k_{K-1}]`` gives each
class its own count, e.g. ``vsd.data.longtail.longtail_counts(500, 10, 10)`` for a long-tailed profile.

``label_noise`` corrupts train labels, the test split stays clean (the usual noisy-label protocol, e.g.
Co-teaching, Han et al. 2018; PS-KD/SLA evaluate on clean test labels):

* ``label_noise: 0.4`` or ``{rate: 0.4, kind: symmetric, seed: 0}``: exactly ``round(rate * n)`` samples, drawn
  uniformly, get a label drawn uniformly from the *other* classes. The realised flip rate is therefore exactly
  ``rate`` (implementations that draw from all classes, the true one included, flip only ``rate * (K-1)/K``).
* ``{rate: 0.4, kind: asymmetric, seed: 0, mapping: [...]}``: in each class ``c``, exactly
  ``round(rate * n_c)`` samples are relabelled ``mapping[c]`` (default ``(c + 1) mod K``, the pair flip of
  Patrini et al. 2017 / Han et al. 2018); classes mapped to themselves stay clean.

The noise depends only on ``seed`` and the (possibly subset) train labels, not on the run's seed. The corrupted
set keeps ``clean_targets`` (the true labels) and ``noisy`` (a bool per sample) for analysis.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from vsd.data._tensor_dataset import ImageDataset, TensorImageDataset

__all__ = ["TRAIN_SPLIT_OPTIONS", "apply_train_options", "apply_label_noise", "keep_per_class",
           "parse_label_noise"]

#: The ``data.kwargs`` keys this module handles (every data set accepts them).
TRAIN_SPLIT_OPTIONS = ("label_noise", "samples_per_class")
_NOISE_KEYS = ("rate", "kind", "seed", "mapping")
_SUBSET_SEED = 0


def parse_label_noise(spec: Union[float, dict, None], num_classes: int) -> Optional[dict]:
    """``spec`` as ``{rate, kind, seed, mapping}`` (mapping None for symmetric), or None when no noise.

    Raises ValueError naming the bad entry and what is expected."""
    if spec is None:
        return None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {"rate": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"label_noise must be a rate in [0, 1) or a mapping with keys {', '.join(_NOISE_KEYS)}, "
                         f"got {spec!r}")
    unknown = sorted(set(spec) - set(_NOISE_KEYS))
    if unknown:
        raise ValueError(f"label_noise: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                         f"{', '.join(_NOISE_KEYS)}")
    rate, kind, seed = spec.get("rate"), spec.get("kind", "symmetric"), spec.get("seed", 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"label_noise.rate must be a number in [0, 1), got {rate!r}")
    if kind not in ("symmetric", "asymmetric"):
        raise ValueError(f"label_noise.kind must be 'symmetric' or 'asymmetric', got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"label_noise.seed must be an integer, got {seed!r}")
    mapping = spec.get("mapping")
    if kind == "symmetric":
        if mapping is not None:
            raise ValueError("label_noise.mapping is only used with kind: asymmetric")
        if num_classes < 2:
            raise ValueError("label_noise needs at least 2 classes")
    else:
        mapping = [(c + 1) % num_classes for c in range(num_classes)] if mapping is None else mapping
        if (not isinstance(mapping, Sequence) or len(mapping) != num_classes
                or any(isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < num_classes for m in mapping)):
            raise ValueError(f"label_noise.mapping must list {num_classes} class indices (class c -> mapping[c]), "
                             f"got {mapping!r}")
        mapping = [int(m) for m in mapping]
    return {"rate": float(rate), "kind": kind, "seed": seed, "mapping": mapping}


def _noisy_targets(targets: list[int], noise: dict, num_classes: int) -> list[int]:
    gen = torch.Generator().manual_seed(noise["seed"])
    out = list(targets)
    if noise["kind"] == "symmetric":
        count = round(noise["rate"] * len(targets))
        picked = torch.randperm(len(targets), generator=gen)[:count].tolist()
        # A uniform label among the K-1 others: true + 1 + U{0..K-2}, modulo K.
        shifts = torch.randint(0, num_classes - 1, (count,), generator=gen).tolist()
        for i, s in zip(picked, shifts):
            out[i] = (targets[i] + 1 + s) % num_classes
        return out
    labels = torch.tensor(targets, dtype=torch.long)
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        order = torch.randperm(len(members), generator=gen)  # drawn for every class: reproducible per class
        if noise["mapping"][c] == c:
            continue
        for i in members[order[:round(noise["rate"] * len(members))]].tolist():
            out[i] = noise["mapping"][c]
    return out


def apply_label_noise(dataset: ImageDataset, spec: Union[float, dict, None]) -> ImageDataset:
    """Corrupt ``dataset.targets`` in place (see the module docstring); sets ``clean_targets``, ``noisy`` and
    ``label_noise`` (the parsed spec) on the data set and returns it."""
    noise = parse_label_noise(spec, dataset.info.num_classes)
    if noise is None:
        return dataset
    clean = list(dataset.targets)
    dataset.targets = _noisy_targets(clean, noise, dataset.info.num_classes)
    dataset.clean_targets = clean
    dataset.noisy = [a != b for a, b in zip(clean, dataset.targets)]
    dataset.label_noise = noise
    dataset.class_counts = dataset._count_classes()
    return dataset


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def keep_per_class(dataset: ImageDataset, samples_per_class: Union[int, Sequence[int], None]) -> ImageDataset:
    """Keep at most ``samples_per_class`` (one count, or one per class) samples of each class (seeded choice,
    original order), in place."""
    if samples_per_class is None:
        return dataset
    num_classes = dataset.info.num_classes
    counts = [samples_per_class] * num_classes if _is_count(samples_per_class) else samples_per_class
    if (isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence) or len(counts) != num_classes
            or not all(_is_count(k) for k in counts)):
        raise ValueError(f"samples_per_class must be a positive integer or a list of {num_classes} positive "
                         f"integers, got {samples_per_class!r}")
    if not isinstance(dataset, TensorImageDataset):
        raise ValueError(f"samples_per_class needs an in-memory data set; {dataset.info.name!r} is read from "
                         f"files (subset its folders instead)")
    gen = torch.Generator().manual_seed(_SUBSET_SEED)
    labels = torch.tensor(dataset.targets, dtype=torch.long)
    kept: list[int] = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        kept += members[torch.randperm(len(members), generator=gen)[:counts[c]]].tolist()
    dataset.keep(sorted(kept))
    return dataset


def apply_train_options(dataset: ImageDataset, split: str, options: dict[str, Any]) -> ImageDataset:
    """Apply ``samples_per_class`` then ``label_noise`` from ``options`` when ``split == "train"``; other splits
    are returned untouched (the options are still checked)."""
    if split != "train":
        parse_label_noise(options.get("label_noise"), dataset.info.num_classes)
        return dataset
    dataset = keep_per_class(dataset, options.get("samples_per_class"))
    return apply_label_noise(dataset, options.get("label_noise"))
