"""tools/seeds.py: mean and sample std over seeds, and reuse of finished seed folders."""
import importlib.util
import json
from pathlib import Path

import pytest

SEEDS = Path(__file__).resolve().parents[1] / "tools" / "seeds.py"


def _tool():
    spec = importlib.util.spec_from_file_location("vsd_tools_seeds", SEEDS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summarize_by_hand():
    out = _tool().summarize([{"eval_top1": 90.0, "epochs": 3}, {"eval_top1": 94.0}, {"eval_top1": 95.0}])
    assert set(out) == {"eval_top1"}
    assert out["eval_top1"]["mean"] == pytest.approx(93.0)
    assert out["eval_top1"]["std"] == pytest.approx(((9 + 1 + 4) / 2) ** 0.5)  # sample std


def test_finished_seeds_are_reused_not_rerun(tmp_path):
    for seed, top1 in ((0, 91.0), (1, 93.0)):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps({"eval_top1": top1}))
    assert _tool().main(["--seeds", "0", "1", "--set", f"output={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["metrics"]["eval_top1"]["values"] == [91.0, 93.0]
