"""KRR-ST: self-supervised dataset distillation for transfer learning (``distill.method: krr_st``).

Lee, Lee, Ko, Kawaguchi, Lee, Hwang, "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024
(https://openreview.net/forum?id=h57gkDO2Yg; official code db-Lee/selfsup_dd). The algorithm::

    g = self-supervised target encoder on the unlabeled source data (Barlow Twins), or a local checkpoint
    X_syn = N real source images;  Y_syn = g(X_syn)  (both learnable)
    pool = P small nets, each trained on (X_syn, Y_syn) by MSE for a random number of steps
    repeat:
        f = random pool member (eval mode);  x = augmented real batch
        L = MSE( K_ts (K_ss + lam I)^-1 Y_syn , g(x) )      K from [f(.), 1] features, lam = 1e-6 tr(K_ss)
        AdamW step on (X_syn, Y_syn), lr decays linearly to lr * lr_end_factor;  f takes one MSE step
    export (X_syn, Y_syn) with ``targets``; transfer: pre-train by MSE on it, drop the head, fine-tune.

Defaults are the official CIFAR-100 ones (1000 images, 160k iterations, real batch 1024, AdamW lr 1e-3 [its
README uses 1e-4 for CIFAR-100], pool of 10 nets trained by SGD lr 0.1, momentum 0.9, wd 1e-3, re-initialised
after 1000 steps). Deliberate differences from the official code: the pool member's step counter is reset on
re-initialisation (see :mod:`vsd.distill.model_pool`); the synthetic images live in the same normalized space as
the real batch (the official code feeds raw [0, 1] synthetic pixels but normalized real images to the pool
networks); the real-image features are computed without gradient as there; optional float64 solve.

Checkpoints (``checkpoint.safetensors``, every ``checkpoint_every`` iterations) hold X_syn, Y_syn, the
optimizer, the schedule position, the pool and every RNG state, so a resumed run reproduces an uninterrupted
one exactly; the trained target encoder is saved once as ``target_model.safetensors``.

Under ``torchrun`` the real batch is split over the ranks: every rank draws and augments the same whole batch
(the generators stay in step), encodes and featurises its own slice, and the gradients of X_syn and Y_syn are
averaged weighted by slice size. The outer loss is a mean over real images and the KRR solve depends on the
synthetic set only, so W ranks give the single-process gradient; the synthetic set stays identical on every
rank. The target encoder is trained on every rank and rank 0's weights are broadcast; rank 0 writes the files
and runs the transfer benchmark. (On CUDA, non-deterministic kernels may let the pool members drift apart
slightly between ranks; the synthetic set still stays identical, as every rank applies the averaged gradient.) ``train.amp: bf16`` computes the encoder's and the pool member's features
under bf16 autocast; the kernels and the solve are float32 (float64 with ``distill.float64``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from vsd.config import Config, DistillConfig, config_to_dict
from vsd.distill.augment import DEFAULT_STRATEGY, DSA
from vsd.distill.barlow import load_encoder_weights, ssl_augmentation, train_barlow_twins
from vsd.distill.export import load_distilled, save_class_grids, save_distilled, to_display
from vsd.distill.krr import krr_st_outer_loss
from vsd.distill.model_pool import ModelPool, member_features
from vsd.distill.precision import autocast, autocast_dtype, dtype_name
from vsd.distill.registry import register_distiller
from vsd.distill.state import allreduce_mean, broadcast_, load_progress, run_device, save_progress
from vsd.distill.transfer import (PretrainSet, PretrainSource, TargetTask, TransferConfig,
                                  crop_flip, load_tm_set, make_target_task, run_transfer)
from vsd.engine.checkpoint import CheckpointError, save_checkpoint
from vsd.engine.distributed import DistEnv, barrier
from vsd.engine.rng import seed_everything
from vsd.models import create_network

__all__ = ["KRRSTConfig", "TargetModelConfig", "distill_krr_st", "load_krr_st_set"]

STATE_FILE = "checkpoint.safetensors"
TARGET_FILE = "target_model.safetensors"


@dataclass
class TargetModelConfig:
    """The target encoder g (``distill.target.*``): a local ``checkpoint`` of ``model``, or Barlow Twins training
    on the source data when ``checkpoint`` is null. ``model`` null means ``model.name`` with ``model.kwargs``
    (updated by ``model_kwargs``); ``flip`` null means the data set's default (``DatasetInfo.hflip``)."""

    checkpoint: Optional[str] = None
    model: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    projector: List[int] = field(default_factory=lambda: [512, 512])
    lambd: float = 5e-3
    min_scale: float = 0.2
    flip: Optional[bool] = None


