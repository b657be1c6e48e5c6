"""``tools/distill.py`` with probes, for the 2-process gloo tests (run under ``torchrun``; not a test module).

Environment: ``VSD_PROBE_DIR`` (required) receives ``writes_rank{R}.txt`` (every file this rank replaced
atomically) and ``rank{R}_it{I}.safetensors`` (the synthetic tensors this rank holds at each checkpoint);
``VSD_PROBE_STOP_AT=I`` makes every rank exit (status 3) right after the checkpoint of iteration I, as a kill.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from vsd.distill import krr_st, mtt  # noqa: E402

PROBE = Path(os.environ["VSD_PROBE_DIR"])
RANK = int(os.environ.get("RANK", "0"))
STOP_AT = int(os.environ.get("VSD_PROBE_STOP_AT", "-1"))
_replace = os.replace


def _logged_replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(PROBE / f"writes_rank{RANK}.txt", "a", encoding="utf-8") as f:
        f.write(f"{dst}\n")


def _probed(save):
    def wrapper(path, iteration, tensors, *args, **kwargs):
        save(path, iteration, tensors, *args, **kwargs)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(PROBE / f"rank{RANK}_it{iteration}.safetensors"))
        if iteration == STOP_AT:
            if dist.is_initialized():
                dist.barrier()  # rank 0 has written the checkpoint
            sys.exit(3)
    return wrapper


os.replace = _logged_replace
mtt.save_progress = _probed(mtt.save_progress)
krr_st.save_progress = _probed(krr_st.save_progress)

if __name__ == "__main__":
    import importlib.util

    spec = importlib.util.spec_from_file_location("vsd_distill_tool", ROOT / "tools" / "distill.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sys.exit(tool.main(sys.argv[1:]))
