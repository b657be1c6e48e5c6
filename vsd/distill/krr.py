"""Closed-form kernel ridge regression (KRR) head with a bias column, as used by KRR-ST.

Given features of a support set ``F_s`` [N, D] with targets ``Y_s`` [N, K] and features of a query set ``F_t``
[M, D], the head appends a column of ones (the bias) and predicts with the linear kernel::

    Phi_s = [F_s, 1]      Phi_t = [F_t, 1]
    K_ss = Phi_s Phi_s^T  K_ts = Phi_t Phi_s^T
    lam  = lam_scale * trace(K_ss)          (lam_scale = 1e-6 by default; the trace is detached)
    Y_t  = K_ts (K_ss + lam I)^-1 Y_s       (torch.linalg.solve, never an explicit inverse)

This equals ridge regression on ``[F, 1]`` with penalty ``lam`` on the weights AND the bias (scikit-learn's
``Ridge(alpha=lam, fit_intercept=False)`` or ``KernelRidge(alpha=lam, kernel="linear")`` on the same
bias-augmented features), by the push-through identity ``Phi_t (Phi_s^T Phi_s + lam I)^-1 Phi_s^T
= K_ts (K_ss + lam I)^-1``.

Reference: Lee et al., "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024
(official code: db-Lee/selfsup_dd, ``algorithms/distill.py``). Differences from the official code:
an optional float64 solve (``dtype=torch.float64``) for ill-conditioned kernels, an explicit ``lam`` override,
and a readable error instead of NaNs when the regularised kernel is singular.

Example:
    >>> fs, ys, ft = torch.randn(8, 4), torch.randn(8, 3), torch.randn(5, 4)
    >>> kernel_ridge_predict(fs, ys, ft).shape
    torch.Size([5, 3])
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["KRRError", "add_bias_column", "kernel_ridge_predict", "krr_st_outer_loss"]


class KRRError(ValueError):
    """The kernel ridge regression problem is malformed or numerically singular."""


def add_bias_column(features: torch.Tensor) -> torch.Tensor:
    """Return ``[features, 1]``: a column of ones appended to a [N, D] feature matrix."""
    ones = torch.ones(features.shape[0], 1, dtype=features.dtype, device=features.device)
    return torch.cat([features, ones], dim=1)


def _check_inputs(support: torch.Tensor, support_targets: torch.Tensor, query: torch.Tensor) -> None:
    if support.dim() != 2 or query.dim() != 2:
        raise KRRError(f"KRR features must have shape [N, D]; got support {tuple(support.shape)} and "
                       f"query {tuple(query.shape)}")
    if support.shape[1] != query.shape[1]:
        raise KRRError(f"KRR support and query features must have the same width; got {support.shape[1]} "
                       f"and {query.shape[1]}")
    if support_targets.dim() != 2 or support_targets.shape[0] != support.shape[0]:
        raise KRRError(f"KRR targets must have shape [{support.shape[0]}, K] (one row per support example), "
                       f"got {tuple(support_targets.shape)}")
    if support.shape[0] == 0:
        raise KRRError("KRR needs at least one support example, got an empty support set")


def kernel_ridge_predict(support: torch.Tensor, support_targets: torch.Tensor, query: torch.Tensor, *,
                         lam: Optional[float] = None, lam_scale: float = 1e-6,
                         dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Predict targets for ``query`` [M, D] by linear-kernel ridge regression fitted on ``support`` [N, D] ->
    ``support_targets`` [N, K], with a bias column (see the module docstring for the formula).

    Args:
        lam: the ridge penalty; ``None`` uses ``lam_scale * trace(K_ss)`` (detached, as in the official code).
        lam_scale: the relative penalty used when ``lam`` is ``None``.
        dtype: compute the kernels and the solve in this dtype (e.g. ``torch.float64`` for stability); the
            result is cast back to ``support_targets``' dtype. Gradients flow through the casts.

    Raises:
        KRRError: malformed shapes, or a singular regularised kernel (the message says to raise the penalty or
            to solve in float64).
    """
    _check_inputs(support, support_targets, query)
    out_dtype = support_targets.dtype
    if dtype is not None:
        support, support_targets, query = support.to(dtype), support_targets.to(dtype), query.to(dtype)
    phi_s, phi_t = add_bias_column(support), add_bias_column(query)
    k_ss = phi_s @ phi_s.T
    k_ts = phi_t @ phi_s.T
    if lam is None:
        lam = lam_scale * torch.trace(k_ss.detach())
    if float(lam) < 0:
        raise KRRError(f"KRR penalty lam must be >= 0, got {float(lam)}")
    eye = torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)
    alpha, info = torch.linalg.solve_ex(k_ss + lam * eye, support_targets)
    if int(info.max()) > 0 or not bool(torch.isfinite(alpha).all()):
        raise KRRError(
            f"the regularised KRR kernel ({k_ss.shape[0]}x{k_ss.shape[0]}, dtype {k_ss.dtype}, lam={float(lam):.3g}) "
            "is singular; raise the penalty (lam or lam_scale) or solve in float64 (dtype=torch.float64)")
    return (k_ts @ alpha).to(out_dtype)


def krr_st_outer_loss(syn_features: torch.Tensor, syn_targets: torch.Tensor, real_features: torch.Tensor,
                      real_targets: torch.Tensor, *, lam: Optional[float] = None, lam_scale: float = 1e-6,
                      dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """KRR-ST outer objective: ``MSE(K_ts (K_ss + lam I)^-1 Y_syn, g(x_real))``.

    ``syn_features`` = f(X_syn) [N, D] (differentiable in X_syn), ``syn_targets`` = Y_syn [N, K] (learnable),
    ``real_features`` = f(x_real) [M, D] (the official code computes it without gradient) and ``real_targets``
    = g(x_real) [M, K], the target model's representations. The MSE is the mean over all M*K entries
    (``F.mse_loss``), as in the official code.
    """
    pred = kernel_ridge_predict(syn_features, syn_targets, real_features, lam=lam, lam_scale=lam_scale, dtype=dtype)
    if pred.shape != real_targets.shape:
        raise KRRError(f"target representations of the real batch must have shape {tuple(pred.shape)} "
                       f"(width of Y_syn = {syn_targets.shape[1]}), got {tuple(real_targets.shape)}")
    return F.mse_loss(pred, real_targets)
