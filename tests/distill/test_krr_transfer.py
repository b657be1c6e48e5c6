"""Tests of the KRR-ST target model (vsd.distill.barlow) and transfer protocol (vsd.distill.transfer)."""
import pytest
import torch

from vsd.distill.barlow import (barlow_twins_loss, build_projector, load_encoder_weights, ssl_augmentation,
                                train_barlow_twins)
from vsd.distill.evaluate import train_network
from vsd.distill.transfer import (PretrainSet, TransferConfig, finetune_and_evaluate,
                                  linear_probe_evaluate, make_target_task, mse_loss_checked, run_transfer,
                                  transfer_backbone)
from vsd.models import create_network


def _tiny(num_classes, in_chans=1, size=8):
    return create_network("convnet_d1", {"net_width": 4}, num_classes, in_chans, size)


class TestBarlowTwins:
    def test_loss_against_loop_implementation(self):
        g = torch.Generator().manual_seed(0)
        z1, z2 = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g,
                                                                                   dtype=torch.float64)
        a = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
        b = (z2 - z2.mean(0)) / z2.std(0, unbiased=False)
        expected = 0.0
        for i in range(4):
            for j in range(4):
                c = float((a[:, i] * b[:, j]).sum() / 10)
                expected += (1 - c) ** 2 if i == j else 5e-3 * c ** 2
        assert float(barlow_twins_loss(z1, z2, eps=0.0)) == pytest.approx(expected, rel=1e-10)

    def test_identical_views_have_near_zero_on_diagonal_term(self):
        z = torch.randn(32, 3, dtype=torch.float64)
        assert float(barlow_twins_loss(z, z, lambd=0.0)) < 1e-8

    def test_gradcheck(self):
        z1 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(barlow_twins_loss, (z1, z2))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"\[N, D\]"):
            barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2))
        with pytest.raises(ValueError, match="at least 2"):
            barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
        with pytest.raises(ValueError, match="output width"):
            build_projector(4, [])
        with pytest.raises(ValueError, match="one per channel"):
            ssl_augmentation(8, 3, [0.5], [0.5])

    @pytest.mark.parametrize("chans", [1, 3])
    def test_augmentation_shapes(self, chans):
        aug = ssl_augmentation(8, chans, [0.5] * chans, [0.25] * chans)
        assert aug(torch.randn(5, chans, 8, 8)).shape == (5, chans, 8, 8)

    def test_training_lowers_the_loss_and_checkpoint_round_trip(self, tmp_path):
        from vsd.engine.checkpoint import save_checkpoint

        torch.manual_seed(0)
        protos = torch.randn(4, 1, 8, 8)
        images = protos[torch.arange(64) % 4] + 0.3 * torch.randn(64, 1, 8, 8)
        aug = ssl_augmentation(8, 1, [0.5], [0.25], flip=False)
        logs = []
        enc = train_barlow_twins(_tiny(0), images, aug, projector_dims=[16, 16], epochs=15, batch_size=32,
                                 lr=1e-2, log=logs.append)
        first, last = (float(line.rsplit(" ", 1)[1]) for line in (logs[0], logs[-1]))
        assert last < 0.8 * first
        assert not enc.training and enc(images[:3]).shape == (3, 4 * 4 * 4)
        save_checkpoint(tmp_path / "enc.safetensors", {"model": enc.model.state_dict()})
        other = load_encoder_weights(_tiny(0), tmp_path / "enc.safetensors")
        torch.testing.assert_close(other(images[:3]), enc(images[:3]))
        # a checkpoint without the classifier head loads into a model with one
        with_head = load_encoder_weights(_tiny(7), tmp_path / "enc.safetensors")
        torch.testing.assert_close(with_head(images[:3]), enc(images[:3]))
        with pytest.raises(ValueError, match="does not fit"):
            load_encoder_weights(create_network("convnet_d2", {"net_width": 4}, 0, 1, 8), tmp_path / "enc.safetensors")
        with pytest.raises(FileNotFoundError):
            load_encoder_weights(_tiny(0), tmp_path / "missing.safetensors")
        # a foreign PyTorch state dict is read with weights_only=True
        torch.save({"state_dict": enc.model.state_dict()}, tmp_path / "enc.pth")
        torch.testing.assert_close(load_encoder_weights(_tiny(0), tmp_path / "enc.pth")(images[:3]), enc(images[:3]))


