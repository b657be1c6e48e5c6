"""Label noise and samples_per_class: exact rates, seeded, train split only, recorded in results.json."""
import json
from collections import Counter

import pytest
import torch

from vsd.data import create_dataset, dataset_info
from vsd.data.train_split import parse_label_noise


def _clean_train():
    return create_dataset("digits", "train").targets


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_noise_rate_is_exact_and_never_keeps_the_true_label(rate):
    ds = create_dataset("digits", "train", label_noise=rate)
    clean = _clean_train()
    assert ds.clean_targets == clean
    flipped = [i for i, (a, b) in enumerate(zip(clean, ds.targets)) if a != b]
    assert len(flipped) == round(rate * len(clean))
    assert ds.noisy == [a != b for a, b in zip(clean, ds.targets)]
    # The new labels cover the other classes roughly uniformly (each of 9 wrong labels appears).
    assert len({ds.targets[i] for i in flipped}) == 10
    assert ds.class_counts == [ds.targets.count(c) for c in range(10)]


def test_asymmetric_noise_flips_each_class_to_its_mapping_at_the_exact_rate():
    clean = _clean_train()
    ds = create_dataset("digits", "train", label_noise={"rate": 0.3, "kind": "asymmetric", "seed": 3})
    per_class = Counter(clean)
    for c in range(10):
        idx = [i for i, t in enumerate(clean) if t == c]
        moved = [ds.targets[i] for i in idx if ds.targets[i] != c]
        assert len(moved) == round(0.3 * per_class[c])
        assert set(moved) == {(c + 1) % 10}
    custom = list(range(10))
    custom[3], custom[5] = 5, 3  # only 3 <-> 5 are confused
    ds = create_dataset("digits", "train", label_noise={"rate": 0.4, "kind": "asymmetric", "mapping": custom})
    changed = {clean[i] for i in range(len(clean)) if ds.targets[i] != clean[i]}
    assert changed == {3, 5}


def test_noise_is_seeded_and_the_test_split_is_untouched():
    a = create_dataset("digits", "train", label_noise={"rate": 0.4, "seed": 1}).targets
    b = create_dataset("digits", "train", label_noise={"rate": 0.4, "seed": 1}).targets
    c = create_dataset("digits", "train", label_noise={"rate": 0.4, "seed": 2}).targets
    assert a == b and a != c
    test = create_dataset("digits", "test", label_noise=0.4)
    assert test.targets == create_dataset("digits", "test").targets
    assert not hasattr(test, "noisy")


def test_samples_per_class_keeps_a_fixed_subset_then_noise_applies_to_it():
    ds = create_dataset("photos", "train", samples_per_class=7)
    assert ds.class_counts == [7] * 10 and len(ds) == 70 and ds.images.shape[0] == 70
    full = create_dataset("photos", "train")
    again = create_dataset("photos", "train", samples_per_class=7)
    assert torch.equal(ds.images, again.images)
    rows = {bytes(full.images[i].flatten().tolist()) for i in range(len(full))}
    assert all(bytes(img.flatten().tolist()) in rows for img in ds.images)
    noisy = create_dataset("photos", "train", samples_per_class=7, label_noise=0.2)
    assert sum(noisy.noisy) == 14 and noisy.clean_targets == ds.targets
    assert len(create_dataset("photos", "test", samples_per_class=7)) == 1000
    assert dataset_info("photos", samples_per_class=7, label_noise=0.2) == dataset_info("photos")
    profile = [50, 30, 20, 10, 5, 4, 3, 2, 1, 600]  # more than the class has: all 500 kept
    assert create_dataset("photos", "train", samples_per_class=profile).class_counts == profile[:9] + [500]


@pytest.mark.parametrize("kwargs, match", [
    ({"label_noise": 1.0}, "rate must be a number in"),
    ({"label_noise": {"rate": 0.2, "kind": "pairs"}}, "kind must be"),
    ({"label_noise": {"rate": 0.2, "noise": 1}}, "unknown key"),
    ({"label_noise": {"rate": 0.2, "kind": "asymmetric", "mapping": [0, 1]}}, "must list 10 class indices"),
    ({"samples_per_class": 0}, "positive integer"),
    ({"samples_per_class": [5, 5]}, "list of 10 positive"),
])
def test_bad_options_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_dataset("digits", "train", **kwargs)


def test_parse_accepts_a_bare_rate():
    assert parse_label_noise(0.2, 10) == {"rate": 0.2, "kind": "symmetric", "seed": 0, "mapping": None}
    assert parse_label_noise(None, 10) is None


def test_results_json_records_the_options(tmp_path):
    from vsd.config import config_from_dict
    from vsd.engine.trainer import train

    cfg = config_from_dict({
        "output": str(tmp_path / "run"), "data": {"name": "digits", "kwargs": {
            "label_noise": {"rate": 0.4, "seed": 0}, "samples_per_class": 5}},
        "model": {"name": "convnet_d1", "kwargs": {"net_width": 4}},
        "train": {"epochs": 1, "batch_size": 16}})
    train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["label_noise"] == {"rate": 0.4, "seed": 0} and results["samples_per_class"] == 5
