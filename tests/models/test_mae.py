"""MAE model: masking, patchify, visible-token encoder, sin-cos table, registry and weight transfer."""
import math

import pytest
import timm
import torch

import vsd  # noqa: F401  (registers the models)
from vsd.models.mae import (MaskedAutoencoderViT, check_mask_ratio, encode_visible, encoder_state_dict,
                            random_masking, sincos_pos_embed_2d)

TINY = dict(img_size=8, in_chans=2, num_classes=3, embed_dim=16, depth=3, num_heads=2,
            decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)


def tiny_mae(**kw) -> MaskedAutoencoderViT:
    torch.manual_seed(0)
    return timm.create_model("mae_vit_tiny_patch4_32", **dict(TINY, **kw))


class TestMasking:
    @pytest.mark.parametrize("ratio,length,keep", [(0.75, 16, 4), (0.5, 64, 32), (0.9, 64, 6), (0.3, 7, 4)])
    def test_keeps_exactly_the_right_number(self, ratio, length, keep):
        m = random_masking(5, length, ratio, generator=torch.Generator().manual_seed(1))
        assert m.ids_keep.shape == (5, keep)
        assert torch.all(m.mask.sum(1) == length - keep)
        for b in range(5):
            kept = m.ids_keep[b].tolist()
            assert len(set(kept)) == keep  # distinct patches
            assert all(m.mask[b, i] == 0 for i in kept)  # kept == unmasked, exactly
            assert sorted(m.ids_restore[b].tolist()) == list(range(length))

    def test_restore_is_inverse_permutation(self):
        m = random_masking(3, 10, 0.6, generator=torch.Generator().manual_seed(0))
        seq = torch.arange(10).expand(3, -1)
        shuffled_first = torch.gather(seq, 1, m.ids_keep)
        # the kept prefix of the shuffle, put back with ids_restore, lands on its original positions
        full_shuffle = torch.argsort(m.ids_restore, dim=1)
        assert torch.equal(full_shuffle[:, :4], shuffled_first)
        assert torch.equal(torch.gather(full_shuffle, 1, m.ids_restore), seq)

    @pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, True, "0.5"])
    def test_ratio_outside_open_interval(self, bad):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            check_mask_ratio(bad, 16)

    def test_ratio_keeping_nothing(self):
        with pytest.raises(ValueError, match="keeps no patch"):
            random_masking(2, 4, 0.8)


class TestPixels:
    def test_patchify_matches_crops(self):
        mae = tiny_mae()
        img = torch.randn(2, 2, 8, 8)
        patches = mae.patchify(img)
        assert patches.shape == (2, 4, 4 * 4 * 2)
        # patch 1 is the top-right 4x4 crop, pixels ordered (row, col, channel)
        crop = img[1, :, 0:4, 4:8]
        assert torch.equal(patches[1, 1], crop.permute(1, 2, 0).reshape(-1))
        assert torch.equal(mae.unpatchify(patches), img)

    def test_patchify_bad_shape(self):
        with pytest.raises(ValueError, match="images must be"):
            tiny_mae().patchify(torch.randn(1, 3, 8, 8))

    def test_sincos_table_by_hand(self):
        table = sincos_pos_embed_2d(8, 2, 2)
        assert table.shape == (1, 5, 8)
        assert torch.all(table[0, 0] == 0)  # CLS row
        row1_col0 = table[0, 1 + 2]  # grid position (row 1, col 0)
        expect = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01), 0, 0, 1, 1]
        assert torch.allclose(row1_col0, torch.tensor(expect), atol=1e-6)
        with pytest.raises(ValueError, match="divisible by 4"):
            sincos_pos_embed_2d(6, 2, 2)