class TestTransfer:
    def _task(self, classes=(5, 6, 7), per_class=2):
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(10).repeat(4)
        test_labels = torch.arange(10).repeat(2)
        train = (torch.randn(len(labels), 1, 8, 8, generator=g), labels)
        test = (torch.randn(len(test_labels), 1, 8, 8, generator=g), test_labels)
        return make_target_task(train, test, list(classes), per_class, torch.Generator().manual_seed(1))

    def test_target_task_remaps_and_subsamples(self):
        task = self._task()
        assert task.train_labels.tolist().count(0) == 2 and set(task.train_labels.tolist()) == {0, 1, 2}
        assert task.test_images.shape[0] == 6 and set(task.test_labels.tolist()) == {0, 1, 2}

    def test_class_missing_from_the_finetuning_split_is_an_error(self):
        with pytest.raises(ValueError, match=r"\[11\] have no image in the fine-tuning split"):
            self._task(classes=(5, 11))
        task = self._task()
        task.train_labels = torch.zeros_like(task.train_labels)
        with pytest.raises(ValueError, match="lacks target classes"):
            finetune_and_evaluate(_tiny(3), task, steps=1)

    def test_transfer_backbone_copies_all_but_the_head(self):
        pre, fresh = _tiny(7), _tiny(3)
        out = transfer_backbone(pre, fresh)
        torch.testing.assert_close(out.blocks[0].conv.weight, pre.blocks[0].conv.weight)
        assert out.classifier.out_features == 3

    def test_mse_pretraining_fits_the_representations(self):
        torch.manual_seed(0)
        x, y = torch.randn(16, 1, 8, 8), torch.randn(16, 5)
        net = _tiny(5)
        with torch.no_grad():
            before = float(torch.nn.functional.mse_loss(net(x), y))
        train_network(net, x, y, epochs=100, batch_size=16, lr=0.05, loss_fn=mse_loss_checked)
        with torch.no_grad():
            assert float(torch.nn.functional.mse_loss(net(x), y)) < 0.5 * before
        with pytest.raises(ValueError, match="num_classes=5"):
            train_network(_tiny(3), x, y, epochs=1, lr=0.1, loss_fn=mse_loss_checked)
        with pytest.raises(ValueError, match="'mse' or 'ce'"):
            PretrainSet(x, y, "l1")
        with pytest.raises(ValueError, match="same number of rows"):
            PretrainSet(x, y[:3], "mse")

    def test_run_transfer_reports_every_option(self):
        task = self._task(per_class=4)
        cfg = TransferConfig(seeds=2, pretrain_epochs=2, finetune_steps=3, flip=False,
                             protocols=["finetune", "linear"])
        sets = {"none": lambda r: None,
                "mse": lambda r: PretrainSet(torch.randn(8, 1, 8, 8), torch.randn(8, 6), "mse"),
                "ce": lambda r: PretrainSet(torch.randn(8, 1, 8, 8), torch.arange(8) % 4, "ce")}
        out = run_transfer(sets, lambda r: task, cfg, "convnet_d1", {"net_width": 4}, seed=0)
        assert set(out) == {"finetune", "linear"}
        for per_option in out.values():
            assert set(per_option) == {"none", "mse", "ce"}
            for row in per_option.values():
                assert len(row["accs"]) == 2 and 0.0 <= row["mean"] <= 100.0 and row["std"] >= 0
        with pytest.raises(ValueError, match="protocols"):
            run_transfer(sets, lambda r: task, TransferConfig(protocols=["knn"]), "convnet_d1", {}, seed=0)

    def test_linear_probe_separates_separable_features(self):
        # features = flattened pixels of a ConvNet without layers would be trivial; use prototypes + noise
        g = torch.Generator().manual_seed(0)
        protos = torch.randn(3, 1, 8, 8, generator=g) * 3
        labels = torch.arange(3).repeat(10)
        images = protos[labels] + 0.1 * torch.randn(30, 1, 8, 8, generator=g)
        task = make_target_task((images, labels), (images, labels), [0, 1, 2], 5, torch.Generator().manual_seed(0))
        assert linear_probe_evaluate(_tiny(3), task) > 90.0
