"""MAE pre-training (``method.name: mae``), and the base of the MAE-family tasks (DMAE, further pre-training).

``model.name`` must be a vsd MAE (``mae_vit_tiny_patch4_32``, ``mae_vit_small_patch4_32``). Each step masks
``mask_ratio`` of the patches, encodes the rest, decodes every patch and scores the pixel MSE on the masked ones
(:func:`vsd.losses.mae.mae_pixel_loss`). There is no classifier to evaluate: every ``probe_every`` epochs (and
after the last) the encoder's CLS feature is probed (linear + k-NN, :mod:`vsd.probe`), giving the
``eval_probe_linear`` / ``eval_probe_knn`` columns of ``summary.csv``. The saved ``model.safetensors`` is the
whole MAE; a plain ViT of the same size fine-tunes from it (``model.name: vit_tiny_patch4_32``,
``model.checkpoint: <run>/model.safetensors``; decoder entries are ignored).

Defaults follow the official MAE recipe (mask ratio 0.75, normalized-pixel targets as in its released models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from vsd.config import Config, MethodConfig
from vsd.losses.mae import mae_pixel_loss
from vsd.models.mae import MaskedAutoencoderViT, MAEOutput, check_mask_ratio
from vsd.probe import probe_model
from vsd.tasks.base import TaskContext, VSDTask, classifier_parameters
from vsd.tasks.registry import register_task


@dataclass
class MAEConfig(MethodConfig):
    """MAE pre-training: ``mask_ratio`` in (0, 1); ``norm_pix_loss`` standardises each target patch;
    probes run every ``probe_every`` epochs (0: after the last epoch only) with k-NN ``probe_k``."""

    name: str = "mae"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    probe_every: int = 0
    probe_k: int = 20


def probe_due(epoch: int, epochs: int, every: int) -> bool:
    """Probe after epoch ``epoch`` (0-based): every ``every`` epochs and always after the last one."""
    return epoch + 1 == epochs or (every > 0 and (epoch + 1) % every == 0)


def require_mae(model: nn.Module, method: str) -> MaskedAutoencoderViT:
    """``model`` as an MAE, or a readable error naming the MAE models."""
    if not isinstance(model, MaskedAutoencoderViT):
        raise TypeError(f"method {method!r} trains a masked autoencoder: set model.name to a vsd MAE "
                        f"(mae_vit_tiny_patch4_32, mae_vit_small_patch4_32), got {type(model).__name__}")
    return model


class MAETask(VSDTask):
    """Masked-autoencoder pre-training of ``model`` (see module docstring)."""

    def __init__(self, model: nn.Module, cfg: MAEConfig, epochs: int, device: Optional[torch.device] = None) -> None:
        super().__init__(device=device, verbose=False)
        self.mae = require_mae(model, cfg.name)
        check_mask_ratio(cfg.mask_ratio, self.mae.num_patches)
        self.cfg = cfg
        self.epochs = epochs
        self.trainable_module: nn.Module = self.mae

    def masked_step(self, mae: MaskedAutoencoderViT, x: torch.Tensor, **kwargs: Any) -> tuple:
        """Masked forward of ``mae`` on ``x`` and its pixel loss: ``(loss, MAEOutput)``."""
        out: MAEOutput = mae.forward_mae(x, self.cfg.mask_ratio, **kwargs)
        loss = mae_pixel_loss(out.pred, mae.patchify(x), out.masking.mask, self.cfg.norm_pix_loss)
        return loss, out

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        loss, out = self.masked_step(self.mae, input)
        return {"loss": loss, "output": out.pred}

    def idle_parameters(self) -> List[nn.Parameter]:
        """The ViT classifier: the masked-pixel loss never reads it."""
        return classifier_parameters(self.mae)

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> nn.Module:
        """The encoder being trained: a timm ViT whose eval forward returns (untrained-head) logits."""
        return self.mae if module is None else module

    def evaluate(self, loaders: Any, epoch: int) -> Dict[str, float]:
        """Linear and k-NN probe accuracy (%) of the CLS feature, when due."""
        if not probe_due(epoch, self.epochs, self.cfg.probe_every):
            return {}
        return self.probe(self.get_eval_model(), loaders)

    def probe(self, model: nn.Module, loaders: Any, prefix: str = "probe_") -> Dict[str, float]:
        """``{prefix + 'linear': %, prefix + 'knn': %}`` for ``model``'s CLS feature."""
        accs = probe_model(model, loaders.train, loaders.test, k=self.cfg.probe_k, device=self.device)
        return {f"{prefix}{name}": value for name, value in accs.items()}


@register_task("mae", MAEConfig)
def build_mae(model: nn.Module, cfg: Config, ctx: TaskContext) -> MAETask:
    """Masked-autoencoder pre-training."""
    return MAETask(model, cfg.method, ctx.epochs, ctx.device)  # type: ignore[arg-type]
