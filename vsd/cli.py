"""Shared command-line plumbing for ``tools/*.py``: config loading and the error boundary.

Every tool runs its work inside :func:`error_boundary`: an *expected* failure - bad config (key, type, range,
device), bad data (missing/corrupt files, refused pickles), a bad or foreign checkpoint, an unwritable output,
a diverged run - becomes one ``error: ...`` line on stderr and exit status 2. Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple

from vsd.config import Config, ConfigError, load_config

#: Errors caused by what the user handed in (config, files, data); shown as one line, without a traceback.
USER_ERRORS: Tuple[type, ...] = (ConfigError, ValueError, OSError, ImportError, pickle.UnpicklingError)


def expected_errors() -> Tuple[type, ...]:
    """:data:`USER_ERRORS` plus checkpoint, safetensors, divergence and out-of-memory failures."""
    import torch
    from safetensors import SafetensorError

    from vsd.engine.checkpoint import CheckpointError
    from vsd.engine.trainer import TrainingDiverged

    return USER_ERRORS + (CheckpointError, SafetensorError, TrainingDiverged, torch.OutOfMemoryError, MemoryError)


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message: only its last line (the original error) is kept."""
    text = str(err).strip() or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    return " ".join(lines)


def error_boundary(work: Callable[[], Optional[int]]) -> int:
    """Run ``work()``; its return value (default 0) is the exit status, an expected error gives
    ``error: <one line>`` on stderr and status 2."""
    try:
        return work() or 0
    except expected_errors() as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def resolve_config(config: Optional[str], overrides: Sequence[str], resume: Optional[str],
                   default: Path) -> Config:
    """``--config`` (or the checkpoint's config when resuming, or the default recipe) + ``--set``."""
    if resume:
        from vsd.engine.trainer import config_for_resume

        return config_for_resume(resume, overrides, config)
    from vsd.data.distilled import apply_export_recipe, explicit_keys

    cfg = load_config(config or default, overrides)
    return apply_export_recipe(cfg, explicit=explicit_keys(config, overrides))  # data.name=distilled only


def run_cli(config: Optional[str], overrides: Sequence[str], resume: Optional[str], default: Path,
            job: Callable[[Config], Any]) -> int:
    """Run ``job(cfg)`` inside :func:`error_boundary` (exit status 0 when it returns)."""
    def work() -> int:
        job(resolve_config(config, overrides, resume, default))
        return 0

    return error_boundary(work)
