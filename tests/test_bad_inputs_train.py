"""tools/train.py bad-input table: every case gives exit status 2, one ``error:`` line naming what was wrong,
and leaves every folder except the run's own untouched (checksums and modes before/after)."""
import shutil
from pathlib import Path

import pytest

from tests.bad_input_helpers import (SMALL, TINY, assert_one_error_line, fingerprint, skip_if_read_only_is_writable,
                                     tool_main, write_cifar10, write_imagefolder)
from vsd.config import Config, ConfigError, TrainConfig, load_config
from vsd.engine.checkpoint import save_checkpoint
from vsd.engine.trainer import train

CKPT = "checkpoint-last.safetensors"
ONE = TINY + ["train.epochs=1"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a finished run, another run, damaged data sets, foreign and corrupt files."""
    root = tmp_path_factory.mktemp("ws")
    train(load_config(None, SMALL + [f"output={root / 'finished'}"]))
    shutil.copytree(root / "finished", root / "other")
    data = root / "data"
    for damage in (None, "truncated", "random", "text"):
        write_imagefolder(data / f"if_{damage}", damage=damage)
    write_imagefolder(data / "if_one", classes=1)
    write_cifar10(data / "cifar_truncated", "truncated")
    write_cifar10(data / "cifar_malicious", "malicious")
    save_checkpoint(root / "distill.safetensors", {"kind": "vsd-distill-progress", "iteration": 3, "extra": {}})
    (root / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (root / "dup.yaml").write_text("train:\n  epochs: 3\n  epochs: 4\n")
    (root / "bad.yaml").write_text("train: [1, 2\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "other_model.yaml").write_text("model:\n  name: convnet_d2\n")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    return root


def _if(ws, kind):
    return ["data.name=imagefolder", f"data.root={ws / 'data' / kind}", "data.image_size=8"]


def _cifar(ws, kind):
    return ["data.name=cifar10", f"data.root={ws / 'data' / kind}", "data.image_size=8"]


def _set(*items):
    """A case run with --set: output=<ws>/out (the run's own folder) plus ``items``."""
    return lambda ws: ["--set", f"output={ws / 'out'}", *ONE,
                       *[i(ws) if callable(i) else i for i in items]]


def _flat(ws, items):
    out = []
    for i in items:
        value = i(ws) if callable(i) else i
        out.extend(value if isinstance(value, list) else [value])
    return out


def _resume(*sets, config=None):
    def argv(ws):
        head = ["--resume", str(ws / "finished" / CKPT)] + (["--config", str(ws / config)] if config else [])
        return head + (["--set", *_flat(ws, sets)] if sets else [])
    return argv


def _data(kind_fn, kind):
    return lambda ws: ["--set", f"output={ws / 'out'}", *ONE, *kind_fn(ws, kind)]


# (case id, argv builder, pattern the error line must match)
CASES = [
    # --- config values out of range or of the wrong kind
    ("batch_size_0", _set("train.batch_size=0"), r"train\.batch_size.*0.*>= 1"),
    ("batch_size_negative", _set("train.batch_size=-8"), r"train\.batch_size.*-8.*>= 1"),
    ("eval_batch_size_0", _set("train.eval_batch_size=0"), r"train\.eval_batch_size"),
    ("warmup_negative", _set("train.warmup_epochs=-1"), r"train\.warmup_epochs.*-1.*>= 0"),
    ("lr_nan", _set("train.lr=.nan"), r"train\.lr.*nan.*finite"),
    ("lr_inf", _set("train.lr=.inf"), r"train\.lr.*inf.*finite"),
    ("lr_negative", _set("train.lr=-0.1"), r"train\.lr.*> 0"),
    ("momentum_5", _set("train.momentum=5"), r"train\.momentum.*5.*<= 1"),
    ("epochs_0", _set("train.epochs=0"), r"train\.epochs.*0.*>= 1"),
    ("epochs_negative", _set("train.epochs=-3"), r"train\.epochs.*-3"),
    ("checkpoint_every_0", _set("train.checkpoint_every=0"), r"train\.checkpoint_every"),
    ("log_interval_0", _set("train.log_interval=0"), r"train\.log_interval"),
    ("ece_bins_0", _set("eval.ece_bins=0"), r"eval\.ece_bins.*0.*>= 1"),
    ("image_size_huge", _set("data.image_size=100000"), r"data\.image_size.*100000.*<= 2048"),
    ("image_size_0", _set("data.image_size=0"), r"data\.image_size"),
    ("device_gpu", _set("train.device=gpu"), r"train\.device.*'gpu'.*expected auto, cpu, cuda"),
    ("device_unavailable", _set("train.device=cuda:99"), r"train\.device.*cuda:99.*not available"),
    ("milestones_decreasing", _set("train.decay_milestones=[5, 2]"), r"decay_milestones.*increasing"),
    ("milestones_zero", _set("train.decay_milestones=[0]"), r"decay_milestones.*>= 1"),
    ("label_smoothing_1.5", _set("train.label_smoothing=1.5"), r"label_smoothing.*< 1"),
    ("ema_decay_2", _set("train.ema_decay=2"), r"ema_decay"),
    ("clip_grad_0", _set("train.clip_grad=0"), r"clip_grad.*> 0"),
    ("weight_decay_negative", _set("train.weight_decay=-1"), r"weight_decay"),
    ("decay_rate_0", _set("train.decay_rate=0"), r"decay_rate"),
    ("seed_negative", _set("seed=-1"), r"'seed'.*-1"),
    ("num_workers_negative", _set("data.num_workers=-1"), r"data\.num_workers"),
    ("opt_unknown", _set("train.opt=sgdd"), r"train\.opt.*'sgdd'"),
    ("sched_unknown", _set("train.sched=cosin"), r"train\.sched.*'cosin'"),
    ("transform_unknown", _set("data.train_transform=fancy"), r"data\.train_transform.*'fancy'"),
    ("method_unknown", _set("method.name=bogus"), r"method\.name.*'bogus'"),
    # --- unknown keys, syntax, types
    ("unknown_key", _set("train.epoch=1"), r"unknown config key 'train\.epoch'.*did you mean 'epochs'"),
    ("unknown_data_kwarg", _set("data.kwargs={bogus: 1}"), r"unknown option.*'bogus'.*data\.kwargs"),
    ("unknown_model_kwarg", _set("model.kwargs={bogus: 1}"), r"model\.kwargs.*bogus"),
    ("override_without_value", _set("train.epochs"), r"expected key=value"),
    ("wrong_type", _set("train.epochs=abc"), r"train\.epochs.*'abc'.*int"),
    ("override_bad_yaml", _set("train.decay_milestones=[1, 2"), r"not valid YAML"),
    ("config_missing", lambda ws: ["--config", str(ws / "nope.yaml")], r"nope\.yaml.*does not exist"),
    ("config_bad_yaml", lambda ws: ["--config", str(ws / "bad.yaml")], r"bad\.yaml.*not valid YAML"),
    ("config_duplicate_key", lambda ws: ["--config", str(ws / "dup.yaml")], r"duplicate key 'epochs'"),
    ("config_not_a_mapping", lambda ws: ["--config", str(ws / "list.yaml")], r"mapping"),
    ("data_name_unknown", _set("data.name=cifar11"), r"unknown data set 'cifar11'.*cifar10"),
    ("model_name_unknown", _set("model.name=convnet_d9"), r"unknown model 'convnet_d9'"),
    # --- referenced files and data
    ("cifar_root_missing", _set("data.name=cifar10", "data.root=/nonexistent/place"), r"/nonexistent/place"),
    ("imagefolder_root_missing", _set("data.name=imagefolder", "data.root=/nonexistent/if"), r"/nonexistent/if"),
    ("model_checkpoint_missing", _set("model.checkpoint=/nonexistent/w.safetensors"),
     r"model\.checkpoint.*does not exist"),
    ("model_checkpoint_corrupt", _set(lambda ws: f"model.checkpoint={ws / 'corrupt.safetensors'}"),
     r"corrupt\.safetensors.*corrupt or truncated"),
    ("teacher_checkpoint_missing", _set("method.name=nkd", "method.teacher_checkpoint=/nonexistent/t.pth"),
     r"method\.teacher_checkpoint.*does not exist"),
    ("one_class_imagefolder", _data(_if, "if_one"), r"1 class.*at least 2"),
    ("one_class_subset", _set("data.kwargs={classes: [4]}"), r"1 class.*at least 2"),
    ("png_truncated", _data(_if, "if_truncated"), r"cannot read image .*c0/1\.png.*truncated"),
    ("png_random_bytes", _data(_if, "if_random"), r"cannot read image .*c0/1\.png"),
    ("png_text_file", _data(_if, "if_text"), r"cannot read image .*c0/1\.png"),
    ("cifar_truncated", _data(_cifar, "cifar_truncated"), r"data_batch_2.*truncated"),
    ("cifar_malicious", _data(_cifar, "cifar_malicious"), r"data_batch_2.*refusing to load global .*system"),
    # --- output folders
    ("output_holds_a_run", lambda ws: ["--set", f"output={ws / 'other'}", *SMALL],
     r"already holds a run.*--resume.*overwrite=true"),
    ("output_under_a_file", lambda ws: ["--set", f"output={ws / 'afile' / 'run'}", *ONE],
     r"cannot create output folder"),
    ("output_unwritable", lambda ws: ["--set", f"output={ws / 'ro' / 'run'}", *ONE], r"ro/run"),
    # --- resume
    ("resume_missing", lambda ws: ["--resume", str(ws / "nope" / CKPT)], r"does not exist"),
    ("resume_corrupt", lambda ws: ["--resume", str(ws / "corrupt.safetensors")], r"corrupt or truncated"),
    ("resume_distill_checkpoint", lambda ws: ["--resume", str(ws / "distill.safetensors")],
     r"not a training checkpoint.*vsd-distill-progress"),
    ("resume_into_another_run", _resume(lambda ws: f"output={ws / 'other'}"), r"output.*folder of its checkpoint"),
    ("resume_changed_lr", _resume("train.lr=0.1"), r"changed train\.lr"),
    ("resume_changed_batch_size", _resume("train.batch_size=64"), r"changed train\.batch_size"),
    ("resume_ema_on", _resume("train.ema=true"), r"changed train\.ema"),
    ("resume_other_model", _resume("model.name=convnet_d2"), r"changed model\.name"),
    ("resume_other_width", _resume("model.kwargs={net_width: 16}"), r"changed model\.kwargs"),
    ("resume_other_method", _resume("method.name=pskd"), r"changed .*method\.name"),
    ("resume_config_of_another_model", _resume(config="other_model.yaml"), r"changed .*model\.name"),
    ("resume_epochs_below_done", _resume("train.epochs=1"), r"train\.epochs.*below the 2 epoch"),
]


@pytest.mark.parametrize("argv, pattern", [pytest.param(a, p, id=i) for i, a, p in CASES])
def test_train_bad_input(ws, capsys, argv, pattern):
    args = argv(ws)
    skip_if_read_only_is_writable(ws, args)
    own = ws / "out"
    before = fingerprint(ws, skip=[own])
    code = tool_main("train", *args)
    assert_one_error_line(code, capsys.readouterr().err, pattern)
    assert fingerprint(ws, skip=[own]) == before
    assert not (ws / "pwned").exists() and not (ws / "data" / "cifar_malicious" / "pwned").exists()
    shutil.rmtree(own, ignore_errors=True)


def test_python_api_validates_a_config_built_in_python(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size.*>= 1"):
        train(Config(output=str(tmp_path / "o"), train=TrainConfig(batch_size=0)))
    assert not (tmp_path / "o").exists()


def test_cifar_image_size_beyond_free_memory_is_refused_before_allocating():
    from vsd.data.cifar import _check_memory

    with pytest.raises(ValueError, match=r"CIFAR-10 at image_size 2048 needs about 1171\.9 GiB"):
        _check_memory("CIFAR-10", 50000, 2048)
    _check_memory("CIFAR-10", 50000, 32)  # the native size is never refused


def test_an_error_from_a_loader_worker_is_shown_as_its_original_line():
    from vsd.cli import one_line

    err = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                     "last):\n  File \"x.py\", line 1, in f\nValueError: imagefolder: cannot read image a/1.png: "
                     "image file is truncated\n")
    assert one_line(err) == "imagefolder: cannot read image a/1.png: image file is truncated"
    assert one_line(OSError("two\nlines")) == "two lines"