@dataclass
class KRRSTConfig(DistillConfig):
    """Hyper-parameters of KRR-ST (official CIFAR-100 defaults); see the module docstring. ``real_flip`` null
    means the data set's default (``DatasetInfo.hflip``)."""

    method: str = "krr_st"
    num_images: int = 1000
    iterations: int = 160000
    batch_real: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_end_factor: float = 1e-3
    grad_clip: float = 0.0
    lam: Optional[float] = None
    lam_scale: float = 1e-6
    float64: bool = False
    real_flip: Optional[bool] = None
    pool_size: int = 10
    pool_max_steps: int = 1000
    pool_lr: float = 0.1
    pool_momentum: float = 0.9
    pool_weight_decay: float = 1e-3
    pool_model: Optional[str] = None
    pool_model_kwargs: Dict[str, Any] = field(default_factory=dict)
    source_classes: List[int] = field(default_factory=list)
    checkpoint_every: int = 1000
    log_every: int = 100
    target: TargetModelConfig = field(default_factory=TargetModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)


def _flip(option: Optional[bool], info: Any) -> bool:
    """An explicit flip option, or the data set's default."""
    return bool(getattr(info, "hflip", True)) if option is None else option


def check_prerequisites(cfg: Config) -> None:
    """Refuse, before any compute, a config whose referenced files are missing: ``distill.target.checkpoint`` and,
    when the ``tm`` transfer option is on, the trajectory-matching export ``distill.transfer.tm_export``."""
    d: KRRSTConfig = cfg.distill
    if d.target.checkpoint is not None and not Path(d.target.checkpoint).is_file():
        raise ValueError(f"distill.target.checkpoint {d.target.checkpoint!r} does not exist; give the path of a "
                         "checkpoint of the target model, or null to train the Barlow Twins target model here")
    t = d.transfer
    if t.enabled and "tm" in t.options and t.tm_export is not None:
        from vsd.distill.export import DistilledFormatError, load_distilled

        try:
            load_distilled(t.tm_export)
        except DistilledFormatError as err:
            raise ValueError(f"distill.transfer.tm_export: {err}. Create it first (e.g. python tools/distill.py "
                             "--config zoo/krr_st/digits_tm_source.yaml), or drop 'tm' from "
                             "distill.transfer.options") from None


def _load_split(cfg: Config, name: str, split: str) -> Tuple[torch.Tensor, torch.Tensor, Any]:
    from vsd.data import create_dataset, dataset_to_tensors

    d = cfg.data
    ds = create_dataset(name, split, root=d.root, transform="eval", image_size=d.image_size, download=d.download,
                        **(d.kwargs if name == d.name else {}))
    images, labels = dataset_to_tensors(ds)
    return images, labels, ds.info


def _select_classes(images: torch.Tensor, labels: torch.Tensor, classes: List[int]) -> Tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    if not classes:
        return images, labels
    keep = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
    if not bool(keep.any()):
        raise ValueError(f"distill.source_classes {classes} select no image of the source data set")
    return images[keep], labels[keep]


def _target_encoder(cfg: Config, images: torch.Tensor, info: Any, out_dir: Path, device: torch.device,
                    log: Callable[[str], None], env: DistEnv) -> nn.Module:
    """The frozen target model g: from ``target.checkpoint``, from a previous run in ``out_dir``, or trained
    (on every rank; rank 0 saves it and its weights are broadcast)."""
    tcfg: TargetModelConfig = cfg.distill.target
    name = tcfg.model or cfg.model.name
    kwargs = tcfg.model_kwargs if tcfg.model else {**cfg.model.kwargs, **tcfg.model_kwargs}
    model = create_network(name, kwargs, tcfg.num_classes, info.in_chans, images.shape[-1])
    saved = out_dir / TARGET_FILE
    reuse = saved.is_file() and not cfg.overwrite
    barrier(env)  # every rank has looked before rank 0 may write the file
    if tcfg.checkpoint is not None:
        encoder = load_encoder_weights(model, tcfg.checkpoint)
    elif reuse:
        encoder = load_encoder_weights(model, saved)
    else:
        log(f"training the Barlow Twins target model ({name}) on {images.shape[0]} source images")
        augment = ssl_augmentation(images.shape[-1], info.in_chans, info.mean, info.std, min_scale=tcfg.min_scale,
                                   flip=_flip(tcfg.flip, info)).to(device)
        encoder = train_barlow_twins(model, images, augment, projector_dims=tcfg.projector, epochs=tcfg.epochs,
                                     batch_size=tcfg.batch_size, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                     lambd=tcfg.lambd, device=device, log=log)
        if env.is_main:
            save_checkpoint(saved, {"model": encoder.model.state_dict(), "name": name})
    encoder = encoder.to(device).eval()
    broadcast_(encoder.state_dict().values())
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


