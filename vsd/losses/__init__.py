"""Pure loss math: one module per method, a functional form and an ``nn.Module`` criterion each."""
from vsd.losses.checks import check_logits_target

__all__ = ["check_logits_target"]
from vsd.losses.nkd import NKDLoss, nkd_loss  # noqa: E402
from vsd.losses.uskd import USKDLoss, uskd_loss  # noqa: E402
from vsd.losses.mdcs import MDCSLoss, mdcs_loss  # noqa: E402

__all__ += ["NKDLoss", "nkd_loss", "USKDLoss", "uskd_loss", "MDCSLoss", "mdcs_loss"]
from vsd.losses.pskd import PSKDLoss, PSKDOutput, pskd_alpha, pskd_loss  # noqa: E402
from vsd.losses.sla import SLALoss, SLAOutput, SLASDLoss, sla_aggregate, sla_loss, sla_sd_loss  # noqa: E402

__all__ += ["PSKDLoss", "PSKDOutput", "pskd_alpha", "pskd_loss",
            "SLALoss", "SLAOutput", "SLASDLoss", "sla_aggregate", "sla_loss", "sla_sd_loss"]
from vsd.losses.mae import MAELoss, cls_distillation_loss, mae_pixel_loss  # noqa: E402
from vsd.losses.dmae import DMAEFeatureLoss, dmae_feature_loss  # noqa: E402
from vsd.losses.dino import DINOLoss, dino_cross_entropy  # noqa: E402

__all__ += ["MAELoss", "cls_distillation_loss", "mae_pixel_loss", "DMAEFeatureLoss", "dmae_feature_loss",
            "DINOLoss", "dino_cross_entropy"]
