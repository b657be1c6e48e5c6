"""Shared command-line plumbing for ``tools/*.py``: config loading and one-line errors for bad input."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from vsd.config import Config, ConfigError, load_config

#: Errors caused by what the user handed in; shown as one line, without a traceback.
USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, ValueError, ImportError)


def resolve_config(config: Optional[str], overrides: Sequence[str], resume: Optional[str],
                   default: Path) -> Config:
    """``--config`` (or the checkpoint's config when resuming, or the default recipe) + ``--set``."""
    if config is None and resume:
        from vsd.engine.trainer import config_for_resume

        return load_config(None, overrides, base=config_for_resume(resume))
    from vsd.data.distilled import apply_export_recipe, explicit_keys

    cfg = load_config(config or default, overrides)
    return apply_export_recipe(cfg, explicit=explicit_keys(config, overrides))  # data.name=distilled only


def run_cli(config: Optional[str], overrides: Sequence[str], resume: Optional[str], default: Path,
            job: Callable[[Config], Any]) -> int:
    """Run ``job(cfg)``; turn bad-input exceptions into ``error: ...`` on stderr and exit status 2."""
    from vsd.engine.checkpoint import CheckpointError
    from vsd.engine.trainer import TrainingDiverged

    try:
        job(resolve_config(config, overrides, resume, default))
    except (CheckpointError, TrainingDiverged, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
