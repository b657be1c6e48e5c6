"""tools/probe.py bad-input table: exit status 2, one ``error:`` line, nothing written anywhere."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.bad_input_helpers import (SMALL, assert_one_error_line, fingerprint, skip_if_read_only_is_writable,
                                     tool_main)
from vsd.config import load_config, save_config
from vsd.engine.trainer import train
from vsd.models import create_network


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pws")
    train(load_config(None, SMALL + [f"output={root / 'run'}"]))
    wide = create_network("convnet_d1", {"net_width": 16}, 3, 1, 8)
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(root / "wide.safetensors"))
    torch.save({"w": torch.zeros(2)}, root / "pickle.safetensors")
    torch.save({"w": torch.zeros(2)}, root / "weights.pth")
    (root / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    distill = root / "distill_run"
    distill.mkdir()
    save_config(load_config(None, ["distill.method=mtt", f"output={distill}"]), distill / "config.yaml")
    (root / "afile").write_text("a file\n")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    return root


def _run(*extra):
    return lambda ws: ["--run", str(ws / "run"), *[e(ws) if callable(e) else e for e in extra]]


CASES = [
    ("no_run_no_config", lambda ws: [], r"pass --run .* or --config"),
    ("run_missing", lambda ws: ["--run", str(ws / "nope")], r"--run .*nope.*not a folder"),
    ("distillation_folder", lambda ws: ["--run", str(ws / "distill_run")], r"distillation config"),
    ("weights_missing", _run("--weights", "/nonexistent/w.safetensors"), r"w\.safetensors.*do not exist"),
    ("weights_corrupt", _run("--weights", lambda ws: str(ws / "corrupt.safetensors")), r"corrupt or truncated"),
    ("weights_pickle_named_safetensors", _run("--weights", lambda ws: str(ws / "pickle.safetensors")),
     r"pickle\.safetensors.*(corrupt|not a readable)"),
    ("weights_pickle_pth", _run("--weights", lambda ws: str(ws / "weights.pth")),
     r"weights\.pth.*not a readable safetensors"),
    ("weights_of_another_model", _run("--weights", lambda ws: str(ws / "wide.safetensors")),
     r"do not fit model convnet_d1.*of another shape"),
    ("key_missing", _run("--weights", lambda ws: str(ws / "run" / "checkpoint-last.safetensors"),
                         "--key", "task.teacher"), r"no entry 'task\.teacher'"),
    ("key_not_weights", _run("--weights", lambda ws: str(ws / "run" / "checkpoint-last.safetensors"),
                             "--key", "epoch"), r"entry 'epoch'.*not a set of weights"),
    ("strip_prefix_matches_nothing", _run("--strip-prefix", "nothing."), r"no weight .* starts with 'nothing\.'"),
    ("k_zero", _run("--k", "0"), r"--k must be >= 1"),
    ("k_beyond_the_data", _run("--k", "100000"), r"--k 100000 exceeds the \d+ training samples"),
    ("layer_unknown", _run("--layer", "blocks.9"), r"no layer 'blocks\.9'.*available layers"),
    ("set_bad_value", _run("--set", "data.image_size=100000"), r"data\.image_size"),
    ("set_unknown_key", _run("--set", "data.nme=x"), r"unknown config key 'data\.nme'"),
    ("output_under_a_file", _run("--output", lambda ws: str(ws / "afile" / "r.json")), r"cannot be written"),
    ("output_unwritable", _run("--output", lambda ws: str(ws / "ro" / "r.json")), r"cannot be written"),
]


@pytest.mark.parametrize("argv, pattern", [pytest.param(a, p, id=i) for i, a, p in CASES])
def test_probe_bad_input(ws, capsys, argv, pattern):
    args = argv(ws)
    skip_if_read_only_is_writable(ws, args)
    before = fingerprint(ws)
    code = tool_main("probe", *args)
    assert_one_error_line(code, capsys.readouterr().err, pattern)
    assert fingerprint(ws) == before
