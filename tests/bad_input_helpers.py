"""Shared helpers of the bad-input tables: run a tool's main() in this process, check the one error line,
and fingerprint folders to prove nothing outside a run's own folder was touched."""
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128"]
#: TINY on three digit classes (~430 images, 3 steps per epoch): a 2-epoch run takes about a second.
SMALL = TINY + ["data.kwargs={classes: [0, 1, 2]}", "train.epochs=2"]


def tool_main(name: str, *args: str) -> int:
    """Call tools/<name>.py's main(argv) in this process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(f"vsd_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def fingerprint(root: Path, skip: Iterable[Path] = ()) -> Dict[str, Tuple[str, int]]:
    """{relative path: (sha256, mode)} of every file under ``root`` except those under ``skip``."""
    skipped = [Path(s).resolve() for s in skip]
    out = {}
    for path in sorted(Path(root).rglob("*")):
        real = path.resolve()
        if any(real == s or s in real.parents for s in skipped) or not path.is_file():
            continue
        out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return out


def assert_one_error_line(code: int, stderr: str, pattern: Optional[str]) -> str:
    """Exit status 2 and exactly one stderr line, ``error: ...`` matching ``pattern``; returns the line."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    if pattern:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]
