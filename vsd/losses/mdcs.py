"""MDCS: multi-experts with diversity loss and consistency self-distillation, for long-tailed recognition.

Zhao, Wen, Chen, Wang, Luo, "MDCS: More Diverse Experts with Consistency Self-distillation for Long-tailed
Recognition", ICCV 2023 (https://arxiv.org/abs/2308.09922); official code fistyee/MDCS, ``model/loss.py``
(``MDCSLoss``).

K experts give logits ``z_k`` on a weak view (``w``) and a strong view (``s``) of each sample; ``n_c`` are the
per-class training counts and ``lambda_k`` the expert's prior exponent (-0.5, 1, 2.5 for the
head / medium / few-shot experts of K = 3). With the adjusted logits ``a_k = z_k + log(n^lambda_k + 1e-9)``:

    diversity   = sum_k [ CE(a_k^w, y) + CE(a_k^s, y) ] / 2          (CE averaged over the 2B rows, as official)
    consistency = sum_k KL( softmax(a_k^w / T).detach() || softmax(a_k^s / T) ) * T^2
                  over the confident samples {b : argmax a_k^w[b] == y_b} only (batchmean over those;
                  0 when none), T = 1
    loss        = diversity + kl_weight * consistency * min((epoch + 1) / warmup_epochs, 1)

with ``kl_weight = 0.6`` and ``warmup_epochs = 20``. ``epoch`` is 0-based (timm and vsd count from 0); the
official trainer counts from 1, so ``(epoch + 1)`` here reproduces its ``min(epoch / 20, 1)``.

Deliberate differences from the official code: the official ``tau`` config value is ignored there (T is
hard-coded to 1) and is the ``temperature`` argument here (default 1); K and the lambdas are arguments instead
of three hard-coded experts; the unused DRW re-weighting and centring buffers are left out.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.checks import check_logits_target
from vsd.losses.nkd import at_least_float32

__all__ = ["mdcs_loss", "mdcs_terms", "MDCSLoss", "DEFAULT_LAMBDAS"]

DEFAULT_LAMBDAS: Tuple[float, ...] = (-0.5, 1.0, 2.5)


def _log_prior(class_counts: Union[Sequence[int], torch.Tensor], lambdas: Sequence[float],
               like: torch.Tensor) -> torch.Tensor:
    """``log(n^lambda_k + 1e-9)`` for every expert k -> [K, C] (float64 power, then cast)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64, device=like.device)
    if counts.dim() != 1 or counts.numel() != like.shape[1]:
        raise ValueError(f"class_counts must list one count per class ({like.shape[1]} classes), "
                         f"got shape {tuple(counts.shape)}")
    if bool((counts <= 0).any()):
        raise ValueError(f"class_counts must all be > 0 (every class needs training samples), got "
                         f"{counts.to(torch.int64).tolist()}")
    lam = torch.as_tensor(list(lambdas), dtype=torch.float64, device=like.device).view(-1, 1)
    return torch.log(counts.view(1, -1).pow(lam) + 1e-9).to(like.dtype)


def mdcs_terms(weak_logits: Sequence[torch.Tensor], strong_logits: Sequence[torch.Tensor],
               target: torch.Tensor, class_counts: Union[Sequence[int], torch.Tensor], epoch: int,
               lambdas: Sequence[float] = DEFAULT_LAMBDAS, kl_weight: float = 0.6, warmup_epochs: int = 20,
               temperature: float = 1.0) -> Dict[str, torch.Tensor]:
    """``{'mdcs_diversity': ..., 'mdcs_consistency': <weighted, warm-up applied>}``; see the module docstring."""
    experts = len(weak_logits)
    if experts == 0 or len(strong_logits) != experts:
        raise ValueError(f"weak_logits and strong_logits must be non-empty lists with one [B, C] tensor per "
                         f"expert, got {experts} and {len(strong_logits)}")
    if len(lambdas) != experts:
        raise ValueError(f"lambdas must give one prior exponent per expert ({experts} experts), got {tuple(lambdas)}")
    if warmup_epochs < 0 or temperature <= 0 or epoch < 0:
        raise ValueError(f"need epoch >= 0, warmup_epochs >= 0 and temperature > 0, got epoch={epoch}, "
                         f"warmup_epochs={warmup_epochs}, temperature={temperature}")
    for k, (weak, strong) in enumerate(zip(weak_logits, strong_logits)):
        check_logits_target(weak, target, name=f"weak_logits[{k}]")
        check_logits_target(strong, target, name=f"strong_logits[{k}]")
    if target.dim() != 1:
        raise ValueError(f"MDCS needs class-index targets [B], got shape {tuple(target.shape)}")
    weak_logits = at_least_float32(*weak_logits)
    strong_logits = at_least_float32(*strong_logits)
    prior = _log_prior(class_counts, lambdas, weak_logits[0])
    diversity = weak_logits[0].new_zeros(())
    consistency = weak_logits[0].new_zeros(())
    for k in range(experts):
        weak, strong = weak_logits[k] + prior[k], strong_logits[k] + prior[k]
        diversity = diversity + F.cross_entropy(torch.cat([weak, strong]), torch.cat([target, target]))
        confident = weak.argmax(dim=1) == target
        if bool(confident.any()):
            teacher = F.softmax(weak[confident].detach() / temperature, dim=1)
            student = F.log_softmax(strong[confident] / temperature, dim=1)
            consistency = consistency + F.kl_div(student, teacher, reduction="batchmean") * temperature ** 2
    ramp = 1.0 if warmup_epochs == 0 else min((epoch + 1) / warmup_epochs, 1.0)
    return {"mdcs_diversity": diversity, "mdcs_consistency": kl_weight * ramp * consistency}


