"""Data sets and loaders for a training run, shaped by what the task asks for (indices, several views)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vsd.config import Config
from vsd.data import IndexedDataset, MultiViewDataset, create_dataset
from vsd.engine.distributed import DistEnv


@dataclass
class RunData:
    """The train set as the task consumes it, plus plain (eval-transform) train and test sets."""

    train_plain: Dataset
    test: Dataset
    info: Any
    class_counts: list
    train: Optional[Dataset] = None


@dataclass
class Loaders:
    """Evaluation loaders handed to a task's ``evaluate``: train split without augmentation, and test."""

    train: DataLoader
    test: DataLoader


def _dataset_kwargs(cfg: Config) -> dict:
    d = cfg.data
    return dict(root=d.root, image_size=d.image_size, download=d.download, **d.kwargs)


def build_eval_data(cfg: Config) -> RunData:
    """The train split without augmentation (sizes, class counts, probes) and the test split."""
    train_plain = create_dataset(cfg.data.name, "train", transform="eval", **_dataset_kwargs(cfg))
    test = create_dataset(cfg.data.name, "test", transform="eval", **_dataset_kwargs(cfg))
    return RunData(train_plain=train_plain, test=test, info=train_plain.info,
                   class_counts=list(train_plain.class_counts))


def build_train_set(cfg: Config, views: Optional[Sequence[str]], needs_index: bool) -> Dataset:
    """The train split as the task consumes it: augmented, as several views, and/or with indices."""
    if views:
        raw = create_dataset(cfg.data.name, "train", transform="none", **_dataset_kwargs(cfg))
        train: Dataset = MultiViewDataset(raw, list(views))
    else:
        train = create_dataset(cfg.data.name, "train", transform=cfg.data.train_transform, **_dataset_kwargs(cfg))
    return IndexedDataset(train) if needs_index else train


def train_loader(data: RunData, cfg: Config, env: DistEnv) -> DataLoader:
    """A shuffling loader whose order depends only on (seed, epoch): call ``loader.sampler.set_epoch(e)``
    and re-seed ``loader.generator`` (worker seeds) via :func:`start_epoch`."""
    per_rank = max(1, cfg.train.batch_size // env.world_size)
    sampler = DistributedSampler(data.train, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    generator = torch.Generator()
    return DataLoader(data.train, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                      generator=generator, drop_last=drop_last(len(data.train), cfg),
                      persistent_workers=False)


def drop_last(num_samples: int, cfg: Config) -> bool:
    """Drop the ragged last batch unless the data set is smaller than two batches."""
    return num_samples >= 2 * cfg.train.batch_size


def start_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Fix the shuffling order and the worker seeds of ``loader`` for ``epoch``."""
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(seed * 100003 + epoch)


def eval_loader(dataset: Dataset, cfg: Config, env: DistEnv) -> DataLoader:
    """A loader over this rank's share (rank::world) of ``dataset``, no padding, so reduced sums are exact."""
    indices = list(range(env.rank, len(dataset), env.world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(subset, batch_size=cfg.train.eval_batch_size, shuffle=False,
                      num_workers=cfg.data.num_workers)
