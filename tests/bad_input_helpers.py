"""Shared helpers of the bad-input tables: run a tool's main() in this process, check the one error line,
and fingerprint folders to prove nothing outside a run's own folder was touched."""
import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import pytest

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


def skip_if_read_only_is_writable(ws: Path, args: Iterable[str]) -> None:
    """Cases that write into ``ws/ro`` (a read-only folder) mean nothing for a user who may write there anyway."""
    if any(str(ws / "ro") in a for a in args) and os.access(ws / "ro", os.W_OK):
        pytest.skip("this user (root) may write into read-only folders")


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


CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


class _Exploit:
    """A pickle that would run a shell command if a plain unpickler loaded it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def write_cifar10(root: Path, damage: Optional[str] = None) -> Path:
    """A tiny CIFAR-10 folder in torchvision's layout (20 images per batch); ``damage``: ``truncated`` cuts
    data_batch_2 in half, ``malicious`` replaces it with a code-running pickle."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR10_FILES:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    target = folder / "data_batch_2"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "malicious":
        target.write_bytes(pickle.dumps({"data": _Exploit(root / "pwned"), "labels": [0]}, protocol=2))
    return root


def write_imagefolder(root: Path, classes: int = 2, damage: Optional[str] = None) -> Path:
    """A ``train/`` + ``test/`` class-per-folder tree of 8x8 grayscale PNGs (3 per class and split); ``damage``
    (in train/c0/1.png): ``truncated`` (a PNG cut in half), ``random`` (random bytes), ``text`` (a text file)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(3):
                image = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
                image.save(root / split / f"c{c}" / f"{i}.png")
    bad = root / "train" / "c0" / "1.png"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "random":
        bad.write_bytes(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    elif damage == "text":
        bad.write_text("this is not an image\n")
    return root
