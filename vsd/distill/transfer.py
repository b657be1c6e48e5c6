"""Transfer protocol for distilled sets: pre-train a fresh network on a small set, drop its head, fine-tune on a
target task (or fit a linear probe on the frozen backbone), report test top-1.

Pre-training options compared in the same protocol (KRR-ST, Lee et al., ICLR 2024, section 4):

* ``none``: fine-tune from a random initialisation;
* ``random``: a random real subset of the source data of the same size with its real labels (cross-entropy
  with DSA, the official ``pretrain_dc`` baseline);
* ``tm``: a trajectory-matching distilled set with its labels (cross-entropy; soft labels allowed);
* ``krr_st``: the KRR-ST synthetic images with their learned target representations (MSE);
* ``target`` (a reference, not a distilled set): the target model itself, pre-trained on the whole source.

Hyper-parameters follow the official code (db-Lee/selfsup_dd, ``test.py``): MSE pre-training with SGD
(momentum 0.9) lr 0.1, wd 1e-3, no augmentation; CE pre-training (``pretrain_dc``) lr 0.01, wd 5e-4, lr x0.1 at
half of the epochs, DSA (``color_crop_cutout_flip_scale_rotate``; without ``flip`` where flips change the class);
fine-tuning on the **whole** target training set by default (``labels_per_class: [0]``; a positive value keeps
that many labelled images per class, the few-label variants) with SGD (momentum 0.9) lr 0.01, wd 5e-4, batch 256,
cosine decay over 10,000 steps (the official budget for CIFAR-10/100 and Tiny-ImageNet targets; 5,000 for the
others), random crop (+ flip) augmentation. Pre-training reuses the distillation evaluation loop
(:func:`vsd.distill.evaluate.train_network`). Differences: the MSE pre-training also divides its lr by 10 at
half of the epochs (official: constant), and every option uses the same number of pre-training epochs.

Example:
    >>> net = create_network("convnet_d1", {"net_width": 8}, num_classes=3, in_chans=1, image_size=8)
    >>> net(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import kornia.augmentation as K
import torch
import torch.nn as nn
import torch.nn.functional as F

from vsd.distill.augment import DSA
from vsd.distill.evaluate import accuracy, default_loss, summarize, train_network
from vsd.distill.model_pool import head_keys, member_features
from vsd.models import create_network

__all__ = ["PretrainSet", "PretrainSource", "TargetTask", "TransferConfig", "crop_flip",
           "finetune_and_evaluate", "linear_probe_evaluate", "load_tm_set", "make_target_task", "mse_loss_checked",
           "run_transfer", "transfer_backbone"]


def _batches(n: int, batch_size: int) -> List[torch.Tensor]:
    order = torch.randperm(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def mse_loss_checked(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the network output and [N, K] target representations, with a readable width check."""
    if output.shape != target.shape:
        raise ValueError(f"network output {tuple(output.shape)} does not match the target representations "
                         f"{tuple(target.shape)}; build the network with num_classes={target.shape[-1]}")
    return F.mse_loss(output, target)


