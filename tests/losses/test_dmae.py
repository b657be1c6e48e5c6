"""DMAE feature loss, MAE pixel loss, CLS distillation, and the truncated teacher."""
import numpy as np
import pytest
import timm
import torch

import vsd  # noqa: F401
from vsd.engine.checkpoint import save_checkpoint
from vsd.losses.dmae import DMAEFeatureLoss, dmae_feature_loss
from vsd.losses.mae import cls_distillation_loss, mae_pixel_loss
from vsd.wrappers.truncated_teacher import TruncatedTeacher, load_teacher_weights


def _unit(v):
    return v / max(np.sqrt((v ** 2).sum()), 1e-12)


class TestDMAEFeatureLoss:
    def test_against_hand_computation(self):
        g = torch.Generator().manual_seed(0)
        s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
        total, count = 0.0, 0
        for b in range(2):
            for n in range(3):
                diff = _unit(t[b, n].numpy()) - _unit(s[b, n].numpy())
                total += np.abs(diff).sum()
                count += 4
        assert dmae_feature_loss(s, t).item() == pytest.approx(total / count, rel=1e-6)

    def test_scale_invariant_and_zero_on_match(self):
        t = torch.randn(2, 5, 6)
        assert dmae_feature_loss(3.0 * t, t).item() == pytest.approx(0.0, abs=1e-7)

    def test_gradcheck(self):
        s = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        t = torch.randn(2, 3, 4, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda a: dmae_feature_loss(a, t), (s,))

    def test_teacher_gets_no_gradient(self):
        s, t = torch.randn(1, 2, 3, requires_grad=True), torch.randn(1, 2, 3, requires_grad=True)
        dmae_feature_loss(s, t).backward()
        assert t.grad is None and s.grad is not None

    def test_projection_sum_over_pairs(self):
        crit = DMAEFeatureLoss(4, 6, num_pairs=2)
        s = [torch.randn(2, 3, 4), torch.randn(2, 3, 4)]
        t = [torch.randn(2, 3, 6), torch.randn(2, 3, 6)]
        total, terms = crit(s, t)
        hand = sum(dmae_feature_loss(p(a), b) for p, a, b in zip(crit.projections, s, t))
        assert torch.allclose(total, hand) and len(terms) == 2

    def test_width_mismatch_without_projection(self):
        with pytest.raises(ValueError, match="differs from teacher width 6"):
            DMAEFeatureLoss(4, 6, projection=False)

    def test_shape_and_count_errors(self):
        with pytest.raises(ValueError, match="equal shapes"):
            dmae_feature_loss(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
        with pytest.raises(ValueError, match="expected 1 student and teacher"):
            DMAEFeatureLoss(4, 4)([torch.randn(1, 2, 4)] * 2, [torch.randn(1, 2, 4)] * 2)


class TestMAEPixelLoss:
    def test_against_hand_computation(self):
        g = torch.Generator().manual_seed(1)
        pred, target = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
        mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
        for norm in (False, True):
            errs = []
            for b in range(2):
                for i in range(4):
                    if mask[b, i]:
                        tgt = target[b, i].numpy().astype(np.float64)
                        if norm:
                            tgt = (tgt - tgt.mean()) / np.sqrt(tgt.var(ddof=1) + 1e-6)
                        errs.append(((pred[b, i].numpy() - tgt) ** 2).mean())
            assert mae_pixel_loss(pred, target, mask, norm).item() == pytest.approx(np.mean(errs), rel=1e-5)

    def test_visible_patches_do_not_count(self):
        pred, target = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
        target[0, 0] = 100.0  # visible patch: wildly wrong but unscored
        assert mae_pixel_loss(pred, target, torch.tensor([[0.0, 1.0]])).item() == 0.0

    def test_gradcheck(self):
        pred = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        target = torch.randn(2, 3, 4, dtype=torch.float64)
        mask = torch.tensor([[1.0, 0, 1], [1, 1, 0]], dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda p: mae_pixel_loss(p, target, mask, True), (pred,))

    def test_errors(self):
        with pytest.raises(ValueError, match="equal shapes"):
            mae_pixel_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2))
        with pytest.raises(ValueError, match="no patch"):
            mae_pixel_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2))


def test_cls_distillation_loss_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
    assert cls_distillation_loss(s, t).item() == pytest.approx((1 + 4 + 1 + 4 + 0 + 4) / 3)
    cls_distillation_loss(s, t).backward()
    assert torch.allclose(s.grad, 2 * (s.detach() - t) / 3)
    with pytest.raises(ValueError, match="equal shapes"):
        cls_distillation_loss(s, t[:, :1])


