#!/usr/bin/env python
"""Distill a data set from a YAML recipe: expert buffer (cached) -> distillation -> evaluation -> export.

    python tools/distill.py                                          # default: MTT, digits, 1 image per class
    python tools/distill.py --config zoo/mtt/digits_ipc10.yaml --set seed=1 distill.backend=constant_memory
    torchrun --nproc_per_node=2 tools/distill.py --config ...        # experts and trajectories over ranks

Writes into ``output``: config.yaml, checkpoint.safetensors (re-running the same command after a kill resumes
exactly where it stopped), distilled.safetensors + distilled.json, grid_*.png, imagefolder/, results.json.
A finished output folder is refused unless ``overwrite=true`` (which starts over).
Exit status: 0 done, 1 distillation diverged (the last good set is still evaluated and exported), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsd.cli import run_cli  # noqa: E402

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "zoo" / "mtt" / "digits_ipc1.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe (default: zoo/mtt/digits_ipc1.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    args = parser.parse_args(argv)
    status = {}

    def job(cfg):
        from vsd.config import save_config
        from vsd.distill import run_distiller
        from vsd.engine.distributed import DistEnv, shutdown
        from vsd.engine.io import atomic_write_json, remove_stale_temporaries
        from vsd.engine.preflight import check_inputs
        from vsd.engine.run_folder import check_distill_rerun

        if cfg.distill is None:
            raise ValueError("the config has no 'distill' section; set distill.method (e.g. mtt)")
        check_inputs(cfg)  # values, device, data set, model, referenced files: before any work
        out = Path(cfg.output)
        if (out / "results.json").exists() and not cfg.overwrite:
            raise FileExistsError(f"output folder {str(out)!r} already holds a finished run; set overwrite=true "
                                  "or choose another output")
        check_distill_rerun(out, cfg)
        main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the files
        if main_rank:
            remove_stale_temporaries(out)
        out.mkdir(parents=True, exist_ok=True)
        if main_rank:  # the distillers pass a barrier before they look for a checkpoint
            if cfg.overwrite:
                for name in ("checkpoint.safetensors", "results.json"):
                    (out / name).unlink(missing_ok=True)
            save_config(cfg, out / "config.yaml")
        try:
            results = run_distiller(cfg, out)
        finally:  # end the process group before exit (a gloo group left to interpreter teardown may abort)
            shutdown(DistEnv(world_size=int(os.environ.get("WORLD_SIZE", "1"))))
        if not main_rank:
            return results
        atomic_write_json(out / "results.json", results)
        status["diverged"] = results.get("status") == "diverged"
        summary = {k: results[k] for k in results if k.startswith("eval_") or k == "expert_full_data"}
        print(json.dumps({k: (round(v["mean"], 2), round(v["std"], 2)) for k, v in summary.items()}))
        print(f"done: {out}/results.json")
        return results

    code = run_cli(args.config, args.set, None, DEFAULT_RECIPE, job)
    return 1 if code == 0 and status.get("diverged") else code


if __name__ == "__main__":
    sys.exit(main())
