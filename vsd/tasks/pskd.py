"""PS-KD training tasks (``method.name: pskd``): bank mode (exact to the paper) and snapshot mode.

* ``mode: bank`` (default): the loader yields sample indices (``needs_index``); ``p_prev`` is read from a
  per-sample probability bank (``bank: dense`` fp32 as the official code, or ``bank: compact`` top-k fp16) that
  is overwritten after each step with the detached softmax of that step; synchronised across DDP ranks; saved in
  checkpoints. The first epoch trains with plain cross-entropy (the official bank holds one-hot labels then).
* ``mode: snapshot``: no indices; a frozen copy of the model from the end of the previous epoch predicts
  ``p_prev`` (:class:`vsd.wrappers.PSKDSnapshot`), one extra forward per step.

Both log ``alpha`` (the current ``alpha_t``) as a loss component.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from timm.utils.model import unwrap_model
from torch import nn

from vsd.config import Config, ConfigError, MethodConfig
from vsd.losses.nkd import at_least_float32
from vsd.losses.pskd import PSKDLoss, PSKDOutput, pskd_alpha
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.wrappers.prob_bank import ProbBank, create_prob_bank
from vsd.wrappers.snapshot import PSKDSnapshot

__all__ = ["PSKDConfig", "PSKDBankTask", "PSKDSnapshotTask", "build_pskd"]


@dataclass
class PSKDConfig(MethodConfig):
    """``method.name: pskd``. ``alpha_T``: final weight of the previous prediction (official 0.8); ``mode``:
    ``bank`` | ``snapshot``; ``bank``: ``dense`` | ``compact``; ``topk``: classes kept per sample (compact)."""

    name: str = "pskd"
    alpha_T: float = 0.8
    mode: str = "bank"
    bank: str = "dense"
    topk: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("bank", "snapshot"):
            raise ConfigError(f"config key 'method.mode': {self.mode!r} is not one of 'bank', 'snapshot'")
        if self.bank not in ("dense", "compact"):
            raise ConfigError(f"config key 'method.bank': {self.bank!r} is not one of 'dense', 'compact'")
        if self.topk < 1:
            raise ConfigError(f"config key 'method.topk': expected an integer >= 1, got {self.topk}")
        if not 0.0 <= self.alpha_T <= 1.0:
            raise ConfigError(f"config key 'method.alpha_T': expected a value in [0, 1], got {self.alpha_T}")


class _PSKDTask(VSDTask):
    """Shared parts: the criterion and the alpha schedule."""

    def __init__(self, module: nn.Module, epochs: int, alpha_T: float, device: Optional[torch.device] = None,
                 verbose: bool = False) -> None:
        super().__init__(device=device, verbose=verbose)
        pskd_alpha(0, epochs, alpha_T)  # validates the schedule
        self.trainable_module = module
        self.criterion = PSKDLoss()
        self.epochs = int(epochs)
        self.alpha_T = float(alpha_T)

    def _result(self, output: PSKDOutput, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        loss = self.criterion(output, target)
        return {"loss": loss, "output": output.logits, "alpha": loss.new_tensor(output.alpha)}


class PSKDBankTask(_PSKDTask):
    """PS-KD with a per-sample probability bank; call as ``task(x, y, index=sample_indices)``."""

    needs_index = True

    def __init__(self, model: nn.Module, bank: ProbBank, epochs: int, alpha_T: float = 0.8,
                 device: Optional[torch.device] = None, verbose: bool = False) -> None:
        super().__init__(model, epochs, alpha_T, device, verbose)
        self.bank = bank
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        pskd_alpha(epoch, self.epochs, self.alpha_T)
        self.epoch = int(epoch)

    def forward(self, input: torch.Tensor, target: torch.Tensor,  # type: ignore[override]
                index: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if index is None:
            raise ValueError("PS-KD bank mode needs sample indices: call task(x, y, index=idx) with a loader over "
                             "vsd.data.IndexedDataset, or use method.mode=snapshot")
        (logits,) = at_least_float32(self.trainable_module(input))  # log-softmax in float32 under autocast
        prev = self.bank.get(index, target) if self.epoch > 0 else None
        result = self._result(PSKDOutput(logits, prev, pskd_alpha(self.epoch, self.epochs, self.alpha_T)), target)
        if self.trainable_module.training:
            self.bank.update(index, F.softmax(logits.detach().float(), dim=1))
        return result

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        if ema:
            return {}
        return {"epoch": self.epoch, "bank": self.bank.state_dict()}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if _usable_state(state, strict, ema, "the probability bank", "bank"):
            self.on_epoch_start(int(state["epoch"]))
            self.bank.load_state_dict(state["bank"])


class PSKDSnapshotTask(_PSKDTask):
    """PS-KD with a frozen previous-epoch snapshot (:class:`vsd.wrappers.PSKDSnapshot`); no indices needed."""

    def __init__(self, model: nn.Module, epochs: int, alpha_T: float = 0.8, device: Optional[torch.device] = None,
                 verbose: bool = False) -> None:
        super().__init__(PSKDSnapshot(model, epochs, alpha_T), epochs, alpha_T, device, verbose)

    @property
    def wrapper(self) -> PSKDSnapshot:
        return unwrap_model(self.trainable_module)

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The plain model (its checkpoint keys are those of the model, loadable without vsd)."""
        if module is None and not ema:
            return self.wrapper.model
        return super().get_eval_model(module, ema)

    def on_epoch_start(self, epoch: int) -> None:
        self.wrapper.set_epoch(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        self.wrapper.end_epoch()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        output = self.trainable_module(input)
        if not isinstance(output, PSKDOutput):  # eval mode returns logits
            return {"loss": F.cross_entropy(output, target), "output": output}
        return self._result(output, target)

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {} if ema else self.wrapper.snapshot_state()

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if _usable_state(state, strict, ema, "the previous-epoch snapshot", "snapshot"):
            self.wrapper.load_snapshot_state(state)


def _usable_state(state: Optional[Dict[str, Any]], strict: bool, ema: bool, what: str, mode: str) -> bool:
    """Whether ``state`` should be loaded; a missing state under ``strict`` is an error naming the mode."""
    if ema:
        return False
    if not state and strict:
        raise ValueError(f"the checkpoint has no PS-KD task state ({what}); it was not written by a PS-KD "
                         f"{mode}-mode run")
    return bool(state)


@register_task("pskd", PSKDConfig)
def build_pskd(model: nn.Module, cfg: Config, ctx: TaskContext) -> _PSKDTask:
    """Build the PS-KD task of ``cfg.method`` (a :class:`PSKDConfig`) for the run described by ``ctx``."""
    method: PSKDConfig = cfg.method  # type: ignore[assignment]
    if method.mode == "snapshot":
        return PSKDSnapshotTask(model, ctx.epochs, method.alpha_T, device=ctx.device)
    if ctx.num_train_samples < 1:
        raise ValueError("PS-KD bank mode needs the number of training samples (TaskContext.num_train_samples) "
                         "to size the bank")
    bank = create_prob_bank(method.bank, ctx.num_train_samples, ctx.num_classes, topk=method.topk)
    return PSKDBankTask(model, bank, ctx.epochs, method.alpha_T, device=ctx.device)
