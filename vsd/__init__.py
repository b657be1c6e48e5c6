"""vsd: vision self-distillation and dataset distillation for timm and PyTorch.

Importing ``vsd`` registers its architectures with timm, so ``timm.create_model("convnet_d3")`` works.
"""
from vsd.version import __version__
from vsd import models  # noqa: F401  (registers the vsd architectures with timm)

__all__ = ["__version__"]
