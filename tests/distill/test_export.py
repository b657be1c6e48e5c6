"""Export round trip, hash and version checks, grids, ImageFolder, and the ``distilled`` data set."""
import json

import pytest
import torch

from vsd.distill.export import (DistilledFormatError, export_imagefolder, load_distilled, sanitized_names,
                                save_class_grids, save_distilled, to_display)

META = {"method": "mtt", "dataset": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3054],
        "std": [0.3187], "syn_lr": 0.02, "config": {"seed": 0}}


def _save(tmp_path, labels=None, **kw):
    images = torch.randn(20, 1, 16, 16)
    labels = torch.arange(10).repeat_interleave(2) if labels is None else labels
    meta = save_distilled(tmp_path, images, labels, META, **kw)
    return images, labels, meta


def test_round_trip(tmp_path):
    images, labels, meta = _save(tmp_path, targets=torch.randn(20, 5), extra_tensors={"zca_mean": torch.ones(1, 3)})
    tensors, loaded = load_distilled(tmp_path)
    assert torch.equal(tensors["images"], images) and torch.equal(tensors["labels"], labels)
    assert tensors["targets"].shape == (20, 5) and "zca_mean" in tensors
    assert loaded == meta
    assert loaded["ipc"] == 2 and loaded["image_size"] == [16, 16] and loaded["label_kind"] == "hard"
    for key in ("format_version", "vsd_version", "sha256", "zca", "syn_lr", "config", "mean", "std", "classes"):
        assert key in loaded


def test_corrupt_tensor_file_is_refused(tmp_path):
    _save(tmp_path)
    path = tmp_path / "distilled.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DistilledFormatError, match="corrupt: SHA-256"):
        load_distilled(tmp_path)


def test_other_format_version_is_refused(tmp_path):
    _save(tmp_path)
    meta_path = tmp_path / "distilled.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DistilledFormatError, match="format version 99"):
        load_distilled(tmp_path)
    with pytest.raises(DistilledFormatError, match="no distilled export"):
        load_distilled(tmp_path / "nowhere")


def test_bad_meta_and_labels(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        save_distilled(tmp_path, torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), {"method": "mtt"})
    with pytest.raises(ValueError, match="out of range"):
        save_distilled(tmp_path, torch.zeros(2, 1, 4, 4), torch.tensor([0, 12]), META)
    with pytest.raises(ValueError, match=r"label -1 out of range .*expected 0\.\."):
        save_distilled(tmp_path, torch.zeros(2, 1, 4, 4), torch.tensor([-1, 1]), META)
    assert not (tmp_path / "distilled.json").exists()  # nothing half-written
    with pytest.raises(ValueError, match="one value per channel"):
        save_distilled(tmp_path, torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), META)


def test_soft_labels_grid_and_imagefolder(tmp_path):
    soft = torch.softmax(torch.randn(20, 10) + 5 * torch.eye(10).repeat_interleave(2, dim=0), dim=1)
    images, _, meta = _save(tmp_path, labels=soft)
    assert meta["label_kind"] == "soft"
    pixels = to_display(images, META["mean"], META["std"])
    assert pixels.min() >= 0 and pixels.max() <= 1
    written = save_class_grids(tmp_path, pixels, soft, META["classes"])
    assert (tmp_path / "grid_all.png").exists() and len(written) >= 2
    folder = export_imagefolder(tmp_path / "imf", pixels, soft, META["classes"])
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    assert len(ds) == 20 and ds[0][0].size == (16, 16)


def test_sanitized_names():
    assert sanitized_names(["a/b", "..", "a b", "a_b", "ok"]) == ["a_b", "class_001", "002_a_b", "003_a_b", "ok"]


def test_zca_display_inverts_kornia(tmp_path):
    from kornia.enhance import ZCAWhitening

    x = torch.rand(50, 1, 4, 4)
    zca = ZCAWhitening(eps=0.1, compute_inv=True).fit(x)
    back = to_display(zca(x), [0.0], [1.0], zca.transform_inv, zca.mean_vector)
    assert torch.allclose(back, x, atol=1e-4)


def test_distilled_dataset_reads_the_export(tmp_path):
    from vsd.data import create_dataset, dataset_info

    images, labels, _ = _save(tmp_path)
    ds = create_dataset("distilled", "train", root=str(tmp_path))
    assert len(ds) == 20 and torch.equal(ds[3][0], images[3]) and ds[3][1] == int(labels[3])
    assert dataset_info("distilled", root=str(tmp_path)).num_classes == 10
    test = create_dataset("distilled", "test", root=str(tmp_path))
    assert len(test) == len(create_dataset("digits", "test"))
    with pytest.raises(ValueError, match="data.root"):
        create_dataset("distilled", "train")