# --------------------------------------------------------------------------------------------- teacher
def _vit(depth=4, **kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch4_32", img_size=8, in_chans=1, embed_dim=16, depth=depth,
                             num_heads=2, **kw)


class TestTruncatedTeacher:
    @pytest.mark.parametrize("block", [0, 2])
    def test_equals_full_teacher_at_block(self, block):
        vit = _vit()
        x = torch.randn(3, 1, 8, 8)
        seen = {}
        handle = vit.blocks[block].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
        vit.eval().forward_features(x)  # the full teacher, all blocks and final norm
        handle.remove()
        (feat,) = TruncatedTeacher(vit, [block])(x)
        assert torch.allclose(feat, seen["out"], atol=1e-6)

    def test_runs_no_block_beyond_the_deepest(self):
        vit = _vit()
        calls = []
        for i, blk in enumerate(vit.blocks):
            blk.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
        TruncatedTeacher(vit, [1, 0])(torch.randn(1, 1, 8, 8))
        assert calls == [0, 1]

    def test_frozen_and_always_eval(self):
        teacher = TruncatedTeacher(_vit(), [1])
        teacher.train()
        assert not teacher.training and not teacher.vit.training
        assert not any(p.requires_grad for p in teacher.parameters())

    def test_block_beyond_depth(self):
        with pytest.raises(ValueError, match="beyond the teacher's depth 4"):
            TruncatedTeacher(_vit(), [4])

    def test_not_a_vit(self):
        with pytest.raises(TypeError, match="VisionTransformer"):
            TruncatedTeacher(torch.nn.Linear(2, 2), [0])


class TestTeacherCheckpoint:
    def test_mismatched_shapes_listed(self, tmp_path):
        path = tmp_path / "wrong.safetensors"
        save_checkpoint(path, {"model": _vit(depth=2, mlp_ratio=2.0).state_dict()})
        with pytest.raises(ValueError) as err:
            load_teacher_weights(_vit(depth=3), path)
        msg = str(err.value)
        assert "blocks.0.mlp.fc1.weight" in msg and "missing keys: " in msg and "blocks.2.attn.qkv.weight" in msg

    def test_loads_matching_and_ignores_head(self, tmp_path):
        src = _vit(depth=2, num_classes=7)
        path = tmp_path / "ok.safetensors"
        save_checkpoint(path, {"model": src.state_dict()})
        dst = timm.create_model("vit_tiny_patch4_32", img_size=8, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                                num_classes=3)
        load_teacher_weights(dst, path)
        assert torch.equal(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_teacher_weights(_vit(), tmp_path / "nope.safetensors")


class TestDMAEHeadsAndDistance:
    def test_l2_distance_against_hand_computation(self):
        g = torch.Generator().manual_seed(1)
        s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
        total = 0.0
        for b in range(2):
            for n in range(3):
                total += ((_unit(t[b, n].numpy()) - _unit(s[b, n].numpy())) ** 2).sum()
        assert dmae_feature_loss(s, t, "l2").item() == pytest.approx(total / 24, rel=1e-6)

    def test_unknown_distance_and_head_refused(self):
        with pytest.raises(ValueError, match="distance"):
            dmae_feature_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), "cos")
        with pytest.raises(ValueError, match="mlp-2layer"):
            DMAEFeatureLoss(4, 6, head="mlp-3layer")

    @pytest.mark.parametrize("head", ["mlp-1layer", "mlp-2layer"])
    def test_mlp_heads_against_hand_computation(self, head):
        torch.manual_seed(0)
        crit = DMAEFeatureLoss(3, 5, head=head, distance="l2")
        proj = crit.projections[0]
        layers = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in layers] == \
            ([(3, 5), (5, 5)] if head == "mlp-1layer" else [(3, 5), (5, 5), (5, 5), (5, 5)])
        s, t = torch.randn(1, 2, 3), torch.randn(1, 2, 5)

        def gelu(v):
            return 0.5 * v * (1 + np.vectorize(__import__("math").erf)(v / np.sqrt(2)))

        h = s[0].numpy().astype(np.float64)
        for i, m in enumerate(layers):  # Linear -> GELU -> Linear per Mlp
            h = h @ m.weight.detach().numpy().T + m.bias.detach().numpy()
            if i % 2 == 0:
                h = gelu(h)
        hand = np.mean([((_unit(t[0, n].numpy()) - _unit(h[n])) ** 2).sum() / 5 for n in range(2)])
        total, _ = crit([s], [t])
        assert total.item() == pytest.approx(hand, rel=1e-5)
