"""tools/smoke.py on CPU with tiny settings: every row passes, the table is printed, a failure exits 1.

Default suite: CE on both on-disk formats and MTT; the full tiny run (every method on both formats, every
distiller and every CIFAR zoo recipe at its real model and image size) is slow-marked.
"""
import pytest

from tests.engine.smoke_tool import smoke_module


def _run(capsys, *argv):
    code = smoke_module().main(["--device", "cpu", "--tiny", *argv])
    return code, capsys.readouterr().out


def test_fast_subset_passes_and_prints_the_table(capsys, tmp_path):
    code, out = _run(capsys, "--sections", "methods", "distill", "--only", "ce/", "mtt_unroll",
                     "--out", str(tmp_path))
    assert code == 0, out[-3000:]
    table = out[out.index("smoke table on cpu"):]
    for name in ("ce/cifar", "ce/imagefolder", "mtt_unroll"):
        assert any(line.split()[1:3] == [name, "pass"] for line in table.splitlines()[2:]), (name, table)
    assert "3/3 passed" in table


def test_a_failing_run_exits_nonzero(capsys, tmp_path, monkeypatch):
    smoke = smoke_module()
    broken = smoke.MethodCase("broken", ["model.name=no_such_model"])
    monkeypatch.setattr(smoke, "METHOD_CASES", [broken])
    code, out = _run(capsys, "--sections", "methods", "--formats", "cifar", "--out", str(tmp_path))
    assert code == 1
    assert "broken/cifar" in out and "FAIL" in out and "0/1 passed" in out


def test_no_matching_row_is_a_failure(capsys, tmp_path):
    code, out = _run(capsys, "--sections", "distill", "--only", "nothing-matches", "--out", str(tmp_path))
    assert code == 1 and "0/0 passed" in out


@pytest.mark.slow
def test_everything_passes_on_cpu_tiny(capsys, tmp_path):
    code, out = _run(capsys, "--out", str(tmp_path))
    assert code == 0, out[-5000:]
    assert "FAIL" not in out[out.index("smoke table on cpu"):]
