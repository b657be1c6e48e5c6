"""CIFAR readers: torchvision's on-disk format, restricted unpickling, missing-file errors, download hook."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from vsd.data import create_dataset, dataset_info, dataset_to_tensors
from vsd.data._safe_pickle import load_restricted_pickle
from vsd.data.cifar import CIFAR10


def test_cifar10_reads_batches_in_order(tmp_path, write_cifar):
    written = write_cifar(tmp_path, "cifar10", train_per_class=2, test_per_class=1)
    train = create_dataset("cifar10", "train", tmp_path, transform="none")
    test = create_dataset("cifar10", "test", tmp_path, transform="none")
    assert len(train) == 100 and len(test) == 10
    expected = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.targets == sum((written[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert train.class_counts == [10] * 10 and test.class_counts == [1] * 10
    assert train.info == dataset_info("cifar10") and train.classes[0] == "airplane"


def test_cifar10_matches_torchvision_reader(tmp_path, write_cifar, monkeypatch):
    """Our restricted reader gives torchvision's images (HWC there, CHW here) and labels."""
    import torchvision.datasets.cifar as torchvision_cifar
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps({"label_names": list(CIFAR10.class_names)}, protocol=2))
    # The tiny files have other MD5s than the real ones: skip torchvision's checks.
    monkeypatch.setattr(TorchvisionCIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision_cifar, "check_integrity", lambda *args, **kwargs: True)
    for split in ("train", "test"):
        reference = TorchvisionCIFAR10(str(tmp_path), train=split == "train")
        ours = create_dataset("cifar10", split, tmp_path, transform="none")
        assert torch.equal(ours.images, torch.from_numpy(reference.data).permute(0, 3, 1, 2))
        assert ours.targets == reference.targets


def test_cifar100_fine_labels_and_resize(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar100", train_per_class=1, test_per_class=1)
    ds = create_dataset("cifar100", "train", tmp_path, image_size=16)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert ds.num_classes == 100 and len(ds) == 100 and ds.class_counts == [1] * 100
    assert ds.classes[-1] == "worm" and ds.info.image_size == 16


def test_cifar_eval_normalization(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar10")
    ds = create_dataset("cifar10", "test", tmp_path)
    images, labels = dataset_to_tensors(ds)
    mean = torch.tensor(ds.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.info.std).view(1, 3, 1, 1)
    assert torch.allclose(images, (ds.images.float() / 255 - mean) / std, atol=1e-5)
    assert labels.dtype == torch.int64


def test_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_dataset("cifar10", "train", tmp_path)
    message = str(err.value)
    assert "cifar-10-batches-py" in message and "download: true" in message and "datasets/README.md" in message
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        create_dataset("cifar100_lt", "test", tmp_path)


def test_download_delegates_only_when_files_are_missing(tmp_path, write_cifar, monkeypatch):
    calls = []

    def fake_download(cls, root):
        calls.append(root)
        write_cifar(root, "cifar10")

    monkeypatch.setattr(CIFAR10, "_download", classmethod(fake_download))
    ds = create_dataset("cifar10", "test", tmp_path, download=True)
    assert calls == [tmp_path] and len(ds) == 10
    create_dataset("cifar10", "test", tmp_path, download=True)
    assert len(calls) == 1  # files present: nothing fetched


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path, write_cifar):
    marker = tmp_path / "pwned"
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        create_dataset("cifar10", "test", tmp_path)
    assert not marker.exists()


def test_restricted_unpickler_allows_only_numpy_arrays(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": np.arange(4, dtype=np.uint8)}, protocol=3))
    assert load_restricted_pickle(path)["data"].tolist() == [0, 1, 2, 3]
    path.write_bytes(pickle.dumps({"data": torch.zeros(1)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_restricted_pickle(path)


def test_bad_batch_content(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match="'data'"):
        create_dataset("cifar10", "test", tmp_path)
