"""The training loop behind ``tools/train.py``: any registered task, checkpoints with exact resume, DDP.

Per epoch: train (task forward -> loss -> optimizer, scheduler per update, EMA), the task's epoch hooks,
evaluation (top-1/top-5/ECE, or the task's own ``evaluate``), then on rank 0 ``summary.csv`` and an atomic
checkpoint holding model, optimizer, scheduler, EMA, task state, history and every RNG state. Resuming from
that checkpoint replays the remaining epochs bit-identically on CPU (data order depends only on seed and epoch).
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils.model import unwrap_model
from tqdm import tqdm

from vsd.config import Config, config_to_dict
from vsd.data.train_split import TRAIN_SPLIT_OPTIONS
from vsd.engine.amp import autocast, autocast_dtype
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.engine.distributed import (DistEnv, barrier, broadcast_module, init_distributed, resolve_device, shutdown,
                                    wrap_ddp)
from vsd.engine.io import atomic_write_json
from vsd.engine.loaders import (Loaders, RunData, build_eval_data, build_train_set, drop_last, eval_loader,
                                start_epoch, train_loader)
from vsd.engine.metrics import ClassificationMeter
from vsd.engine.preflight import check_inputs
from vsd.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from vsd.engine.run_folder import (CHECKPOINT_NAME, OutputExists, check_output, check_resume,  # noqa: F401
                                   prepare_output, resume_overrides_config)
from vsd.engine.summary import write_summary
from vsd.models import build_model
from vsd.tasks import TaskContext, create_task


STEP_TIMES_KEPT = 1000  # step durations the trainer keeps (the smoke table's median)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunInterrupted(RuntimeError):
    """The run stopped after ``max_steps`` optimizer steps (a simulated kill, for resume tests)."""


class Trainer:
    """One training run of ``cfg`` (see module docstring)."""

    def __init__(self, cfg: Config, resume: Optional[str] = None) -> None:
        self.cfg = cfg
        check_inputs(cfg)  # config values, device, data set, model, referenced files: before any work
        self.device = resolve_device(cfg.train.device)
        self.env: DistEnv = init_distributed(self.device.type)
        if self.env.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.env.local_rank)
        self.out = Path(cfg.output)
        self.resume_state = load_checkpoint(resume) if resume else None
        if self.resume_state is not None:
            check_resume(cfg, self.resume_state, resume)
        if self.env.is_main:
            check_output(self.out, cfg, resuming=resume is not None)
        seed_everything(cfg.seed + self.env.rank)

        self._build()
        if self.env.is_main:
            self._prepare_output(resume)
        self.history: List[Dict[str, float]] = []
        #: wall time of this process's most recent optimizer steps (smoke table); bounded for long runs
        self.step_seconds: Deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.start_epoch = 0
        self.step = 0
        if self.resume_state is not None:
            self._restore(self.resume_state)

    # ------------------------------------------------------------------------------------------ set-up
    def _prepare_output(self, resume: Optional[str]) -> None:
        """Called once the run is built (data, model): from here on it writes into ``self.out``."""
        prepare_output(self.out, self.cfg, resuming=resume is not None)

    def _build(self) -> None:
        cfg = self.cfg
        self.data: RunData = build_eval_data(cfg)
        info = self.data.info
        self.model = build_model(cfg, info).to(self.device)
        if self.device.type == "cuda" and cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        steps = _steps_per_epoch(len(self.data.train_plain), cfg, self.env)
        ctx = TaskContext(
            num_classes=info.num_classes, class_counts=self.data.class_counts,
            num_train_samples=len(self.data.train_plain), epochs=cfg.train.epochs, steps_per_epoch=steps,
            device=self.device, in_chans=info.in_chans, image_size=info.image_size,
            world_size=self.env.world_size, rank=self.env.rank, dataset=cfg.data.name,
        )
        self.task = create_task(self.model, cfg, ctx).to(self.device)
        self.data.train = build_train_set(cfg, getattr(self.task, "train_views", None),
                                          bool(getattr(self.task, "needs_index", False)))
        self.loader = train_loader(self.data, cfg, self.env)
        self.params = sum(p.numel() for p in unwrap_model(self.task.get_eval_model()).parameters())
        t = cfg.train
        self.optimizer = create_optimizer_v2(self.task, opt=t.opt, lr=t.lr, weight_decay=t.weight_decay,
                                             momentum=t.momentum)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=t.sched, num_epochs=t.epochs, warmup_epochs=t.warmup_epochs, min_lr=t.min_lr,
            decay_milestones=list(t.decay_milestones), decay_rate=t.decay_rate,
            step_on_epochs=False, updates_per_epoch=len(self.loader),
        )
        if t.ema:
            self.task.setup_ema(decay=t.ema_decay, device=self.device)
        self.train_module: torch.nn.Module = self.task  # DDP-wrapped per epoch by _wrap_ddp
        self._ddp_idle: Optional[frozenset] = None
        if self.env.enabled:  # ranks are seeded differently: start from rank 0's weights, idle ones included
            broadcast_module(self.task)
        self.eval_test = eval_loader(self.data.test, cfg, self.env)
        self.amp_dtype = autocast_dtype(t.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

    # ------------------------------------------------------------------------------------------ state
    def state(self, epoch: int) -> Dict[str, Any]:
        state: Dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "model": unwrap_model(self.task.get_trainable_module()).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "task": self.task.get_task_state(),
            "history": self.history,
            "rng": capture_rng_state(),
            "config": config_to_dict(self.cfg),
        }
        if self.task.has_ema():
            state["ema"] = unwrap_model(self.task.get_trainable_module(ema=True)).state_dict()
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def _restore(self, state: Dict[str, Any]) -> None:
        unwrap_model(self.task.get_trainable_module()).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["config"]["train"]["epochs"] == self.cfg.train.epochs:
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # train.epochs changed on resume: the schedule planned for the new length, at this step
            self.scheduler.step_update(int(state["step"]))
        self.task.load_task_state(state.get("task") or {})
        if "ema" in state:
            if not self.task.has_ema():
                raise ValueError("the checkpoint holds EMA weights but train.ema is false")
            unwrap_model(self.task.get_trainable_module(ema=True)).load_state_dict(state["ema"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        self.step = int(state["step"])
        restore_rng_state(state["rng"])

    # ------------------------------------------------------------------------------------------ loop
    def fit(self, max_steps: Optional[int] = None) -> Dict[str, Any]:
        """Train the remaining epochs; return the contents of ``results.json``."""
        cfg = self.cfg
        start = time.time()
        for epoch in range(self.start_epoch, cfg.train.epochs):
            row = self._train_epoch(epoch, max_steps)
            self.task.on_epoch_end(epoch)
            row.update(self._evaluate(epoch))
            row["epoch_time"] = time.time() - row.pop("_t0")
            self.history.append(row)
            if self.env.is_main:
                write_summary(self.out / "summary.csv", self.history)
                if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.train.epochs:
                    save_checkpoint(self.out / CHECKPOINT_NAME, self.state(epoch))
                print(_epoch_line(row), flush=True)
            barrier(self.env)
        results = self._results(time.time() - start)
        if self.env.is_main:
            from safetensors.torch import save_file
            from vsd.engine.io import atomic_path

            with atomic_path(self.out / "model.safetensors") as tmp:
                eval_state = unwrap_model(self.task.get_eval_model()).state_dict()
                save_file({k: v.contiguous() for k, v in eval_state.items()}, str(tmp))
            atomic_write_json(self.out / "results.json", results)
        return results

    def _train_epoch(self, epoch: int, max_steps: Optional[int]) -> Dict[str, float]:
        cfg = self.cfg
        self.task.train()
        self.task.on_epoch_start(epoch)
        self._wrap_ddp()
        start_epoch(self.loader, cfg.seed, epoch)
        sums: Dict[str, torch.Tensor] = {}  # device tensors: no host sync per step
        count = 0
        t0 = time.time()
        lr = self.optimizer.param_groups[0]["lr"]  # the lr this epoch starts with
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=not (self.env.is_main and sys.stderr.isatty()))
        for batch_idx, batch in enumerate(bar):
            if max_steps is not None and self.step >= max_steps:
                raise RunInterrupted(f"stopped after {self.step} steps (max_steps)")
            out = self._train_step(batch, epoch, batch_idx)
            n = _batch_size(batch)
            count += n
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v.double() * n
            if not bar.disable and (batch_idx + 1) % cfg.train.log_interval == 0:
                bar.set_postfix(loss=f"{float(out['loss']):.4f}")
        totals = torch.stack([torch.tensor(float(count), dtype=torch.float64, device=self.device)]
                             + [sums[k] for k in sorted(sums)])
        if self.env.enabled:  # on the run's device: nccl reduces CUDA tensors only
            torch.distributed.all_reduce(totals)
        totals = totals.cpu()
        row: Dict[str, Any] = {"epoch": epoch + 1}
        for i, k in enumerate(sorted(sums)):
            row[f"train_{k}"] = float(totals[i + 1] / totals[0])
        row["lr"] = lr
        row["_t0"] = t0
        return row

    def _wrap_ddp(self) -> None:
        """Under DDP, (re-)wrap the task whenever its set of idle parameters changes (first epoch, stage switch),
        so that DDP reduces the gradients of exactly the parameters that train this epoch."""
        if not self.env.enabled:
            return
        idle = self.task.idle_parameters()
        key = frozenset(id(p) for p in idle)
        if key != self._ddp_idle:
            device_ids = [self.env.local_rank] if self.device.type == "cuda" else None
            self.train_module = wrap_ddp(self.task, idle, device_ids)
            self._ddp_idle = key

    def _train_step(self, batch: Any, epoch: int, batch_idx: int) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        t0 = time.perf_counter()
        batch = _to_device(batch, self.device)
        x, y = batch[0], batch[1]
        kwargs = {"index": batch[2]} if getattr(self.task, "needs_index", False) else {}
        with autocast(self.amp_dtype, self.device):
            result = self.train_module(x, y, **kwargs)
        loss = result["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise TrainingDiverged(
                f"loss is {float(loss.detach())} at epoch {epoch + 1}, step {batch_idx + 1}; stopping. The last good "
                f"checkpoint (if any) is {self.out / CHECKPOINT_NAME}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:  # fp16: scaled loss, unscaled gradients before clipping, steps with inf/nan gradients skipped
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if cfg.train.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.task.parameters(), cfg.train.clip_grad)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.step += 1
        self.scheduler.step_update(self.step)
        self.task.update_ema(step=self.step)
        self.step_seconds.append(time.perf_counter() - t0)
        return {k: v.detach() for k, v in result.items()
                if k != "output" and isinstance(v, torch.Tensor) and v.dim() == 0}

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> Dict[str, float]:
        self.task.eval()
        if hasattr(self.task, "evaluate"):
            loaders = Loaders(train=eval_loader(self.data.train_plain, self.cfg, DistEnv()),
                              test=eval_loader(self.data.test, self.cfg, DistEnv()))
            return {f"eval_{k}": float(v) for k, v in self.task.evaluate(loaders, epoch).items()}
        row = {f"eval_{k}": v for k, v in self._classify(self.task.get_eval_model()).items()}
        if self.task.has_ema():
            row.update({f"eval_ema_{k}": v for k, v in self._classify(self.task.get_eval_model(ema=True)).items()})
        return row

    def _classify(self, model: torch.nn.Module) -> Dict[str, float]:
        model.eval()
        meter = ClassificationMeter(self.cfg.eval.ece_bins, self.device)
        for x, y in self.eval_test:
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.amp_dtype, self.device):
                out = model(x)
            meter.update(out[0] if isinstance(out, (tuple, list)) else out, y)
        meter.all_reduce()
        return meter.compute()

    def _results(self, wall_s: float) -> Dict[str, Any]:
        last = self.history[-1] if self.history else {}
        results = {k: v for k, v in last.items() if k.startswith("eval_")}
        results.update({
            "epochs": self.cfg.train.epochs, "method": self.cfg.method.name, "model": self.cfg.model.name,
            "dataset": self.cfg.data.name, "params": self.params, "wall_s": wall_s, "seed": self.cfg.seed,
            "world_size": self.env.world_size,
        })
        results.update({k: self.cfg.data.kwargs[k] for k in TRAIN_SPLIT_OPTIONS if k in self.cfg.data.kwargs})
        return results

    def close(self) -> None:
        shutdown(self.env)


def _steps_per_epoch(num_samples: int, cfg: Config, env: DistEnv) -> int:
    per_rank = math.ceil(num_samples / env.world_size)
    batch = max(1, cfg.train.batch_size // env.world_size)
    return per_rank // batch if drop_last(num_samples, cfg) else math.ceil(per_rank / batch)


def _batch_size(batch: Any) -> int:
    x = batch[1]
    return int(x.shape[0])


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    return obj


def _epoch_line(row: Dict[str, float]) -> str:
    keys = ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "eval_ece", "lr", "epoch_time"]
    shown = [k for k in keys if k in row] + [k for k in row if k.startswith("eval_") and k not in keys]
    return "  ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in shown)


def train(cfg: Config, resume: Optional[str] = None, max_steps: Optional[int] = None) -> Dict[str, Any]:
    """Run ``cfg`` (optionally resuming from a checkpoint) and return ``results.json``'s contents."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()


def config_for_resume(path: str, overrides: Sequence[str] = (), config: Optional[str] = None) -> Config:
    """The config of ``--resume path`` (the checkpoint's own unless ``config``) with ``overrides``; its
    ``output`` is the checkpoint's folder (see :mod:`vsd.engine.run_folder`)."""
    return resume_overrides_config(path, config, list(overrides))
