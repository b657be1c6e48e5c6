"""tools/report.py: tables equal hand-computed mean ± std, figures written, re-evaluated ECE equals the logged one,
long-tailed and distillation sections, and the tables-only path when matplotlib cannot be imported."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPORT = Path(__file__).resolve().parents[1] / "tools" / "report.py"


def _tool():
    spec = importlib.util.spec_from_file_location("vsd_tools_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_run(folder: Path, seed: int, top1: list, ece: float, probes: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "eval_top1": top1[-1], "eval_ece": ece, "seed": seed, "method": "ce", "dataset": "digits",
        "model": "m", "epochs": len(top1), "label_noise": {"rate": 0.4}}))
    header = "epoch,train_loss,eval_top1,eval_ece,lr" + (",probe_student_linear,probe_teacher_linear" if probes else "")
    rows = [header]
    for epoch, acc in enumerate(top1, 1):
        row = f"{epoch},{2.0 / epoch},{acc},{ece},0.1"
        rows.append(row + (f",{50 + epoch},{40}" if probes else ""))
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def groups(tmp_path):
    _fake_run(tmp_path / "ce" / "seed0", 0, [80.0, 90.0, 85.0], 10.0)
    _fake_run(tmp_path / "ce" / "seed1", 1, [82.0, 92.0, 89.0], 14.0)
    _fake_run(tmp_path / "ce" / "seed2", 2, [81.0, 95.0, 93.0], 12.0)
    _fake_run(tmp_path / "kd" / "seed0", 0, [70.0, 91.0, 91.0], 5.0, probes=True)
    return tmp_path


def test_group_tables_equal_hand_computed_mean_and_sample_std(groups, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # tables only: fast
    tool = _tool()
    path = tool.write_report(tool.load_entries([f"CE={groups / 'ce'}", f"KD={groups / 'kd'}"], group=True),
                             groups / "rep", "t")
    text = path.read_text()
    # CE final top-1 85, 89, 93 -> mean 89, sample std 4; ECE 10, 14, 12 -> 12 ± 2; best epoch 90, 92, 95.
    ce_row = next(line for line in text.splitlines() if line.startswith("| CE | 3 |"))
    assert ce_row.split(" | ")[2:4] == ["89.00 ± 4.00", "12.00 ± 2.00"]
    assert ce_row.rstrip(" |").endswith("92.33 ± 2.52")  # best-epoch top-1: mean(90, 92, 95), stdev = 2.517
    assert "| KD | 1 | 91.00 | 5.00 |" in text
    assert "| **mean ± std** |  | 89.00 ± 4.00 | 12.00 ± 2.00 |" in text
    assert '{"label_noise": {"rate": 0.4}}' in text


@pytest.mark.slow
def test_figures_written(groups):
    tool = _tool()
    text = tool.write_report(tool.load_entries([f"CE={groups / 'ce'}", f"KD={groups / 'kd'}"], group=True),
                             groups / "rep", "t").read_text()
    for name in ("curves.png", "probes.png"):
        assert (groups / "rep" / name).stat().st_size > 1000, name
        assert f"({name})" in text
    assert not (groups / "rep" / "reliability.png").exists()  # fake runs have no model to re-evaluate


def test_without_matplotlib_tables_only_with_one_notice(groups, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    tool = _tool()
    path = tool.write_report(tool.load_entries([str(groups / "ce")], group=True), groups / "rep", "t")
    text = path.read_text()
    assert "89.00 ± 4.00" in text and "Figures skipped: matplotlib is not installed" in text
    assert list((groups / "rep").glob("*.png")) == []
    notice = [line for line in capsys.readouterr().out.splitlines() if "matplotlib" in line]
    assert len(notice) == 1


def test_group_from_a_glob(groups, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    tool = _tool()
    entries = tool.load_entries([f"G={groups / 'ce' / 'seed[01]'}"], group=True)
    assert entries[0].label == "G" and [r.path.name for r in entries[0].runs] == ["seed0", "seed1"]


def test_seed_read_from_config_when_results_lack_it(groups):
    results = groups / "ce" / "seed1" / "results.json"
    data = json.loads(results.read_text())
    del data["seed"]
    results.write_text(json.dumps(data))
    (results.parent / "config.yaml").write_text("seed: 7\n")
    assert _tool().load_run(results.parent).results["seed"] == 7


def test_bad_folder_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match="error: .* holds no finished runs"):
        _tool().load_entries([str(tmp_path)], group=True)
    with pytest.raises(SystemExit, match="error: .* is not a finished run"):
        _tool().load_entries([str(tmp_path)], group=False)


def test_distillation_series_and_grid(tmp_path):
    from vsd.engine.checkpoint import save_checkpoint

    run = tmp_path / "mtt"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"method": "mtt", "syn_lr": 0.01,
                                                  "eval_distilled": {"mean": 90.0, "accs": [88.0, 92.0]}}))
    (run / "distilled.safetensors").write_bytes(b"")
    save_checkpoint(run / "checkpoint.safetensors", {"kind": "x", "extra": {"history": [3.0, 2.0, 1.5],
                                                                             "clamped": 0}})
    from PIL import Image
    Image.new("RGB", (8, 8)).save(run / "grid_all.png")
    tool = _tool()
    assert tool.distill_series(tool.load_run(run)) == {"matching loss": [3.0, 2.0, 1.5]}
    text = tool.write_report(tool.load_entries([str(run)], group=False), tmp_path / "rep", "t").read_text()
    assert "| mtt | 1 | 90.00 |" in text
    assert "| mtt | distilled | 90.00 ± 2.00 | 2 | 90.0 |" in text  # population std of 88, 92
    assert (tmp_path / "rep" / "distill.png").is_file() and (tmp_path / "rep" / "grid_mtt.png").is_file()


def test_reliability_bins_by_hand():
    conf = torch.tensor([0.05, 0.95, 0.95, 0.5])
    correct = torch.tensor([False, True, False, True])
    count, mean_conf, acc, ece = _tool().reliability(conf, correct)
    assert sum(count) == 4 and count[0] == 1 and count[14] == 2 and count[7] == 1
    assert acc[14] == pytest.approx(50.0) and mean_conf[14] == pytest.approx(0.95)
    # |0.05 - 0| + 2 * |0.95 - 0.5| + |0.5 - 1|, over 4 samples
    assert ece == pytest.approx((0.05 + 0.9 + 0.5) / 4 * 100)


@pytest.mark.slow
def test_real_long_tailed_run_recomputed_ece_matches_the_logged_one(tmp_path):
    from vsd.config import config_from_dict
    from vsd.engine.trainer import train

    cfg = config_from_dict({
        "output": str(tmp_path / "run"), "data": {"name": "digits", "kwargs": {
            "samples_per_class": [120, 120, 60, 60, 30, 30, 10, 10, 5, 5]}},
        "model": {"name": "convnet_d1", "kwargs": {"net_width": 4}}, "train": {"epochs": 1, "batch_size": 32}})
    logged = train(cfg)["eval_ece"]
    tool = _tool()
    entries = tool.load_entries([str(tmp_path / "run")], group=False)
    text = tool.write_report(entries, tmp_path / "rep", "t").read_text()
    run = entries[0].runs[0]
    assert run.eval["class_counts"] == [120, 120, 60, 60, 30, 30, 10, 10, 5, 5]
    assert tool.reliability(run.eval["conf"], run.eval["pred"] == run.eval["labels"])[3] == pytest.approx(logged,
                                                                                                            abs=1e-3)
    assert "many (>100)" in text and "| 2/4/4 |" in text
    for name in ("reliability.png", "per_class.png", "curves.png"):
        assert (tmp_path / "rep" / name).is_file()
