"""PS-KD snapshot mode: a frozen copy of the model from the end of the previous epoch predicts ``p_prev``.

Needs no sample indices and no N x C bank, only one extra forward pass per step, so it drops into any training
loop that does ``output = model(x); loss = loss_fn(output, y)``:

    >>> import timm, torch
    >>> from vsd.losses import PSKDLoss
    >>> model = PSKDSnapshot(timm.create_model("resnet18", num_classes=10), epochs=2, alpha_T=0.8)
    >>> loss_fn = PSKDLoss()
    >>> for epoch in range(2):
    ...     _ = model.train()
    ...     output = model(torch.randn(2, 3, 32, 32))          # PSKDOutput(logits, prev_probs, alpha)
    ...     loss_fn(output, torch.tensor([0, 1])).backward()
    ...     model.end_epoch()                                   # refresh the snapshot, advance alpha_t

In eval mode the wrapper returns the model's plain logits.

Deliberate differences from the official bank (see :mod:`vsd.wrappers.prob_bank` for the exact form):
``p_prev`` is the previous-epoch model's prediction on the *current* augmented view, in eval mode (running
batch-norm statistics, no dropout), rather than the prediction recorded when the sample was last seen (train
mode, that epoch's view, weights that were still changing during the epoch).

The snapshot is kept out of the module tree: it is not in ``state_dict()``, ``parameters()`` or DDP's view of
the wrapper; save it with :meth:`PSKDSnapshot.snapshot_state`. ``state_dict`` keys: ``model.*``. timm's model
contract is passed on to the model (:class:`vsd.wrappers.contract.TimmContract`).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.pskd import PSKDOutput, pskd_alpha
from vsd.wrappers.contract import TimmContract

__all__ = ["PSKDSnapshot"]


class PSKDSnapshot(TimmContract, nn.Module):
    """Wrap ``model`` for PS-KD snapshot mode; call :meth:`end_epoch` after each training epoch.

    Args:
        model: any classifier returning logits [B, C].
        epochs: the length of the alpha schedule ``alpha_t = alpha_T * (epoch + 1) / epochs``.
        alpha_T: the final weight of the previous prediction (official default 0.8).
    """

    def __init__(self, model: nn.Module, epochs: int, alpha_T: float = 0.8) -> None:
        super().__init__()
        pskd_alpha(0, epochs, alpha_T)  # validates the schedule
        self.model = model
        self.epochs = int(epochs)
        self.alpha_T = float(alpha_T)
        self.epoch = 0
        self.__dict__["_snapshot"] = None  # not a submodule (see the module docstring)

    @property
    def snapshot(self) -> Optional[nn.Module]:
        """The frozen previous-epoch model, or ``None`` during the first epoch."""
        return self.__dict__["_snapshot"]

    @property
    def alpha(self) -> float:
        """``alpha_t`` of the current epoch."""
        return pskd_alpha(self.epoch, self.epochs, self.alpha_T)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, PSKDOutput]:
        logits = self.model(x)
        if not self.training:
            return logits
        prev_probs = None
        if self.snapshot is not None:
            with torch.no_grad():
                prev_probs = F.softmax(self.snapshot(x).float(), dim=1)
        return PSKDOutput(logits=logits, prev_probs=prev_probs, alpha=self.alpha)

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        """Reset the model's classifier; the snapshot (of the old classifier) is dropped."""
        super().reset_classifier(num_classes, *args, **kwargs)
        self.__dict__["_snapshot"] = None

    def _ensure_snapshot(self) -> nn.Module:
        if self.snapshot is None:
            frozen = copy.deepcopy(self.model).eval()
            frozen.requires_grad_(False)
            self.__dict__["_snapshot"] = frozen
        return self.snapshot

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Copy the current weights into the snapshot and move to the next epoch of the alpha schedule."""
        self._ensure_snapshot().load_state_dict(self.model.state_dict())
        self.epoch += 1

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch of the alpha schedule (e.g. after resuming)."""
        pskd_alpha(epoch, self.epochs, self.alpha_T)
        self.epoch = int(epoch)

    @torch.no_grad()
    def resume_at(self, epoch: int) -> None:
        """After loading weights saved at the end of epoch ``epoch - 1`` (e.g. timm's ``--resume``): those weights
        are the previous-epoch model, so they become the snapshot and training continues at ``epoch``."""
        self.set_epoch(epoch)
        if epoch > 0:
            self._ensure_snapshot().load_state_dict(self.model.state_dict())

    def snapshot_state(self) -> Dict[str, object]:
        """``{'epoch': int, 'snapshot': state_dict or None}`` (tensors + JSON values, checkpoint-safe)."""
        snapshot = self.snapshot
        return {"epoch": self.epoch, "snapshot": None if snapshot is None else snapshot.state_dict()}

    @torch.no_grad()
    def load_snapshot_state(self, state: Dict[str, object]) -> None:
        """Restore what :meth:`snapshot_state` returned."""
        if not isinstance(state, dict) or "epoch" not in state or "snapshot" not in state:
            raise ValueError("PS-KD snapshot state must be a dict with keys 'epoch' and 'snapshot', got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        self.set_epoch(int(state["epoch"]))
        weights = state["snapshot"]
        if weights is None:
            self.__dict__["_snapshot"] = None
        else:
            self._ensure_snapshot().load_state_dict(weights)

    def _apply(self, fn, *args, **kwargs):  # keep the snapshot on the model's device and dtype
        result = super()._apply(fn, *args, **kwargs)
        if self.snapshot is not None:
            self.snapshot._apply(fn, *args, **kwargs)
        return result
