"""Config loading: defaults, YAML, overrides, and the errors for bad keys, types and syntax."""
from dataclasses import dataclass

import pytest

from vsd.config import (Config, ConfigError, MethodConfig, config_from_dict, load_config, parse_override,
                        register_method_config)


@dataclass
class _ToyMethod(MethodConfig):
    alpha: float = 0.5
    steps: int = 3


register_method_config("toy_for_tests", _ToyMethod)


def test_defaults_are_the_digits_ce_baseline():
    cfg = Config()
    assert (cfg.data.name, cfg.method.name, cfg.model.name) == ("digits", "ce", "convnet_d3")


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 1.0e-2\nseed: 3\n")
    cfg = load_config(path, ["train.epochs=9", "data.kwargs={imbalance_factor: 10}", "train.clip_grad=2"])
    assert cfg.train.epochs == 9 and cfg.seed == 3 and cfg.train.lr == pytest.approx(0.01)
    assert cfg.data.kwargs == {"imbalance_factor": 10}
    assert cfg.train.clip_grad == 2.0 and isinstance(cfg.train.clip_grad, float)


def test_override_type_coercion():
    cfg = load_config(None, ["train.lr=1e-3", "train.ema=true", "output=runs/x", "train.clip_grad=null"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.ema is True
    assert cfg.output == "runs/x" and cfg.train.clip_grad is None


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'dta'.*'data'"):
        config_from_dict({"dta": {}})


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError, match=r"train.epochs.*'many'.*int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train.ema.*bool"):
        config_from_dict({"train": {"ema": "yes please"}})
    with pytest.raises(ConfigError, match=r"train.epochs.*2.5.*int"):
        config_from_dict({"train": {"epochs": 2.5}})


def test_unparseable_override():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("train.epochs=[1, 2")
    with pytest.raises(ConfigError, match="malformed"):
        parse_override("train..epochs=1")


def test_dynamic_method_section_validates_against_the_registered_dataclass():
    cfg = load_config(None, ["method.name=toy_for_tests", "method.alpha=0.25"])
    assert isinstance(cfg.method, _ToyMethod) and cfg.method.alpha == 0.25 and cfg.method.steps == 3
    with pytest.raises(ConfigError, match=r"unknown config key 'method.alpah'.*did you mean 'alpha'"):
        load_config(None, ["method.name=toy_for_tests", "method.alpah=0.25"])
    with pytest.raises(ConfigError, match=r"unknown method 'nope'"):
        load_config(None, ["method.name=nope"])


def test_missing_or_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
