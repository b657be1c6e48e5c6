"""KRR-ST: cost and accuracy of the closed-form KRR head, float32 against the float64 option, on features shaped
like the paper's CIFAR-100 setting (1000 synthetic images) at a reduced feature width, plus the cost of one
outer step against one pool-member training step (the inner work KRR-ST replaces an unrolled loop with).
"""
from __future__ import annotations

from typing import Dict, List

import torch

from bench_suites._common import row, time_fn
from vsd.distill.krr import kernel_ridge_predict
from vsd.distill.krr_st import krr_st_outer_loss
from vsd.distill.model_pool import member_features
from vsd.models import create_network

SUITE = "krr"


def _solve_rows(quick: bool) -> List[Dict[str, object]]:
    n, m, d, k = (200, 256, 256, 64) if quick else (1000, 1024, 512, 128)
    g = torch.Generator().manual_seed(0)
    fs = torch.relu(torch.randn(n, d, generator=g))  # ReLU features: a positive mean makes the kernel ill-conditioned
    ft = torch.relu(torch.randn(m, d, generator=g))
    ys = torch.randn(n, k, generator=g)
    ref = kernel_ridge_predict(fs.double(), ys.double(), ft.double())
    p32 = kernel_ridge_predict(fs, ys, ft)
    p64 = kernel_ridge_predict(fs, ys, ft, dtype=torch.float64)
    err32 = float((p32.double() - ref).norm() / ref.norm())
    err64 = float((p64.double() - ref).norm() / ref.norm())
    repeats, inner = (3, 1) if quick else (5, 2)
    t32 = time_fn(lambda: kernel_ridge_predict(fs, ys, ft), repeats=repeats, inner=inner)
    t64 = time_fn(lambda: kernel_ridge_predict(fs, ys, ft, dtype=torch.float64), repeats=repeats, inner=inner)
    shape = f"N={n} support, M={m} query, D={d}, K={k}, lam=1e-6 tr(Kss); {torch.get_num_threads()} threads"
    return [row(SUITE, "KRR head float64 solve vs float32", "ms/call", t64 * 1e3, t32 * 1e3, shape),
            row(SUITE, "KRR head float32 relative error (vs float64 reference)", "rel. error", err32, None,
                f"float64 option (result rounded back to float32): {err64:.1e}; " + shape)]


def _step_rows(quick: bool) -> List[Dict[str, object]]:
    torch.manual_seed(0)
    n, batch, width = (20, 64, 16) if quick else (50, 256, 32)
    net = create_network("convnet_d2", {"net_width": width, "net_norm": "batchnorm"}, 128, 1, 16)
    x_syn = torch.randn(n, 1, 16, 16, requires_grad=True)
    y_syn = torch.randn(n, 128, requires_grad=True)
    x_real, y_real = torch.randn(batch, 1, 16, 16), torch.randn(batch, 128)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def outer() -> None:
        net.eval()
        with torch.no_grad():
            f_real = member_features(net, x_real)
        loss = krr_st_outer_loss(member_features(net, x_syn), y_syn, f_real, y_real)
        torch.autograd.grad(loss, [x_syn, y_syn])

    def inner() -> None:
        net.train()
        loss = torch.nn.functional.mse_loss(net(x_syn.detach()), y_syn.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()

    repeats, inner_n = (3, 2) if quick else (7, 3)
    t_outer = time_fn(outer, repeats=repeats, inner=inner_n)
    t_inner = time_fn(inner, repeats=repeats, inner=inner_n)
    return [row(SUITE, "KRR-ST outer step vs one pool-member MSE step", "ms/step", t_outer * 1e3, t_inner * 1e3,
                f"digits-sized: {n} synthetic 1x16x16, real batch {batch}, ConvNet-D2 width {width} + BN")]


def run(quick: bool = False) -> List[Dict[str, object]]:
    return _solve_rows(quick) + _step_rows(quick)


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
