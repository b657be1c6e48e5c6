"""tools/distill.py bad-input table: exit status 2, one ``error:`` line, no folder but the run's own touched;
and an unfinished distillation folder resumes only with the config it was started with."""
import shutil
from pathlib import Path

import pytest

from tests.bad_input_helpers import (assert_one_error_line, fingerprint, skip_if_read_only_is_writable, tool_main,
                                     write_cifar10, write_imagefolder)
from vsd.config import ConfigError, load_config, save_config
from vsd.engine.run_folder import check_distill_rerun

BASE = ["data.name=digits", "model.name=convnet_d1", "model.kwargs={net_width: 4}", "train.device=cpu",
        "distill.method=mtt", "distill.ipc=1", "distill.iterations=2", "distill.syn_steps=2",
        "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
        "distill.expert_train_epochs=1", "distill.eval_nets=0", "distill.progress=false",
        "distill.export_imagefolder=false"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dws")
    write_imagefolder(root / "data" / "if_one", classes=1)
    write_cifar10(root / "data" / "cifar_truncated", "truncated")
    (root / "dup.yaml").write_text("distill:\n  method: mtt\n  ipc: 1\n  ipc: 2\n")
    (root / "train_recipe.yaml").write_text("model:\n  name: convnet_d1\n")
    (root / "afile").write_text("a file\n")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    finished = root / "finished"
    finished.mkdir()
    (finished / "results.json").write_text("{}\n")
    unfinished = root / "unfinished"  # a distillation killed after its first progress checkpoint
    unfinished.mkdir()
    save_config(load_config(None, BASE + [f"output={unfinished}", f"distill.buffer_dir={root / 'buffers'}"]),
                unfinished / "config.yaml")
    (unfinished / "checkpoint.safetensors").write_bytes(b"progress")
    return root


def _set(*items, output="out"):
    return lambda ws: ["--set", *BASE, f"distill.buffer_dir={ws / 'buffers'}", f"output={ws / output}",
                       *[i(ws) if callable(i) else i for i in items]]


CASES = [
    ("config_missing", lambda ws: ["--config", str(ws / "nope.yaml")], r"nope\.yaml.*does not exist"),
    ("config_duplicate_key", lambda ws: ["--config", str(ws / "dup.yaml")], r"duplicate key 'ipc'"),
    ("no_distill_section", lambda ws: ["--config", str(ws / "train_recipe.yaml")], r"no 'distill' section"),
    ("method_unknown", _set("distill.method=bogus"), r"distill\.method.*'bogus'"),
    ("unknown_key", _set("distill.ipcc=3"), r"unknown config key 'distill\.ipcc'.*'ipc'"),
    ("lr_img_nan", _set("distill.lr_img=.nan"), r"distill\.lr_img.*finite"),
    ("wrong_type", _set("distill.ipc=many"), r"distill\.ipc.*'many'.*int"),
    ("device_gpu", _set("train.device=gpu"), r"train\.device.*'gpu'"),
    ("device_unavailable", _set("train.device=cuda:99"), r"train\.device.*not available"),
    ("image_size_huge", _set("data.image_size=100000"), r"data\.image_size.*<= 2048"),
    ("unknown_data_kwarg", _set("data.kwargs={bogus: 1}"), r"'bogus'.*data\.kwargs"),
    ("unknown_model_kwarg", _set("model.kwargs={bogus: 1}"), r"model\.kwargs.*bogus"),
    ("model_unknown", _set("model.name=convnet_d9"), r"unknown model 'convnet_d9'"),
    ("data_unknown", _set("data.name=cifar11"), r"unknown data set 'cifar11'"),
    ("one_class_data", _set("data.name=imagefolder", lambda ws: f"data.root={ws / 'data' / 'if_one'}",
                            "data.image_size=8"), r"1 class.*at least 2"),
    ("cifar_truncated", _set("data.name=cifar10", lambda ws: f"data.root={ws / 'data' / 'cifar_truncated'}",
                             "data.image_size=8"), r"data_batch_2.*truncated"),
    ("tm_export_missing", _set("distill.method=krr_st", "distill.transfer.tm_export=/nonexistent/export"),
     r"distill\.transfer\.tm_export.*does not exist"),
    ("finished_folder", _set(output="finished"), r"already holds a finished run.*overwrite=true"),
    ("unfinished_other_config", _set("seed=1", "distill.lr_img=50", output="unfinished"),
     r"unfinished distillation started with another config.*distill\.lr_img.*seed.*overwrite=true"),
    ("output_under_a_file", _set(output="afile/run"), r"afile/run"),
    ("output_unwritable", _set(output="ro/run"), r"ro/run"),
]


@pytest.mark.parametrize("argv, pattern", [pytest.param(a, p, id=i) for i, a, p in CASES])
def test_distill_bad_input(ws, capsys, argv, pattern):
    args = argv(ws)
    skip_if_read_only_is_writable(ws, args)
    own = ws / "out"
    before = fingerprint(ws, skip=[own, ws / "buffers"])
    code = tool_main("distill", *args)
    assert_one_error_line(code, capsys.readouterr().err, pattern)
    assert fingerprint(ws, skip=[own, ws / "buffers"]) == before
    shutil.rmtree(own, ignore_errors=True)


def test_unfinished_folder_resumes_with_its_own_config_or_overwrite(ws):
    unfinished = ws / "unfinished"
    same = load_config(None, BASE + [f"output={unfinished}", f"distill.buffer_dir={ws / 'buffers'}"])
    check_distill_rerun(unfinished, same)  # the same config resumes
    check_distill_rerun(unfinished, load_config(None, BASE + [f"output={unfinished}", "distill.progress=true",
                                                              f"distill.buffer_dir={ws / 'buffers'}"]))
    other = load_config(None, BASE + [f"output={unfinished}", "distill.ipc=2", f"distill.buffer_dir={ws / 'b'}"])
    with pytest.raises(ConfigError, match=r"distill\.buffer_dir.*distill\.ipc"):
        check_distill_rerun(unfinished, other)
    check_distill_rerun(unfinished, load_config(None, BASE + [f"output={unfinished}", "distill.ipc=2",
                                                              "overwrite=true"]))  # starting over is asked for