def transfer_backbone(pretrained: nn.Module, fresh: nn.Module) -> nn.Module:
    """Copy every weight of ``pretrained`` except its classifier head into ``fresh`` (same architecture, new
    head); return ``fresh``."""
    state = {k: v for k, v in pretrained.state_dict().items() if k not in head_keys(pretrained)}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_keys(fresh)]
    if missing or unexpected:
        raise ValueError(f"pre-trained network does not match the fine-tuning network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return fresh


@dataclass
class TargetTask:
    """A labelled target task: a few labelled training images and a test set, labels remapped to 0..C-1."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: List[int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def make_target_task(train: Tuple[torch.Tensor, torch.Tensor], test: Tuple[torch.Tensor, torch.Tensor],
                     classes: Sequence[int], labels_per_class: int, generator: torch.Generator) -> TargetTask:
    """Restrict ``train``/``test`` (images, labels) to ``classes`` (remapped to 0..C-1, in the given order) and
    keep ``labels_per_class`` random training images per class (fewer when a class has fewer; 0 keeps them all).

    Raises ``ValueError`` when a class has no training or no test image, or ``classes`` is empty/duplicated."""
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"target task classes must be a non-empty list of distinct labels, got {classes}")
    if labels_per_class < 0:
        raise ValueError(f"labels_per_class must be >= 0 (0: every training image), got {labels_per_class}")
    picked_x, picked_y, test_x, test_y, missing_train, missing_test = [], [], [], [], [], []
    for new, c in enumerate(classes):
        pool = torch.nonzero(train[1] == c).flatten()
        pool = pool[torch.randperm(len(pool), generator=generator)[:labels_per_class or None]]
        if len(pool) == 0:
            missing_train.append(c)
        picked_x.append(train[0][pool])
        picked_y.append(torch.full((len(pool),), new, dtype=torch.int64))
        in_test = test[1] == c
        if not bool(in_test.any()):
            missing_test.append(c)
        test_x.append(test[0][in_test])
        test_y.append(torch.full((int(in_test.sum()),), new, dtype=torch.int64))
    if missing_train or missing_test:
        raise ValueError(f"target task classes {missing_train} have no image in the fine-tuning split and "
                         f"{missing_test} none in the test split; every class in {classes} needs both")
    return TargetTask(torch.cat(picked_x), torch.cat(picked_y), torch.cat(test_x), torch.cat(test_y), classes)


def crop_flip(image_size: int, flip: bool) -> nn.Module:
    """Kornia random crop with the data set's padding (``vsd.data.transforms.crop_padding``) + optional
    horizontal flip: the official ``aug_tr`` used on real batches and for fine-tuning."""
    from vsd.data.transforms import crop_padding

    ops: List[nn.Module] = [K.RandomCrop((image_size, image_size), padding=crop_padding(image_size))]
    if flip:
        ops.append(K.RandomHorizontalFlip())
    return nn.Sequential(*ops)


def finetune_and_evaluate(model: nn.Module, task: TargetTask, *, steps: int = 10000, batch_size: int = 256,
                          lr: float = 0.01, weight_decay: float = 5e-4, momentum: float = 0.9, flip: bool = True,
                          device: Union[str, torch.device] = "cpu") -> float:
    """Fine-tune all of ``model`` (its head must have ``task.num_classes`` outputs) on the task's labelled images
    by cross-entropy (SGD, cosine decay over ``steps``, random crop + optional flip); return test top-1 (%)."""
    missing = sorted(set(range(task.num_classes)) - set(task.train_labels.tolist()))
    if missing:
        raise ValueError(f"the fine-tuning split lacks target classes {[task.classes[m] for m in missing]}; "
                         "every class of the target task needs at least one labelled image")
    augment = crop_flip(task.train_images.shape[-1], flip).to(device)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    n = task.train_images.shape[0]
    queue: List[torch.Tensor] = []
    for _ in range(steps):
        if not queue:
            queue = _batches(n, min(batch_size, n))
        idx = queue.pop(0)
        with torch.no_grad():
            x = augment(task.train_images[idx].to(device))
        loss = F.cross_entropy(model(x), task.train_labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return accuracy(model, task.test_images.to(device), task.test_labels.to(device))


@dataclass
class PretrainSet:
    """A small pre-training set: images [N, C, H, W] and targets ([N, K] representations for ``loss="mse"``,
    [N] class indices or [N, K] soft labels for ``loss="ce"``)."""

    images: torch.Tensor
    targets: torch.Tensor
    loss: str

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "ce"):
            raise ValueError(f"pre-training loss must be 'mse' or 'ce', got {self.loss!r}")
        if self.images.shape[0] != self.targets.shape[0]:
            raise ValueError(f"pre-training images and targets must have the same number of rows, got "
                             f"{self.images.shape[0]} and {self.targets.shape[0]}")

    @property
    def out_dim(self) -> int:
        """Width of the pre-training head."""
        if self.targets.dim() == 2:
            return int(self.targets.shape[1])
        return int(self.targets.max()) + 1


@dataclass
class TransferConfig:
    """Settings of the transfer benchmark run after distillation (``distill.transfer.*``): ``dataset`` null means
    ``data.name``; ``classes`` empty means all its classes; ``model`` null means ``model.name`` with
    ``model.kwargs``; ``seeds`` = repeats per option (each a new labelled subset); ``labels_per_class`` 0 = the whole
    target training set (official), positive = that many labelled images per class; ``tm_export`` = folder of a
    trajectory-matching export for the ``tm`` option (skipped when null)."""

    enabled: bool = True
    dataset: Optional[str] = None
    classes: List[int] = field(default_factory=list)
    labels_per_class: List[int] = field(default_factory=lambda: [0])  # one benchmark per entry; 0 = all
    options: List[str] = field(default_factory=lambda: ["none", "random", "tm", "krr_st"])
    protocols: List[str] = field(default_factory=lambda: ["finetune"])  # and/or "linear" (frozen backbone)
    tm_export: Optional[str] = None
    seeds: int = 3
    model: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    pretrain_epochs: int = 1000
    pretrain_batch_size: int = 256
    pretrain_lr: float = 0.1
    pretrain_weight_decay: float = 1e-3
    ce_lr: float = 0.01
    ce_weight_decay: float = 5e-4
    finetune_steps: int = 10000
    finetune_batch_size: int = 256
    finetune_lr: float = 0.01
    finetune_weight_decay: float = 5e-4
    flip: Optional[bool] = None  # flips while fine-tuning; null: the data set's default (run_transfer: on)


def load_tm_set(path: Union[str, Path], in_chans: int, image_size: int) -> PretrainSet:
    """A trajectory-matching export (see :mod:`vsd.distill.export`) as a cross-entropy :class:`PretrainSet`."""
    from vsd.distill.export import load_distilled

    tensors, _ = load_distilled(path)
    images, labels = tensors["images"], tensors["labels"]
    if tuple(images.shape[1:]) != (in_chans, image_size, image_size):
        raise ValueError(f"trajectory-matching export {str(path)!r} holds images of shape {tuple(images.shape[1:])}, "
                         f"the target task uses {(in_chans, image_size, image_size)}")
    return PretrainSet(images, labels.float() if labels.dim() == 2 else labels.long(), "ce")


def linear_probe_evaluate(model: nn.Module, task: TargetTask, device: Union[str, torch.device] = "cpu") -> float:
    """Test top-1 (%) of a logistic-regression probe (:func:`vsd.probe.linear_probe`) on the frozen penultimate
    features of ``model`` (eval mode, no augmentation), the official code's ``linear_eval`` protocol with
    scikit-learn's L-BFGS fit in place of SGD on the features."""
    from vsd.probe import linear_probe

    model = model.to(device).eval()
    with torch.no_grad():
        train = member_features(model, task.train_images.to(device)).cpu().double().numpy()
        test = member_features(model, task.test_images.to(device)).cpu().double().numpy()
    return linear_probe(train, task.train_labels.numpy(), test, task.test_labels.numpy())


PretrainSource = Union[None, PretrainSet, nn.Module]


def run_transfer(sets: Dict[str, Callable[[int], PretrainSource]], make_task: Callable[[int], TargetTask],
                 tcfg: TransferConfig, model_name: str, model_kwargs: Dict[str, Any], seed: int,
                 device: Union[str, torch.device] = "cpu", log: Optional[Callable[[str], None]] = None,
                 ce_augment: Optional[DSA] = None) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Run every pre-training option of ``sets`` (name -> ``fn(repeat)`` returning ``None``: no pre-training, a
    :class:`PretrainSet` to pre-train a fresh network on, or an already pre-trained network of the transfer
    architecture, e.g. the target model as a reference) for ``tcfg.seeds`` repeats and every protocol of
    ``tcfg.protocols`` (``finetune``: the whole network; ``linear``: a linear probe on the frozen backbone,
    measured before fine-tuning). Each repeat draws a fresh target task
    ``make_task(repeat)`` shared by all options and seeds torch identically for every option. Returns
    ``{protocol: {name: {"mean", "std", "accs"}}}`` (test top-1 in %, population std over repeats, as the
    official code's ``np.std``). ``ce_augment`` (DSA) augments the cross-entropy pre-training batches."""
    if tcfg.seeds < 1:
        raise ValueError(f"transfer.seeds must be >= 1, got {tcfg.seeds}")
    unknown = sorted(set(tcfg.protocols) - {"finetune", "linear"})
    if unknown or not tcfg.protocols:
        raise ValueError(f"transfer.protocols must be a non-empty subset of [finetune, linear], got {tcfg.protocols}")
    scores: Dict[str, Dict[str, List[float]]] = {p: {name: [] for name in sets} for p in tcfg.protocols}
    for repeat in range(tcfg.seeds):
        task = make_task(repeat)
        shape = task.train_images.shape[1:]
        for name, make_set in sets.items():
            torch.manual_seed(seed * 1000 + repeat)
            pset = make_set(repeat)
            net = create_network(model_name, model_kwargs, task.num_classes, shape[0], shape[-1])
            if isinstance(pset, nn.Module):
                net = transfer_backbone(pset, net)
            elif pset is not None:
                is_mse = pset.loss == "mse"
                pre = create_network(model_name, model_kwargs, pset.out_dim, shape[0], shape[-1]).to(device)
                train_network(pre, pset.images.to(device), pset.targets.to(device), epochs=tcfg.pretrain_epochs,
                              batch_size=tcfg.pretrain_batch_size, lr=tcfg.pretrain_lr if is_mse else tcfg.ce_lr,
                              weight_decay=tcfg.pretrain_weight_decay if is_mse else tcfg.ce_weight_decay,
                              loss_fn=mse_loss_checked if is_mse else default_loss,
                              augment=None if is_mse else ce_augment)
                net = transfer_backbone(pre, net)
            if "linear" in tcfg.protocols:  # before fine-tuning changes the backbone
                scores["linear"][name].append(linear_probe_evaluate(net, task, device))
            if "finetune" in tcfg.protocols:
                scores["finetune"][name].append(finetune_and_evaluate(
                    net, task, steps=tcfg.finetune_steps, batch_size=tcfg.finetune_batch_size, lr=tcfg.finetune_lr,
                    weight_decay=tcfg.finetune_weight_decay, flip=tcfg.flip is not False, device=device))
            if log is not None:
                done = ", ".join(f"{p} {scores[p][name][-1]:.2f}" for p in tcfg.protocols)
                log(f"transfer repeat {repeat + 1}/{tcfg.seeds} {name}: top-1 {done}")
    return {p: {name: summarize(values) for name, values in per.items()} for p, per in scores.items()}
