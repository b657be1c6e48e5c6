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
