"""Tests of the KRR head (vsd.distill.krr) against scikit-learn and by gradcheck."""
import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge

from vsd.distill.krr import KRRError, add_bias_column, kernel_ridge_predict, krr_st_outer_loss


def _problem(n=12, m=7, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, k, generator=g, dtype=torch.float64),
            torch.randn(m, d, generator=g, dtype=torch.float64))


class TestKernelRidgePredict:
    def test_matches_sklearn_kernel_ridge_with_bias_column(self):
        fs, ys, ft = _problem()
        lam = 0.3
        ref = KernelRidge(alpha=lam, kernel="linear").fit(add_bias_column(fs).numpy(), ys.numpy())
        expected = ref.predict(add_bias_column(ft).numpy())
        got = kernel_ridge_predict(fs, ys, ft, lam=lam)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-10)

    def test_matches_sklearn_ridge_primal_form(self):
        # more support rows than features: the primal ridge on [F, 1] with the bias penalised like a weight
        fs, ys, ft = _problem(n=30, d=4)
        lam = 1e-6 * float(torch.trace(add_bias_column(fs) @ add_bias_column(fs).T))
        ref = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(add_bias_column(fs).numpy(), ys.numpy())
        expected = ref.predict(add_bias_column(ft).numpy())
        got = kernel_ridge_predict(fs, ys, ft)  # default lam = 1e-6 * trace(Kss)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-8)

    def test_bias_column_matters(self):
        # targets equal to a constant are fitted exactly only thanks to the bias column
        fs = torch.zeros(6, 3, dtype=torch.float64)
        ys = torch.full((6, 2), 4.0, dtype=torch.float64)
        pred = kernel_ridge_predict(fs, ys, torch.zeros(2, 3, dtype=torch.float64), lam=1e-9)
        torch.testing.assert_close(pred, torch.full((2, 2), 4.0, dtype=torch.float64), rtol=1e-6, atol=1e-6)

    def test_float64_option_returns_input_dtype_and_agrees(self):
        fs, ys, ft = (t.float() for t in _problem())
        p32 = kernel_ridge_predict(fs, ys, ft, lam=0.1)
        p64 = kernel_ridge_predict(fs, ys, ft, lam=0.1, dtype=torch.float64)
        assert p64.dtype == torch.float32
        torch.testing.assert_close(p32, p64, rtol=1e-4, atol=1e-4)

    def test_singular_kernel_error_names_the_fix(self):
        fs = torch.zeros(4, 3)  # Phi_s = [0, 1]: Kss is all ones, rank 1
        with pytest.raises(KRRError, match="raise the penalty.*float64"):
            kernel_ridge_predict(fs, torch.randn(4, 2), torch.randn(3, 3), lam=0.0)

    @pytest.mark.parametrize("fs,ys,ft,match", [
        (torch.randn(4, 3), torch.randn(4, 2), torch.randn(3, 5), "same width"),
        (torch.randn(4, 3), torch.randn(5, 2), torch.randn(3, 3), "one row per support"),
        (torch.randn(4, 3, 1), torch.randn(4, 2), torch.randn(3, 3), r"\[N, D\]"),
    ])
    def test_bad_shapes(self, fs, ys, ft, match):
        with pytest.raises(KRRError, match=match):
            kernel_ridge_predict(fs, ys, ft)

    def test_negative_lam(self):
        with pytest.raises(KRRError, match=">= 0"):
            kernel_ridge_predict(torch.randn(4, 3), torch.randn(4, 2), torch.randn(3, 3), lam=-1.0)


class TestOuterLoss:
    def test_equals_hand_computation(self):
        fs, ys, ft = _problem(n=5, m=4, d=3, k=2)
        yt = torch.randn(4, 2, dtype=torch.float64)
        ps, pt = torch.cat([fs, torch.ones(5, 1, dtype=torch.float64)], 1), torch.cat(
            [ft, torch.ones(4, 1, dtype=torch.float64)], 1)
        kss = ps @ ps.T
        lam = 1e-6 * kss.trace()
        pred = pt @ ps.T @ torch.inverse(kss + lam * torch.eye(5, dtype=torch.float64)) @ ys
        expected = ((pred - yt) ** 2).mean()
        torch.testing.assert_close(krr_st_outer_loss(fs, ys, ft, yt), expected)

    def test_gradcheck_wrt_images_and_targets(self):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 6), torch.nn.Tanh()).double()
        x_syn = torch.randn(4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
        y_syn = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        x_real = torch.randn(5, 2, 2, 2, dtype=torch.float64)
        y_real = torch.randn(5, 3, dtype=torch.float64)

        def loss(x, y):
            with torch.no_grad():
                f_real = net(x_real)
            return krr_st_outer_loss(net(x), y, f_real, y_real, lam=1e-2)

        assert torch.autograd.gradcheck(loss, (x_syn, y_syn))

    def test_target_width_mismatch(self):
        with pytest.raises(KRRError, match="target representations"):
            krr_st_outer_loss(torch.randn(4, 3), torch.randn(4, 2), torch.randn(3, 3), torch.randn(3, 5))
