"""``tools/smoke.py`` loaded as a module (it is a script, not part of the vsd package)."""
import importlib.util
import sys
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[2] / "tools" / "smoke.py"


def smoke_module():
    """The module object of ``tools/smoke.py`` (loaded once)."""
    if "vsd_tools_smoke" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vsd_tools_smoke", SMOKE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["vsd_tools_smoke"] = module
        spec.loader.exec_module(module)
    return sys.modules["vsd_tools_smoke"]


def cpu_trainer(case, tmp_path: Path):
    """A CPU :class:`~vsd.engine.trainer.Trainer` for one of the smoke tool's ``METHOD_CASES`` and its first batch
    (the tasks' step and hook tests drive ``trainer.task`` by hand)."""
    from vsd.config import load_config
    from vsd.engine.trainer import Trainer

    cfg = load_config(None, case.config_overrides(tmp_path / "files") + [f"output={tmp_path / 'run'}",
                                                                         "train.device=cpu"])
    trainer = Trainer(cfg)
    return trainer, next(iter(trainer.loader))
