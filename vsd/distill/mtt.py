"""The ``mtt`` distiller: expert buffer -> trajectory matching -> evaluation -> export, from one config.

Algorithm and defaults: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories" (CVPR 2022;
GeorgeCazenavette/mtt-distillation ``buffer.py``, ``distill.py``), with the options of Shen et al., "AST:
Alignment with Smooth Expert" (shenjiyuan123/AST-Alignment-with-Smooth-Expert): smooth experts, inner momentum,
intermediate matching, start-epoch-balanced loss, weight perturbation, representative initialisation. The
matching engines are in :mod:`vsd.distill.matching`, the formulas in its docstring.

One iteration: for each of ``num_trajectories`` (expert, start epoch) pairs, the gradient of the matching loss
for the images, ``syn_lr`` and (optional) soft labels; the mean of these gradients (and over DDP ranks) updates
the images (SGD ``lr_img``, momentum 0.5) and ``syn_lr`` (SGD ``lr_lr``, momentum 0.5). The pairs of one
iteration run as one batched inner loop (``vmap`` over their parameter vectors, the synthetic images shared, each
pair with its own minibatches and DSA draws), which gives the mean of the pairs' gradients run one after another.
On CUDA the batched loop is always used; on CPU, where it measured faster at digits size but not at CIFAR size
(BENCHMARKS.md), the first iteration times both and keeps the faster (logged, checkpointed, in the results as
``trajectory_batching``).

Engine (``backend``): ``unroll`` and ``constant_memory`` are exact and give the same numbers up to float
rounding; ``auto`` (default) picks one on the first iteration: ``constant_memory`` when the unroll's estimated
activation memory exceeds ``max_memory_gb`` (default: the free device memory on CUDA, ``MemAvailable`` on
CPU), else the faster of the two in a timed probe of that iteration (:func:`vsd.distill.matching.choose_backend`).
The choice and its reason are logged, stored in the checkpoint (a resumed run keeps it, so resume stays exact)
and in the results (``backend``, ``backend_reason``). On CPU, before the probe (``auto``) or the first iteration
(``unroll``, ``constant_memory``), the distiller serves large blocks from glibc's heap when twice the unroll's
estimated activations fit the budget (:func:`vsd.distill.cpu_memory.large_blocks_policy`; results
``cpu_allocator``): 1.5x faster unroll iterations at CIFAR ipc 10 for ~30% more peak memory (BENCHMARKS.md).

Guards (deliberate additions to the official code):

* a non-finite matching loss or gradient stops the run with a message; the last good synthetic set (before
  that iteration) is evaluated and exported, and ``results['status']`` says ``'diverged'``;
* ``syn_lr`` is kept >= ``min_syn_lr``: a step that would make it smaller is clamped there, counted in
  ``results['syn_lr_clamped']`` and reported (MTT lets it go negative silently);
* AST's start-epoch balance scales the inner cross-entropy by ``log_5(s - M/2 + 8)`` for start ``s >= M/2`` and
  by ``1 / log_5(M/2 - s + 8)`` below (``M = max_start_epoch``), as in the official code.

Files in the output folder: ``checkpoint.safetensors`` (exact resume: images, syn_lr, labels, optimizer states,
generator states), ``distilled.safetensors`` + ``distilled.json``, ``grid_*.png``, ``imagefolder/``; the
distiller returns the results that ``tools/distill.py`` writes as ``results.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from vsd.config import Config, DistillConfig, config_to_dict
from vsd.distill import init as syn_init
from vsd.distill.augment import DEFAULT_STRATEGY, DSA
from vsd.distill.evaluate import accuracy, evaluate_set, recalibrate_batchnorm, summarize
from vsd.distill.experts import ExpertSpec, buffer_identity, build_buffer, conv_slices, load_buffer, perturb_weights
from vsd.distill.export import export_imagefolder, save_class_grids, save_distilled, to_display
from vsd.distill.flat import FlatModel
from vsd.distill.cpu_memory import available_memory_bytes, large_blocks_policy
from vsd.distill.matching import (BACKENDS, Segment, batched_matching_grads,
                                  choose_backend, make_plan, time_options, unroll_bytes)
from vsd.distill.precision import autocast_dtype, dtype_name
from vsd.distill.registry import register_distiller
from vsd.distill.state import allreduce_mean, load_progress, run_device, save_progress

INITS = ("real", "noise", "representative")
ENGINES = ("auto",) + BACKENDS


@dataclass
class MTTConfig(DistillConfig):
    """Trajectory matching; defaults are MTT's (``distill.py`` / ``buffer.py`` argparse defaults)."""

    method: str = "mtt"
    ipc: int = 10
    iterations: int = 5000
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    lr_labels: float = 10.0
    img_momentum: float = 0.5
    batch_syn: int = 0
    inner_momentum: float = 0.0
    intermediate_matching: bool = False
    balance_loss: bool = False
    weight_perturb: float = 0.0
    init: str = "real"
    soft_labels: bool = False
    zca: bool = False
    dsa: bool = True
    dsa_strategy: str = "auto"
    backend: str = "auto"
    max_memory_gb: Optional[float] = None
    inner_optimizer: str = "sgd"
    num_trajectories: int = 1
    min_syn_lr: float = 1e-6
    num_experts: int = 100
    expert_train_epochs: int = 50
    expert_lr: float = 0.01
    expert_momentum: float = 0.0
    expert_weight_decay: float = 0.0
    expert_batch_size: int = 256
    expert_lr_decay: float = 1.0
    expert_loss_scaling: bool = False
    expert_grad_penalty: float = 0.0
    expert_dtype: str = "float32"
    buffer_dir: str = "runs/buffers"
    buffer_path: Optional[str] = None
    checkpoint_every: int = 100
    eval_nets: int = 5
    eval_epochs: int = 1000
    eval_batch_size: int = 256
    eval_models: List[str] = field(default_factory=list)
    eval_model_kwargs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    eval_random_baseline: bool = True
    eval_full_data_epochs: int = 0
    export_imagefolder: bool = True
    progress: bool = True


