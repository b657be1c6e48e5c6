"""Classification metrics accumulated over batches and reducible across DDP ranks.

Top-k accuracy, mean cross-entropy and the expected calibration error

    ECE = sum_b (n_b / N) * |acc_b - conf_b|

over ``bins`` equal-width confidence bins (Guo et al., ICML 2017), where conf is the max softmax probability.
Accumulators are sums, so the result is exact however the data is split over ranks.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


class ClassificationMeter:
    """Sums of loss, top-1/top-5 hits and per-bin confidence/accuracy; ``compute()`` gives the averages."""

    def __init__(self, num_bins: int = 15, device: torch.device = torch.device("cpu")) -> None:
        self.num_bins = num_bins
        # [count, loss_sum, top1, top5] + per-bin [count, conf_sum, correct_sum]
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)
        self.bins = torch.zeros(3, num_bins, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        probs = logits.softmax(dim=1)
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk.eq(target[:, None])
        self.totals += torch.stack([
            torch.tensor(float(target.numel()), device=self.totals.device),
            F.cross_entropy(logits, target, reduction="sum").double(),
            hits[:, 0].sum().double(),
            hits.any(dim=1).sum().double(),
        ])
        conf, pred = probs.max(dim=1)
        idx = (conf * self.num_bins).long().clamp(max=self.num_bins - 1)
        correct = pred.eq(target).double()
        self.bins[0].index_add_(0, idx, torch.ones_like(correct))
        self.bins[1].index_add_(0, idx, conf.double())
        self.bins[2].index_add_(0, idx, correct)

    def all_reduce(self) -> None:
        """Sum the accumulators over all DDP ranks (no-op without a process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals)
            torch.distributed.all_reduce(self.bins)

    def compute(self) -> Dict[str, float]:
        n = float(self.totals[0])
        if n == 0:
            raise ValueError("no samples were evaluated")
        ece = (self.bins[1] - self.bins[2]).abs().sum() / n
        return {
            "loss": float(self.totals[1]) / n,
            "top1": 100.0 * float(self.totals[2]) / n,
            "top5": 100.0 * float(self.totals[3]) / n,
            "ece": 100.0 * float(ece),
        }