class TestEncoder:
    def test_all_patches_equal_timm_forward_features(self):
        vit = timm.create_model("vit_tiny_patch4_32", img_size=8, in_chans=2, embed_dim=16, depth=2, num_heads=2)
        x = torch.randn(3, 2, 8, 8)
        tokens, _ = encode_visible(vit, x, None)
        assert torch.allclose(tokens, vit.forward_features(x), atol=1e-5)
        ids_all = torch.arange(4).expand(3, -1)
        assert torch.allclose(encode_visible(vit, x, ids_all)[0], tokens, atol=1e-6)

    def test_permutation_equivariance_of_visible_tokens(self):
        mae = tiny_mae().eval()
        x = torch.randn(2, 2, 8, 8)
        ids = torch.tensor([[0, 2], [3, 1]])
        a, _ = encode_visible(mae, x, ids)
        b, _ = encode_visible(mae, x, ids.flip(1))
        assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)  # CLS unchanged
        assert torch.allclose(a[:, 1:], b[:, 1:].flip(1), atol=1e-5)

    def test_collect_and_depth_errors(self):
        mae = tiny_mae()
        with pytest.raises(ValueError, match="out of range"):
            encode_visible(mae, torch.randn(1, 2, 8, 8), None, collect=[3])

    def test_forward_mae_shapes_and_logits(self):
        mae = tiny_mae()
        x = torch.randn(4, 2, 8, 8)
        out = mae.forward_mae(x, 0.5, collect=[1])
        assert out.pred.shape == (4, 4, 32) and out.latent.shape == (4, 3, 16)
        assert out.intermediates[0].shape == (4, 3, 16)
        assert mae.eval()(x).shape == (4, 3)
        assert not mae.pos_embed.requires_grad


def test_encoder_weights_transfer_to_plain_vit():
    mae = timm.create_model("mae_vit_tiny_patch4_32", img_size=16, in_chans=1, num_classes=10, depth=2)
    vit = timm.create_model("vit_tiny_patch4_32", img_size=16, in_chans=1, num_classes=10, depth=2)
    vit.load_state_dict(encoder_state_dict(mae.state_dict()))
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(vit.eval()(x), mae.eval()(x), atol=1e-6)


def test_registered_teacher_is_larger():
    small = timm.create_model("mae_vit_small_patch4_32", img_size=16, in_chans=1, depth=1)
    assert small.embed_dim == 384 and isinstance(small, MaskedAutoencoderViT)


class TestOfficialInit:
    def test_linear_layers_xavier_uniform_zero_bias(self):
        mae = timm.create_model("mae_vit_tiny_patch4_32", img_size=16, in_chans=3, num_classes=10)
        linears = [m for m in mae.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) > 10
        for m in linears:
            bound = math.sqrt(6.0 / (m.in_features + m.out_features))
            w = m.weight.detach()
            assert float(w.abs().max()) <= bound + 1e-6
            # uniform(-a, a) has std a / sqrt(3); timm's trunc_normal(0.02) would be far below for these widths
            assert float(w.std()) == pytest.approx(bound / math.sqrt(3.0), rel=0.15)
            assert m.bias is None or torch.all(m.bias == 0)

    def test_patch_embedding_like_a_linear_layer_and_tokens(self):
        mae = timm.create_model("mae_vit_tiny_patch4_32", img_size=16, in_chans=3, num_classes=10)
        w = mae.patch_embed.proj.weight.detach()
        fan_in, fan_out = w[0].numel(), w.shape[0]  # 3*4*4 = 48 inputs, embed_dim outputs
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert float(w.abs().max()) <= bound + 1e-6
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3.0), rel=0.1)
        for token in (mae.cls_token, mae.mask_token):
            assert float(token.detach().std()) == pytest.approx(0.02, rel=0.35)  # timm's cls default: 1e-6
        norms = [m for m in mae.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


class TestPatchifyWithoutModel:
    def test_functions_match_hand_layout_and_invert(self):
        from vsd.models.mae import patchify, unpatchify

        img = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 2, 4, 6)
        patches = patchify(img, 2)
        assert patches.shape == (2, 6, 8)
        # patch (row 1, col 2) of image 1, pixel (r, c, ch) at index (r * 2 + c) * 2 + ch
        for r in range(2):
            for c in range(2):
                for ch in range(2):
                    assert patches[1, 1 * 3 + 2, (r * 2 + c) * 2 + ch] == img[1, ch, 2 + r, 4 + c]
        assert torch.equal(unpatchify(patches, 2, 2, (2, 3)), img)
        square = torch.randn(1, 3, 8, 8)
        assert torch.equal(unpatchify(patchify(square, 4), 4, 3), square)
        with pytest.raises(ValueError, match="multiples of the patch size"):
            patchify(torch.randn(1, 3, 7, 8), 2)
