"""Pure loss math: one module per method, a functional form and an ``nn.Module`` criterion each."""
from vsd.losses.checks import check_logits_target

__all__ = ["check_logits_target"]