class DistillationDiverged(RuntimeError):
    """The matching loss or its gradient became NaN/inf."""


def _validate(d: MTTConfig, epochs_available: int) -> None:
    checks = [
        (d.ipc >= 1, f"distill.ipc must be >= 1, got {d.ipc}"),
        (d.iterations >= 0, f"distill.iterations must be >= 0, got {d.iterations}"),
        (d.syn_steps >= 1, f"distill.syn_steps must be >= 1, got {d.syn_steps}"),
        (d.expert_epochs >= 1, f"distill.expert_epochs must be >= 1, got {d.expert_epochs}"),
        (d.max_start_epoch >= 1, f"distill.max_start_epoch must be >= 1, got {d.max_start_epoch}"),
        (d.max_start_epoch - 1 + d.expert_epochs <= epochs_available,
         f"distill.max_start_epoch ({d.max_start_epoch}) - 1 + expert_epochs ({d.expert_epochs}) exceeds the "
         f"{epochs_available} epochs of the expert trajectories; lower them or raise expert_train_epochs"),
        (all(math.isfinite(v) and v > 0 for v in (d.lr_img, d.lr_lr, d.lr_teacher, d.min_syn_lr)),
         f"distill.lr_img, lr_lr, lr_teacher and min_syn_lr must be positive, got {d.lr_img}, {d.lr_lr}, "
         f"{d.lr_teacher}, {d.min_syn_lr}"),
        (d.lr_teacher >= d.min_syn_lr, f"distill.lr_teacher ({d.lr_teacher}) is below min_syn_lr ({d.min_syn_lr})"),
        (d.init in INITS, f"distill.init must be one of {INITS}, got {d.init!r}"),
        (d.backend in ENGINES, f"distill.backend must be one of {ENGINES}, got {d.backend!r}"),
        (d.max_memory_gb is None or d.max_memory_gb > 0,
         f"distill.max_memory_gb must be positive (or null for the device's memory), got {d.max_memory_gb}"),
        (d.inner_optimizer == "sgd" or d.backend == "higher",
         f"distill.inner_optimizer={d.inner_optimizer!r} needs distill.backend='higher'"),
        (0.0 <= d.inner_momentum < 1.0, f"distill.inner_momentum must be in [0, 1), got {d.inner_momentum}"),
        (d.num_trajectories >= 1, f"distill.num_trajectories must be >= 1, got {d.num_trajectories}"),
        (d.eval_nets >= 0 and d.eval_epochs >= 1, "distill.eval_nets must be >= 0 and eval_epochs >= 1"),
        (set(d.eval_model_kwargs) <= set(d.eval_models),
         f"distill.eval_model_kwargs names models {sorted(set(d.eval_model_kwargs) - set(d.eval_models))} that are "
         f"not in distill.eval_models {d.eval_models}"),
        (all(isinstance(v, dict) for v in d.eval_model_kwargs.values()),
         "distill.eval_model_kwargs must map a model name to a dict of its keyword arguments"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def balance_scale(start: int, max_start_epoch: int) -> float:
    """AST's start-epoch balance factor of the inner cross-entropy (see the module docstring)."""
    half = max_start_epoch // 2
    if start >= half:
        return math.log(start - half + 8, 5)
    return 1.0 / math.log(half - start + 8, 5)


# ------------------------------------------------------------------------------------------------ set-up
@dataclass
class Problem:
    """Everything the matching loop needs about the data and the architecture."""

    info: Any
    train: Tuple[torch.Tensor, torch.Tensor]
    test: Tuple[torch.Tensor, torch.Tensor]
    make_model: Callable[..., nn.Module]
    zca: Optional[Dict[str, torch.Tensor]]
    device: torch.device
    amp: Optional[torch.dtype] = None  # autocast dtype of expert training and evaluation (``train.amp``)


def model_factory(name: str, kwargs: Dict[str, Any], info: Any) -> Callable[..., nn.Module]:
    """A builder of fresh networks for this data set (``img_size`` passed when accepted): ``make()`` is the
    run's model with ``kwargs``; ``make(other, other_kwargs)`` another architecture with its own arguments."""
    from vsd.models import create_network

    def make(model_name: str = name, model_kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
        chosen = kwargs if model_kwargs is None else model_kwargs
        return create_network(model_name, chosen, info.num_classes, info.in_chans, info.image_size)

    return make


def load_problem(cfg: Config, device: torch.device) -> Problem:
    """Real train/test tensors (normalized; ZCA-whitened when ``distill.zca``) on ``device``, the model builder
    and the autocast dtype that ``train.amp`` asks for there."""
    from vsd.data import create_dataset, dataset_to_tensors

    data = cfg.data
    kw = dict(root=data.root, transform="eval", image_size=data.image_size, download=data.download, **data.kwargs)
    train_ds = create_dataset(data.name, "train", **kw)
    test_ds = create_dataset(data.name, "test", **kw)
    x_train, y_train = dataset_to_tensors(train_ds)
    x_test, y_test = dataset_to_tensors(test_ds)
    zca = None
    if cfg.distill.zca:
        from kornia.enhance import ZCAWhitening

        whitening = ZCAWhitening(eps=0.1, compute_inv=True).fit(x_train)
        x_train, x_test = whitening(x_train), whitening(x_test)
        zca = {"zca_transform": whitening.transform_matrix, "zca_mean": whitening.mean_vector,
               "zca_inverse": whitening.transform_inv}
    info = train_ds.info
    return Problem(info, (x_train.to(device), y_train.to(device)), (x_test.to(device), y_test.to(device)),
                   model_factory(cfg.model.name, cfg.model.kwargs, info), zca, device,
                   autocast_dtype(cfg.train.amp, device))


def dsa_strategy(d: MTTConfig, info: Any) -> str:
    """The DSA strategy of this run; ``dsa_strategy='auto'`` drops ``flip`` when flips change the class (digits)."""
    if d.dsa_strategy != "auto":
        return d.dsa_strategy
    return DEFAULT_STRATEGY if getattr(info, "hflip", True) else DEFAULT_STRATEGY.replace("_flip", "")


def expert_spec(d: MTTConfig, info: Any, amp: Optional[torch.dtype] = None) -> ExpertSpec:
    """How this run's experts are trained: the ``expert_*`` keys, the run's DSA strategy and autocast dtype."""
    return ExpertSpec(epochs=d.expert_train_epochs, lr=d.expert_lr, momentum=d.expert_momentum,
                      weight_decay=d.expert_weight_decay, batch_size=d.expert_batch_size, lr_decay=d.expert_lr_decay,
                      loss_scaling=d.expert_loss_scaling, grad_penalty=d.expert_grad_penalty, augment=d.dsa,
                      dsa_strategy=dsa_strategy(d, info), autocast=dtype_name(amp), dtype=d.expert_dtype)


def make_augment(d: MTTConfig, info: Any) -> Optional[DSA]:
    """DSA for this data set with :func:`dsa_strategy` (None when ``distill.dsa`` is off)."""
    return DSA(dsa_strategy(d, info)) if d.dsa else None


def prepare_experts(cfg: Config, problem: Problem, fm: FlatModel) -> Tuple[List[torch.Tensor], Path, Dict]:
    """Build (or reuse, or resume) the buffer and load it; experts are spread over DDP ranks.

    The folder is ``buffer_path`` when given (refused if made for another model, data set or spec), else a
    cache folder under ``buffer_dir`` named by a hash of everything the experts depend on."""
    from vsd.engine.distributed import barrier, init_distributed

    d: MTTConfig = cfg.distill
    info = problem.info
    identity = buffer_identity(cfg.model.name, cfg.model.kwargs, fm, info.name, info.image_size, info.in_chans,
                               info.num_classes, d.zca)
    spec = expert_spec(d, info, problem.amp)
    key = json.dumps({"identity": identity, "spec": dataclasses.asdict(spec), "seed": cfg.seed,
                      "data_kwargs": cfg.data.kwargs}, sort_keys=True)
    folder = Path(d.buffer_path) if d.buffer_path else (
        Path(d.buffer_dir) / f"{info.name}_{cfg.model.name}_{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    env = init_distributed(problem.device.type)
    x, y = problem.train
    say = _printer(d.progress and env.is_main)
    say(f"expert buffer {folder} ({d.num_experts} experts x {d.expert_train_epochs} epochs)")
    t0 = time.time()
    trained = build_buffer(folder, identity, spec, d.num_experts, problem.make_model, x, y, cfg.seed,
                           env.rank, env.world_size, say)
    barrier(env)
    trajectories = load_buffer(folder, identity, d.num_experts)
    stats = {"buffer": str(folder), "experts_trained_now": len(trained), "expert_wall_s": time.time() - t0}
    return trajectories, folder, stats


def _printer(enabled: bool) -> Callable[[str], None]:
    return (lambda msg: print(f"[mtt] {msg}", flush=True)) if enabled else (lambda msg: None)


def expert_accuracy(problem: Problem, fm: FlatModel, trajectories: List[torch.Tensor]) -> Dict[str, object]:
    """Test top-1 of each expert's final parameters (the full-data accuracy of the expert recipe). The buffer holds
    parameters only: BatchNorm statistics are re-estimated on the (un-augmented) training images first."""
    accs = []
    for traj in trajectories:
        fm.load_into_module(traj[-1].to(problem.device))
        recalibrate_batchnorm(fm.model, problem.train[0], amp=problem.amp)
        accs.append(accuracy(fm.model, *problem.test, amp=problem.amp))
    return summarize(accs)


def initial_set(d: MTTConfig, problem: Problem, fm: FlatModel, trajectories: List[torch.Tensor],
                generator: torch.Generator, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The initial synthetic images and their labels (class indices)."""
    x, y = problem.train
    info = problem.info
    syn_init.check_ipc(y, info.num_classes, d.ipc, list(info.classes))
    if d.init == "real":
        return syn_init.random_real(x, y, info.num_classes, d.ipc, generator)
    if d.init == "noise":
        labels = syn_init.synthetic_labels(info.num_classes, d.ipc)
        return syn_init.noise((len(labels), *x.shape[1:]), generator).to(x), labels
    final = trajectories[0][-1].to(problem.device)
    return syn_init.representative(x, y, info.num_classes, d.ipc, lambda batch: fm(final, batch), seed=seed)


# ------------------------------------------------------------------------------------------------ the loop
class Matcher:
    """The outer loop's state (synthetic images, syn_lr, soft labels, optimizers, generator) and one step."""

    def __init__(self, d: MTTConfig, fm: FlatModel, trajectories: List[torch.Tensor], images: torch.Tensor,
                 labels: torch.Tensor, augment: Optional[DSA], generator: torch.Generator,
                 soft_init: Optional[torch.Tensor] = None, say: Callable[[str], None] = lambda msg: None) -> None:
        self.d, self.fm, self.trajectories, self.augment, self.generator = d, fm, trajectories, augment, generator
        self.say = say
        # the engine: fixed by the config, or chosen on the first iteration (then kept, also across resume)
        self.backend: Optional[str] = None if d.backend == "auto" else d.backend
        self.backend_reason = "set in the config" if self.backend else ""
        # CPU allocator of the flat engines (large blocks from the heap where memory has room), set per process
        self.allocator: Optional[str] = None if self.backend != "higher" and images.device.type == "cpu" else ""
        # K > 1 trajectories: one vmap-ed loop (True) or one after another; CUDA: vmap, CPU: timed once
        self.vectorize: Optional[bool] = True if d.num_trajectories == 1 or images.device.type == "cuda" else None
        self.vectorize_reason = "one trajectory" if d.num_trajectories == 1 else "CUDA"
        if d.backend == "higher" and d.num_trajectories > 1:
            self.vectorize, self.vectorize_reason = False, "the higher engine runs trajectories in turn"
        device = images.device
        self.images = images.detach().clone().requires_grad_(True)
        self.syn_lr = torch.tensor(float(d.lr_teacher), device=device, requires_grad=True)
        self.labels = labels.to(device)
        self.opt_img = torch.optim.SGD([self.images], lr=d.lr_img, momentum=d.img_momentum)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=d.lr_lr, momentum=d.img_momentum)
        self.label_logits: Optional[torch.Tensor] = None
        self.opt_labels: Optional[torch.optim.Optimizer] = None
        if d.soft_labels:
            self.label_logits = soft_init.detach().clone().to(device).requires_grad_(True)
            self.opt_labels = torch.optim.SGD([self.label_logits], lr=d.lr_labels, momentum=d.img_momentum)
        self.conv_layers = conv_slices(fm.shapes)
        self.clamped = 0
        self.history: List[float] = []

    # resumable pieces
    def tensors(self) -> Dict[str, torch.Tensor]:
        out = {"images": self.images, "syn_lr": self.syn_lr}
        if self.label_logits is not None:
            out["label_logits"] = self.label_logits
        return out

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        out = {"img": self.opt_img, "lr": self.opt_lr}
        if self.opt_labels is not None:
            out["labels"] = self.opt_labels
        return out

    def extra_state(self) -> Dict[str, Any]:
        """The non-tensor state stored in the checkpoint."""
        return {"history": self.history, "clamped": self.clamped, "backend": self.backend,
                "backend_reason": self.backend_reason, "vectorize": self.vectorize,
                "vectorize_reason": self.vectorize_reason}

    def load_extra_state(self, extra: Dict[str, Any]) -> None:
        self.history = list(extra.get("history", []))
        self.clamped = int(extra.get("clamped", 0))
        if self.d.backend == "auto" and extra.get("backend"):
            self.backend = str(extra["backend"])
            self.backend_reason = f"{extra.get('backend_reason', '')} (chosen before the resume, kept)"
        if self.vectorize is None and extra.get("vectorize") is not None:
            self.vectorize = bool(extra["vectorize"])
            self.vectorize_reason = f"{extra.get('vectorize_reason', '')} (chosen before the resume, kept)"

    def memory_budget(self) -> int:
        """Bytes ``auto`` may give the unroll: ``max_memory_gb``, else free CUDA memory, or the available RAM
        shared by the processes torchrun started on this machine (``LOCAL_WORLD_SIZE``)."""
        if self.d.max_memory_gb:
            return int(self.d.max_memory_gb * 2 ** 30)
        if self.images.device.type == "cuda":
            return available_memory_bytes(self.images.device)
        return available_memory_bytes(self.images.device) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    def batching(self) -> str:
        """How the trajectories of one iteration run: ``'vmap'`` or ``'sequential'``."""
        return "sequential" if self.vectorize is False else "vmap"

    def _rank0_choice(self, options: Tuple[Any, ...], mine: Any) -> Any:
        """Under DDP rank 0's pick among ``options`` (the one its checkpoint stores, so a resumed run repeats what
        every rank ran); ``mine`` without DDP."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return mine
        index = torch.tensor([options.index(mine)], device=self.images.device)
        dist.broadcast(index, src=0)
        return options[int(index)]

    def targets_for(self, traj: torch.Tensor, start: int) -> List[Tuple[int, torch.Tensor]]:
        d = self.d
        device = self.images.device
        targets = [(d.syn_steps, traj[start + d.expert_epochs].to(device))]
        if d.intermediate_matching:
            for k in range(1, d.expert_epochs):
                step = (d.syn_steps // d.expert_epochs) * k
                if 1 <= step < d.syn_steps:
                    targets.append((step, traj[start + k].to(device)))
        return targets

    def step(self) -> float:
        """One outer iteration; raises :class:`DistillationDiverged` (state untouched) on NaN/inf."""
        d, g = self.d, self.generator
        train_labels = self.label_logits if self.label_logits is not None else self.labels
        segments = []
        for _ in range(d.num_trajectories):
            traj = self.trajectories[int(torch.randint(len(self.trajectories), (1,), generator=g))]
            start = int(torch.randint(d.max_start_epoch, (1,), generator=g))
            w0 = traj[start].to(self.images.device)
            if d.weight_perturb:
                w0 = perturb_weights(w0, self.conv_layers, d.weight_perturb, g)
            plan = make_plan(len(self.images), d.syn_steps, d.batch_syn, self.augment, self.images.shape[2],
                             self.images.shape[3], g)
            scale = balance_scale(start, d.max_start_epoch) if d.balance_loss else 1.0
            segments.append(Segment(w0, self.targets_for(traj, start), plan, scale))

        def call(backend: str, vectorize: Optional[bool] = None):
            vectorize = self.vectorize is not False if vectorize is None else vectorize
            return batched_matching_grads(backend, self.fm, segments, self.images, self.syn_lr, train_labels,
                                          self.augment, d.inner_momentum, d.inner_optimizer, vectorize)

        result = None
        need = None
        if self.backend is None or self.allocator is None:
            need = unroll_bytes(self.fm, segments, self.images, train_labels, self.augment)
        if self.allocator is None:  # before the probe, so that it times the engines as they will run
            self.allocator = large_blocks_policy(need, self.memory_budget(), self.images.device)
            self.say(f"CPU memory: {self.allocator}")
        if self.backend is None:
            self.backend, result, self.backend_reason = choose_backend(call, need, self.memory_budget(),
                                                                       self.images.device)
            chosen = self._rank0_choice(BACKENDS, self.backend)
            if chosen != self.backend:
                self.backend_reason = f"rank 0's choice (this rank's probe: {self.backend_reason})"
                self.backend = chosen
                result = call(self.backend)
            self.say(f"engine: {self.backend} ({self.backend_reason})")
        if self.vectorize is None:
            vectorize, result, reason = time_options(lambda v: call(self.backend, v), (True, False),
                                                     self.images.device)
            reason = reason.replace("True", "vmap").replace("False", "sequential")
            self.vectorize = self._rank0_choice((True, False), vectorize)
            if self.vectorize != vectorize:
                reason = f"rank 0's choice (this rank's probe: {reason})"
                result = call(self.backend, self.vectorize)
            self.vectorize_reason = reason
            self.say(f"{d.num_trajectories} trajectories per iteration: {self.batching()} ({self.vectorize_reason})")
        loss, grads = result if result is not None else call(self.backend)
        total_loss = float(loss)
        grads = {k: v for k, v in grads.items() if v is not None}
        flat = list(grads.values())
        allreduce_mean(flat)
        if not math.isfinite(total_loss) or not all(bool(torch.isfinite(v).all()) for v in flat):
            raise DistillationDiverged(f"the matching loss or its gradient is not finite (loss {total_loss}); "
                                       "lower distill.lr_img / lr_lr or syn_steps")
        self.images.grad = grads["images"]
        self.syn_lr.grad = grads["syn_lr"]
        self.opt_img.step()
        self.opt_lr.step()
        if self.label_logits is not None:
            self.label_logits.grad = grads["labels"]
            self.opt_labels.step()
        with torch.no_grad():
            if not bool(torch.isfinite(self.syn_lr)):
                raise DistillationDiverged(f"syn_lr became {float(self.syn_lr)}")
            if float(self.syn_lr) < d.min_syn_lr:
                self.syn_lr.fill_(d.min_syn_lr)
                self.clamped += 1
        self.history.append(total_loss)
        return total_loss

    def targets_for_export(self) -> torch.Tensor:
        """Hard labels, or the soft targets ``softmax(label_logits)``."""
        if self.label_logits is None:
            return self.labels
        return torch.softmax(self.label_logits.detach(), dim=1)


def run_matching(d: MTTConfig, matcher: Matcher, out_dir: Path, say: Callable[[str], None],
                 is_main: bool = True) -> Dict[str, Any]:
    """Iterate with checkpoints every ``checkpoint_every`` iterations; resume from ``checkpoint.safetensors``.

    The student network is put in train mode before every iteration, as in MTT's ``distill.py``: with BatchNorm
    the inner steps normalise with batch statistics, whatever mode an earlier evaluation left the network in.
    Under DDP every rank calls this (the checkpoint gathers every rank's random states; rank 0 writes)."""
    ckpt = out_dir / "checkpoint.safetensors"
    generators = {"distill": matcher.generator}
    start = 0
    if ckpt.exists():
        start, extra = load_progress(ckpt, matcher.tensors(), matcher.optimizers(), generators)
        matcher.load_extra_state(extra)
        say(f"resumed from {ckpt} at iteration {start}")

    def save(iteration: int) -> None:
        save_progress(ckpt, iteration, matcher.tensors(), matcher.optimizers(), generators,
                      matcher.extra_state())  # every rank: rank 0 gathers their RNG states and writes

    status, message = "ok", ""
    bar = _progress(range(start, d.iterations), d.progress and is_main, start, d.iterations)
    t0 = time.time()
    it = start
    for it in bar:
        matcher.fm.model.train()
        try:
            loss = matcher.step()
        except DistillationDiverged as err:
            status, message = "diverged", f"stopped at iteration {it}: {err}; keeping the last good set"
            say(message)
            break
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}", syn_lr=f"{float(matcher.syn_lr.detach()):.2e}")
        if d.checkpoint_every > 0 and (it + 1) % d.checkpoint_every == 0:
            save(it + 1)
    else:
        it = d.iterations
    if status == "ok" and d.iterations > start:
        save(d.iterations)
    if matcher.clamped:
        say(f"syn_lr reached min_syn_lr={d.min_syn_lr} and was clamped {matcher.clamped} times")
    return {"status": status, "message": message, "iterations_done": it, "resumed_from": start,
            "distill_wall_s": time.time() - t0, "syn_lr_clamped": matcher.clamped,
            "final_loss": matcher.history[-1] if matcher.history else None,
            "backend": matcher.backend or "auto (no iteration run)", "backend_reason": matcher.backend_reason,
            "trajectory_batching": matcher.batching(), "trajectory_batching_reason": matcher.vectorize_reason,
            "cpu_allocator": matcher.allocator or None}


def _progress(iterable, enabled: bool, start: int, total: int):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, initial=start, total=total, desc="mtt", dynamic_ncols=True, mininterval=1.0)


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_all(cfg: Config, problem: Problem, images: torch.Tensor, targets: torch.Tensor, syn_lr: float,
                 augment: Optional[DSA], say: Callable[[str], None]) -> Dict[str, Any]:
    """The distilled set, the random real subset at the same ipc (lr ``lr_teacher``), the full training set
    (``eval_full_data_epochs`` > 0, lr ``lr_teacher``) and the cross-architecture models, each with
    ``eval_nets`` fresh networks and the same protocol.

    Cross-architecture (MTT's ``eval_mode``): each model of ``eval_models`` is built with
    ``eval_model_kwargs[name]`` (its own defaults when absent; the distillation model's ``model.kwargs`` are not
    passed on, as they rarely fit another architecture) and trained on the distilled set with the learned
    ``syn_lr`` (``distilled@name``) and, with ``eval_random_baseline``, on the same random real subset with
    ``lr_teacher`` (``random_real@name``)."""
    d: MTTConfig = cfg.distill
    out: Dict[str, Any] = {}
    if d.eval_nets == 0:
        return out
    common = dict(num_nets=d.eval_nets, epochs=d.eval_epochs, batch_size=d.eval_batch_size, augment=augment,
                  seed=cfg.seed, amp=problem.amp)
    test = problem.test
    out["distilled"] = evaluate_set(problem.make_model, images, targets, *test, lr=syn_lr, **common)
    say(f"distilled: {out['distilled']['mean']:.2f} +- {out['distilled']['std']:.2f}")
    if d.eval_random_baseline:
        x, y = problem.train
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        rx, ry = syn_init.random_real(x, y, problem.info.num_classes, d.ipc, gen)
        ry = ry.to(x.device)
        out["random_real"] = evaluate_set(problem.make_model, rx, ry, *test, lr=d.lr_teacher, **common)
        say(f"random real: {out['random_real']['mean']:.2f} +- {out['random_real']['std']:.2f}")
    if d.eval_full_data_epochs > 0:
        x, y = problem.train
        full = dict(common, epochs=d.eval_full_data_epochs)
        out["full_data"] = evaluate_set(problem.make_model, x, y, *test, lr=d.lr_teacher, **full)
        say(f"full data: {out['full_data']['mean']:.2f} +- {out['full_data']['std']:.2f}")
    for name in d.eval_models:
        make = lambda name=name: problem.make_model(name, d.eval_model_kwargs.get(name, {}))  # noqa: E731
        out[f"distilled@{name}"] = evaluate_set(make, images, targets, *test, lr=syn_lr, **common)
        say(f"distilled on {name}: {out[f'distilled@{name}']['mean']:.2f}")
        if d.eval_random_baseline:
            out[f"random_real@{name}"] = evaluate_set(make, rx, ry, *test, lr=d.lr_teacher, **common)
            say(f"random real on {name}: {out[f'random_real@{name}']['mean']:.2f}")
    return out


# ------------------------------------------------------------------------------------------------ entry
def _check_eval_models(d: MTTConfig, problem: Problem) -> None:
    """Build every cross-architecture evaluation model on the meta device before any compute, so a name or an
    ``eval_model_kwargs`` entry that does not fit fails now, not after the distillation."""
    for name in d.eval_models:
        try:
            with torch.device("meta"):
                problem.make_model(name, d.eval_model_kwargs.get(name, {}))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"distill.eval_models: {name!r} with eval_model_kwargs "
                             f"{d.eval_model_kwargs.get(name, {})!r} cannot be built: {err}") from None


@register_distiller("mtt", MTTConfig)
def distill_mtt(cfg: Config, out_dir: Path) -> Dict[str, Any]:
    """Run MTT from ``cfg`` into ``out_dir`` and return the results (see the module docstring)."""
    d: MTTConfig = cfg.distill
    t_start = time.time()
    device, env = run_device(cfg.train.device)
    problem = load_problem(cfg, device)
    _validate(d, d.expert_train_epochs)
    _check_eval_models(d, problem)
    info = problem.info
    syn_init.check_ipc(problem.train[1], info.num_classes, d.ipc, list(info.classes))
    say = _printer(d.progress and env.is_main)
    torch.manual_seed(cfg.seed)
    fm = FlatModel(problem.make_model().to(device))
    trajectories, _, expert_stats = prepare_experts(cfg, problem, fm)
    full = expert_accuracy(problem, fm, trajectories)
    say(f"full-data (experts): {full['mean']:.2f} +- {full['std']:.2f}")
    generator = torch.Generator().manual_seed(cfg.seed)
    images, labels = initial_set(d, problem, fm, trajectories, generator, cfg.seed)
    if env.rank:  # the images start identical on every rank; each rank draws its own (expert, start) pairs
        generator = torch.Generator().manual_seed(cfg.seed + 1000 * env.rank)
    soft_init = None
    if d.soft_labels:
        with torch.no_grad():
            soft_init = fm(trajectories[0][-1].to(device), images.to(device))
    augment = make_augment(d, info)
    matcher = Matcher(d, fm, trajectories, images.to(device), labels, augment, generator, soft_init, say)
    run = run_matching(d, matcher, out_dir, say, env.is_main)
    syn_lr = float(matcher.syn_lr.detach())
    final_images = matcher.images.detach()
    targets = matcher.targets_for_export()
    evaluation = evaluate_all(cfg, problem, final_images, targets, syn_lr, augment, say) if env.is_main else {}
    results: Dict[str, Any] = {
        "method": "mtt", "seed": cfg.seed, "dataset": info.name, "model": cfg.model.name, "ipc": d.ipc, "syn_lr": syn_lr,
        "world_size": env.world_size, "amp": dtype_name(problem.amp), "expert_full_data": full, **run,
        **expert_stats, **{f"eval_{k}": v for k, v in evaluation.items()},
    }
    if env.is_main:
        meta = {"method": "mtt", "dataset": info.name, "classes": list(info.classes), "mean": list(info.mean),
                "std": list(info.std), "ipc": d.ipc, "zca": d.zca, "syn_lr": syn_lr, "model": cfg.model.name,
                "config": config_to_dict(cfg), "iterations": run["iterations_done"], "status": run["status"]}
        save_distilled(out_dir, final_images, targets, meta, extra_tensors=problem.zca)
        zca = problem.zca or {}
        pixels = to_display(final_images, info.mean, info.std, zca.get("zca_inverse"), zca.get("zca_mean"))
        save_class_grids(out_dir, pixels, targets, info.classes, upscale=max(1, 64 // info.image_size))
        if d.export_imagefolder:
            export_imagefolder(out_dir / "imagefolder", pixels, targets, info.classes)
    results["wall_s"] = time.time() - t_start
    return results
