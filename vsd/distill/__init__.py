"""Dataset distillation: registry of distillers, export format, and the algorithms (registered on import)."""
from vsd.distill.registry import get_distiller, list_distillers, register_distiller, run_distiller
from vsd.distill.export import DistilledFormatError, load_distilled, save_distilled
from vsd.distill.krr import KRRError, add_bias_column, kernel_ridge_predict, krr_st_outer_loss
from vsd.distill.model_pool import member_features
from vsd.distill import krr_st  # noqa: F401  (registers distill.method krr_st)
from vsd.distill import mtt  # noqa: F401  (registers distill.method mtt)

__all__ = ["register_distiller", "run_distiller", "list_distillers", "get_distiller", "save_distilled",
           "load_distilled", "DistilledFormatError", "KRRError", "add_bias_column", "kernel_ridge_predict",
           "krr_st_outer_loss", "member_features"]
