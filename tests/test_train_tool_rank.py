"""tools/train.py under torchrun: only rank 0 prints the final line (every rank runs the same main())."""
import pytest

from tests.test_cli import TINY, train_main


@pytest.mark.parametrize("rank,printed", [("0", 1), ("1", 0)])
def test_final_line_printed_by_rank_zero_only(rank, printed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", rank)  # what torchrun sets; the run itself stays single-process here
    assert train_main("--set", *TINY, "train.epochs=1", f"output={tmp_path}") == 0
    assert capsys.readouterr().out.count("final top-1") == printed