@torch.no_grad()
def _encode(encoder: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 512,
            amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """``g(images)`` in float32, in chunks of ``batch`` (features under autocast ``amp``)."""
    with autocast(amp, device):
        return torch.cat([encoder(images[i:i + batch].to(device)).float() for i in range(0, images.shape[0], batch)])


class _Distillation:
    """The mutable state of one KRR-ST run: synthetic set, optimizer, schedule, pool, batch sampler."""

    def __init__(self, cfg: Config, source: torch.Tensor, encoder: nn.Module, device: torch.device,
                 flip: bool, env: DistEnv = DistEnv(), amp: Optional[torch.dtype] = None) -> None:
        d: KRRSTConfig = cfg.distill
        if d.num_images < 1 or d.num_images > source.shape[0]:
            raise ValueError(f"distill.num_images must lie in [1, {source.shape[0]}] (the source set size), "
                             f"got {d.num_images}")
        if d.iterations < 1:
            raise ValueError(f"distill.iterations must be >= 1, got {d.iterations}")
        self.cfg, self.d, self.source, self.encoder, self.device = cfg, d, source, encoder, device
        self.env, self.amp = env, amp
        self.batch_gen = torch.Generator().manual_seed(cfg.seed + 1)
        init_idx = torch.randperm(source.shape[0], generator=self.batch_gen)[:d.num_images]
        self.init_idx = init_idx
        self.x_syn = source[init_idx].clone().to(device).requires_grad_(True)
        self.y_syn = _encode(encoder, self.x_syn.detach(), device, amp=amp).clone().requires_grad_(True)
        self.opt = torch.optim.AdamW([self.x_syn, self.y_syn], lr=d.lr, weight_decay=d.weight_decay)
        self.sched = torch.optim.lr_scheduler.LinearLR(self.opt, start_factor=1.0, end_factor=d.lr_end_factor,
                                                       total_iters=d.iterations)
        in_chans, size, width = source.shape[1], source.shape[-1], self.y_syn.shape[1]
        pool_name = d.pool_model or cfg.model.name
        pool_kwargs = d.pool_model_kwargs if d.pool_model else {**cfg.model.kwargs, **d.pool_model_kwargs}
        self.pool = ModelPool(
            lambda: create_network(pool_name, pool_kwargs, width, in_chans, size).to(device),
            size=d.pool_size, max_steps=d.pool_max_steps,
            make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=d.pool_lr, momentum=d.pool_momentum,
                                                     weight_decay=d.pool_weight_decay),
            generator=torch.Generator().manual_seed(cfg.seed + 2))
        self.augment = crop_flip(size, flip).to(device)
        self.step = 0
        self.loss: Optional[torch.Tensor] = None  # the last outer loss, kept on the device

    @property
    def last_loss(self) -> Optional[float]:
        return None if self.loss is None else float(self.loss)

    def outer_step(self) -> torch.Tensor:
        """One outer iteration; returns the (detached, on-device) outer loss without a host sync."""
        d = self.d
        idx = self.pool.sample()
        member = self.pool.members[idx].eval()
        batch = torch.randperm(self.source.shape[0], generator=self.batch_gen)[:d.batch_real]
        env = self.env
        with torch.no_grad():
            x_all = self.augment(self.source[batch].to(self.device))  # the whole batch: RNG in step on all ranks
            x_real = torch.tensor_split(x_all, env.world_size)[env.rank]
            with autocast(self.amp, self.device):
                y_real = self.encoder(x_real).float()
                f_real = member_features(member, x_real).float()
        with autocast(self.amp, self.device):
            f_syn = member_features(member, self.x_syn).float()
        solve = torch.float64 if d.float64 else (torch.float32 if self.amp is not None else None)
        loss = krr_st_outer_loss(f_syn, self.y_syn, f_real, y_real, lam=d.lam, lam_scale=d.lam_scale, dtype=solve)
        grads = torch.autograd.grad(loss, [self.x_syn, self.y_syn])
        if env.enabled:  # this rank's share of the whole-batch mean, averaged over the ranks
            share = x_real.shape[0] * env.world_size / x_all.shape[0]
            grads = [g * share for g in grads]
            loss = loss.detach() * share
            allreduce_mean([*grads, loss])
        self.x_syn.grad, self.y_syn.grad = grads
        if d.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.x_syn, d.grad_clip)
            nn.utils.clip_grad_norm_(self.y_syn, d.grad_clip)
        self.opt.step()
        self.sched.step()
        self.pool.update(idx, self.x_syn, self.y_syn)
        self.step += 1
        self.loss = loss.detach()
        return self.loss

    def save(self, path: Path) -> None:
        """Write the exact-resume checkpoint (via :mod:`vsd.distill.state`)."""
        save_progress(path, self.step, {"x_syn": self.x_syn, "y_syn": self.y_syn, "init_idx": self.init_idx},
                      {"outer": self.opt}, {"batch": self.batch_gen},
                      {"sched": self.sched.state_dict(), "pool": self.pool.state_dict(), "last_loss": self.last_loss})

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save` (same target model, num_images and pool)."""
        try:
            self.step, extra = load_progress(path, {"x_syn": self.x_syn, "y_syn": self.y_syn,
                                                    "init_idx": self.init_idx},
                                             {"outer": self.opt}, {"batch": self.batch_gen})
        except CheckpointError as err:
            raise ValueError(f"cannot resume KRR-ST from {str(path)!r}: {err}; the target representations must "
                             f"have width {self.y_syn.shape[1]} (the target model's) and num_images "
                             f"{self.x_syn.shape[0]}, or start afresh with overwrite=true") from None
        self.sched.load_state_dict(extra["sched"])
        self.pool.load_state_dict(extra["pool"])
        self.loss = None if extra["last_loss"] is None else torch.tensor(extra["last_loss"], device=self.device)


def load_krr_st_set(path: Union[str, Path]) -> PretrainSet:
    """A KRR-ST export as an MSE :class:`PretrainSet`; the ``targets`` width must match the export's meta."""
    tensors, meta = load_distilled(path)
    if "targets" not in tensors:
        raise ValueError(f"distilled export {str(path)!r} has no 'targets' tensor; it is not a KRR-ST export")
    targets = tensors["targets"]
    if targets.dim() != 2 or targets.shape[1] != meta.get("target_dim"):
        raise ValueError(f"distilled export {str(path)!r}: target representations have shape "
                         f"{tuple(targets.shape)} but the export records target_dim={meta.get('target_dim')}")
    return PretrainSet(tensors["images"], targets, "mse")


def _export(out_dir: Path, run: _Distillation, labels: torch.Tensor, info: Any, cfg: Config, width: int) -> None:
    x, y = run.x_syn.detach().cpu(), run.y_syn.detach().cpu()
    if y.shape[1] != width:
        raise ValueError(f"target representations have width {y.shape[1]}, the target model outputs {width}")
    meta = {"method": "krr_st", "dataset": cfg.data.name, "classes": list(info.classes), "mean": list(info.mean),
            "std": list(info.std), "config": config_to_dict(cfg), "target_dim": width,
            "source_classes": list(cfg.distill.source_classes),
            "labels_meaning": "class of the real image each synthetic image was initialised from (unused by KRR-ST)"}
    save_distilled(out_dir, x, labels, meta, targets=y)
    save_class_grids(out_dir, to_display(x, info.mean, info.std), labels, list(info.classes),
                     upscale=max(1, 64 // x.shape[-1]))


def _transfer(cfg: Config, out_dir: Path, source: torch.Tensor, source_labels: torch.Tensor, encoder: nn.Module,
              device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    t: TransferConfig = cfg.distill.transfer
    dataset = t.dataset or cfg.data.name
    train_x, train_y, info = _load_split(cfg, dataset, "train")
    t = dataclasses.replace(t, flip=_flip(t.flip, info))
    test_x, test_y, _ = _load_split(cfg, dataset, "test")
    if tuple(train_x.shape[1:]) != tuple(source.shape[1:]):
        raise ValueError(f"transfer data set {dataset!r} has images {tuple(train_x.shape[1:])}, the distilled set "
                         f"{tuple(source.shape[1:])}; use the same image_size and channels")
    classes = t.classes or sorted(set(train_y.tolist()))
    krr = load_krr_st_set(out_dir)
    n = krr.images.shape[0]

    def random_subset(repeat: int) -> PretrainSet:  # official pretrain_dc: CE on the real labels, with DSA
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + repeat)
        pick = torch.randperm(source.shape[0], generator=gen)[:n]
        return PretrainSet(source[pick], source_labels[pick].long(), "ce")

    makers: Dict[str, Callable[[int], PretrainSource]] = {}
    for option in t.options:
        if option == "none":
            makers[option] = lambda repeat: None
        elif option == "random":
            makers[option] = random_subset
        elif option == "krr_st":
            makers[option] = lambda repeat: krr
        elif option == "target":  # reference: the target model itself, pre-trained on the whole source
            makers[option] = lambda repeat: encoder.model
        elif option == "tm":
            if t.tm_export is None:
                log("transfer option 'tm' skipped: distill.transfer.tm_export is not set")
                continue
            tm = load_tm_set(t.tm_export, source.shape[1], source.shape[-1])
            makers[option] = lambda repeat: tm
        else:
            raise ValueError(f"unknown transfer option {option!r}; valid: none, random, tm, krr_st, target")

    model = t.model or cfg.model.name
    kwargs = t.model_kwargs if t.model else dict(cfg.model.kwargs)
    ce_augment = DSA(DEFAULT_STRATEGY if _flip(None, info) else DEFAULT_STRATEGY.replace("_flip", ""))
    out: Dict[str, Any] = {}
    for shots in t.labels_per_class:
        def task(repeat: int, shots: int = shots) -> TargetTask:
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + repeat)
            return make_target_task((train_x, train_y), (test_x, test_y), classes, shots, gen)

        log("transfer with " + (f"{shots} labelled images per target class" if shots else
                                "the whole target training set"))
        per_protocol = run_transfer(makers, task, t, model, kwargs, cfg.seed, device=device, log=log,
                                    ce_augment=ce_augment)
        for protocol, per_option in per_protocol.items():
            for option, summary in per_option.items():
                out[f"eval_{protocol}_{option}_" + (f"{shots}shot" if shots else "full")] = summary
    return out


@register_distiller("krr_st", KRRSTConfig)
def distill_krr_st(cfg: Config, out_dir: Path) -> Dict[str, Any]:
    """Run KRR-ST from ``cfg`` into ``out_dir`` (resuming from its checkpoint unless ``overwrite``); export the
    set and, when ``distill.transfer.enabled``, run the transfer benchmark. Returns the results dictionary."""
    d: KRRSTConfig = cfg.distill
    out_dir = Path(out_dir)
    start = time.time()

    check_prerequisites(cfg)
    seed_everything(cfg.seed)
    device, env = run_device(cfg.train.device)
    amp = autocast_dtype(cfg.train.amp, device)

    def log(msg: str) -> None:
        if env.is_main:
            print(f"[krr_st] {msg}", flush=True)

    images, labels, info = _load_split(cfg, cfg.data.name, "train")
    source, source_labels = _select_classes(images, labels, list(d.source_classes))
    encoder = _target_encoder(cfg, source, info, out_dir, device, log, env)
    run = _Distillation(cfg, source, encoder, device, _flip(d.real_flip, info), env, amp)
    state_path = out_dir / STATE_FILE
    if state_path.is_file() and not cfg.overwrite:
        run.load(state_path)
        log(f"resumed from {state_path} at iteration {run.step}")
    else:
        run.pool.warm_up(run.x_syn, run.y_syn)
    window: List[torch.Tensor] = []  # losses since the last log line (one host sync per line)
    while run.step < d.iterations:
        window.append(run.outer_step())
        if run.step % d.log_every == 0 or run.step == d.iterations:
            log(f"iteration {run.step}/{d.iterations}: outer mse {float(torch.stack(window).mean()):.5f}")
            window = []
        if run.step % d.checkpoint_every == 0 or run.step == d.iterations:
            run.save(state_path)
    width = int(_encode(encoder, source[:2], device).shape[1])
    results: Dict[str, Any] = {"method": "krr_st", "seed": cfg.seed, "dataset": cfg.data.name, "num_images": d.num_images,
                               "iterations": d.iterations, "target_dim": width, "world_size": env.world_size,
                               "amp": dtype_name(amp), "final_outer_mse": run.last_loss,
                               "distill_wall_s": round(time.time() - start, 2)}
    if not env.is_main:  # rank 0 exports and runs the transfer benchmark
        return results
    _export(out_dir, run, source_labels[run.init_idx], info, cfg, width)
    if d.transfer.enabled:
        results.update(_transfer(cfg, out_dir, source, source_labels, encoder, device, log))
    results["wall_s"] = round(time.time() - start, 2)
    return results
