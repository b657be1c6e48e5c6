"""torchrun worker for the distributed tests: train a config, then record what this rank holds and wrote.

    python -m torch.distributed.run --nproc_per_node=2 tests/engine/ddp_worker.py REPORT_DIR --set k=v ...

Writes ``REPORT_DIR/rank{r}.safetensors`` (every parameter of the task, by name) and ``REPORT_DIR/rank{r}.json``
(the files this rank opened for writing or renamed into the run's output folder, seen through Python's audit
hooks; safetensors writes through a temporary file that is then renamed, so renames catch it).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    report = Path(sys.argv[1])
    overrides = sys.argv[3:] if sys.argv[2:3] == ["--set"] else sys.argv[2:]
    from safetensors.torch import save_file

    from vsd.config import load_config
    from vsd.engine.trainer import Trainer

    cfg = load_config(None, overrides)
    out = str(Path(cfg.output).resolve())
    written = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(out):
            mode = args[1] or ""
            if any(c in str(mode) for c in "wax+") or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR)):
                written.append(os.path.basename(args[0]))
        elif event == "os.rename" and str(args[1]).startswith(out):
            written.append(os.path.basename(str(args[1])))

    sys.addaudithook(audit)
    trainer = Trainer(cfg)
    try:
        trainer.fit()
        rank = trainer.env.rank
        params = {name: p.detach().clone().contiguous() for name, p in trainer.task.named_parameters()}
    finally:
        trainer.close()
    report.mkdir(parents=True, exist_ok=True)
    save_file(params, str(report / f"rank{rank}.safetensors"))
    (report / f"rank{rank}.json").write_text(json.dumps({"written": written}))


if __name__ == "__main__":
    main()