def mdcs_loss(weak_logits: Sequence[torch.Tensor], strong_logits: Sequence[torch.Tensor], target: torch.Tensor,
              class_counts: Union[Sequence[int], torch.Tensor], epoch: int,
              lambdas: Sequence[float] = DEFAULT_LAMBDAS, kl_weight: float = 0.6, warmup_epochs: int = 20,
              temperature: float = 1.0) -> torch.Tensor:
    """MDCS loss: diversity (logit-adjusted CE per expert, both views) + consistency self-distillation.

    Args:
        weak_logits: per-expert logits [B, C] on the weak view (K tensors).
        strong_logits: per-expert logits [B, C] on the strong view of the same samples.
        target: class indices [B].
        class_counts: training samples per class (C values, all > 0).
        epoch: 0-based training epoch (warm-up of the consistency term); the official trainer counts from 1,
            so its epoch e is epoch=e - 1 here.
        lambdas: prior exponent per expert (official: -0.5, 1, 2.5).
        kl_weight, warmup_epochs, temperature: 0.6, 20 and 1 in the official code.

    Example:
        >>> w = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
        >>> s = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
        >>> mdcs_loss(w, s, torch.tensor([0, 1, 2, 0]), [100, 10, 1], epoch=5).backward()
    """
    terms = mdcs_terms(weak_logits, strong_logits, target, class_counts, epoch, lambdas, kl_weight,
                       warmup_epochs, temperature)
    return terms["mdcs_diversity"] + terms["mdcs_consistency"]


class _ExpertOutput(NamedTuple):
    weak: Sequence[torch.Tensor]
    strong: Sequence[torch.Tensor]
    target: torch.Tensor


def _split_views(output: Sequence, target: torch.Tensor) -> _ExpertOutput:
    """Split the per-expert logits of ``cat([weak_view, strong_view])`` into the two views."""
    if isinstance(output, torch.Tensor) or len(output) < 2 or isinstance(output[1], torch.Tensor):
        raise ValueError("MDCSLoss expects (mean_logits, [expert_logits, ...]), e.g. the train-mode output of "
                         "vsd.wrappers.ExpertsWrapper on torch.cat([weak_view, strong_view])")
    experts = list(output[1])
    rows = experts[0].shape[0]
    if rows % 2:
        raise ValueError(f"MDCSLoss expects the two views concatenated along the batch (an even number of rows), "
                         f"got {rows} rows")
    half = rows // 2
    if target.dim() == 1 and target.shape[0] == rows:
        if not torch.equal(target[:half], target[half:]):
            raise ValueError("target of length 2B must repeat the labels of the weak view for the strong view")
        target = target[:half]
    return _ExpertOutput([e[:half] for e in experts], [e[half:] for e in experts], target)


class MDCSLoss(nn.Module):
    """Criterion for a timm loop: ``loss_fn(model(torch.cat([weak, strong])), target)``.

    ``output`` is the train-mode output of :class:`vsd.wrappers.ExpertsWrapper` on the two views concatenated
    along the batch; ``target`` holds the B labels (or the 2B labels ``torch.cat([y, y])`` as the official
    code). Call :meth:`set_epoch` at the start of every epoch (0-based) for the consistency warm-up.

    Example:
        >>> loss_fn = MDCSLoss(class_counts=[100, 10, 1])
        >>> experts = [torch.randn(8, 3) for _ in range(3)]
        >>> loss_fn((torch.stack(experts).mean(0), experts), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    def __init__(self, class_counts: Union[Sequence[int], torch.Tensor], lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                 kl_weight: float = 0.6, warmup_epochs: int = 20, temperature: float = 1.0) -> None:
        super().__init__()
        self.class_counts = [int(c) for c in torch.as_tensor(class_counts).tolist()]
        self.lambdas = tuple(float(v) for v in lambdas)
        self.kl_weight, self.warmup_epochs, self.temperature = kl_weight, warmup_epochs, temperature
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch used by the consistency warm-up."""
        self.epoch = int(epoch)

    def terms(self, output: Sequence, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{'loss', 'mdcs_diversity', 'mdcs_consistency'}``."""
        views = _split_views(output, target)
        parts = mdcs_terms(views.weak, views.strong, views.target, self.class_counts, self.epoch, self.lambdas,
                           self.kl_weight, self.warmup_epochs, self.temperature)
        return {"loss": parts["mdcs_diversity"] + parts["mdcs_consistency"], **parts}

    def forward(self, output: Sequence, target: torch.Tensor) -> torch.Tensor:
        return self.terms(output, target)["loss"]
