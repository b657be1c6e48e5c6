"""A run's output folder: which folder a run may write into, and what a resume may change.

Rules (``tools/train.py`` and :class:`vsd.engine.trainer.Trainer`):

* A resume continues the run its checkpoint belongs to, in the folder the checkpoint is in (so a run folder
  moved to ``archive/`` resumes in ``archive/``); ``output`` naming any other folder is refused.
* A fresh run never writes into a folder holding another run (a checkpoint or ``results.json``) unless
  ``overwrite=true``, which first deletes that run's files. A folder whose run stopped before its first
  checkpoint holds nothing to resume: the same config starts over there, another config is refused.
* On resume only :data:`RESUMABLE_KEYS` may differ from the checkpoint's config; any other changed key is
  refused with one line naming it. ``train.epochs`` may grow (or shrink down to the epochs already done): the
  learning-rate schedule becomes that of a run planned for the new length from the start, taken up at the
  checkpoint's step (a cosine schedule is stretched, so its lr rises again after a finished run).
* A distillation re-run (``tools/distill.py`` on a folder holding ``checkpoint.safetensors``) resumes only with
  the config that folder was started with; another config is refused naming the differing keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from vsd.config import Config, ConfigError, config_to_dict, load_config
from vsd.engine.io import remove_stale_temporaries

CHECKPOINT_NAME = "checkpoint-last.safetensors"
RUN_FILES = ("config.yaml", "summary.csv", "results.json", CHECKPOINT_NAME)
#: Files of a finished or resumable training run, deleted by ``overwrite=true``.
_OWNED_FILES = RUN_FILES + ("model.safetensors",)
#: Config keys a resume may change: length, logging, checkpoint cadence, evaluation batch and data workers.
RESUMABLE_KEYS = ("train.epochs", "train.log_interval", "train.checkpoint_every", "train.eval_batch_size",
                  "data.num_workers", "eval.ece_bins", "train.device")
#: Keys that never make two configs "another run".
_IDENTITY_FREE = ("output", "overwrite")
#: Keys a distillation re-run may change (display and loader workers only).
DISTILL_RERUN_KEYS = ("data.num_workers", "distill.progress")


class OutputExists(FileExistsError):
    """The output folder already holds another run."""


def config_differences(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> Dict[str, tuple]:
    """``{dotted key: (old value, new value)}`` for every leaf where two nested config dicts differ."""
    diff: Dict[str, tuple] = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and not name.endswith("kwargs"):
            diff.update(config_differences(a, b, f"{name}."))
        elif a != b:
            diff[name] = (a, b)
    return diff


def _describe(diff: Dict[str, tuple]) -> str:
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in diff.items())


def checkpoint_config(state: Dict[str, Any], path: str) -> Dict[str, Any]:
    """The config dict stored in a training checkpoint; one clear error for a distillation or foreign one."""
    from vsd.engine.checkpoint import CheckpointError

    if not isinstance(state.get("config"), dict) or "epoch" not in state:
        kind = state.get("kind") or "no training config"
        raise CheckpointError(f"{path!r} is not a training checkpoint (it holds {kind}); tools/train.py --resume "
                              f"takes the {CHECKPOINT_NAME} of a tools/train.py run")
    return state["config"]


def check_resume(cfg: Config, state: Dict[str, Any], path: str) -> None:
    """Refuse a resume that writes outside the checkpoint's folder or changes a key not in
    :data:`RESUMABLE_KEYS` (see the module docstring)."""
    stored = _full_config(checkpoint_config(state, path))
    home = Path(path).resolve().parent
    if Path(cfg.output).resolve() != home:
        raise ConfigError(f"config key 'output': a resume continues the run in the folder of its checkpoint "
                          f"({str(home)!r}), not {cfg.output!r}; to branch a run off, copy that folder and "
                          "resume the copy")
    diff = {k: v for k, v in config_differences(stored, config_to_dict(cfg)).items()
            if k not in _IDENTITY_FREE and k not in RESUMABLE_KEYS}
    if diff:
        raise ConfigError(f"cannot resume {path!r} with a changed {_describe(diff)}: a resume may change only "
                          f"{', '.join(RESUMABLE_KEYS)}; start a new run (another output) for the rest")
    done = int(state["epoch"]) + 1
    if cfg.train.epochs < done:
        raise ConfigError(f"config key 'train.epochs': value {cfg.train.epochs} is below the {done} epoch(s) the "
                          f"checkpoint {path!r} already completed")


def resume_overrides_config(path: str, config: Optional[str], overrides: List[str]) -> Config:
    """The config of ``--resume path``: the checkpoint's own (or ``config``'s) plus ``overrides``, with
    ``output`` set to the checkpoint's folder unless an override names it (then :func:`check_resume` refuses
    any other folder)."""
    from vsd.config import config_from_dict
    from vsd.engine.checkpoint import load_checkpoint

    home = str(Path(path).parent)
    if config is None:
        stored = config_from_dict({**checkpoint_config(load_checkpoint(path), path), "output": home})
        return load_config(None, overrides, base=stored)
    explicit = any(item.split("=", 1)[0].strip() == "output" for item in overrides)
    return load_config(config, ([] if explicit else [f"output={home}"]) + list(overrides))


def check_output(out: Path, cfg: Config, resuming: bool) -> None:
    """Before any work: refuse a folder holding another run, and create the folder (a clear error when it
    cannot be created or written)."""
    if not resuming and not cfg.overwrite:
        held = [f for f in RUN_FILES if (out / f).exists()]
        ckpt = out / CHECKPOINT_NAME
        if ckpt.exists() or (out / "results.json").exists():
            hint = f"pass --resume {ckpt} to continue it, " if ckpt.exists() else ""
            raise OutputExists(f"output folder {str(out)!r} already holds a run ({', '.join(held)}); {hint}"
                               "--set overwrite=true to replace it, or choose another --set output=...")
        if held:  # a run stopped before its first checkpoint: start it over, if it is the same run
            diff = _differences_from_folder(out, cfg)
            if diff:
                raise OutputExists(f"output folder {str(out)!r} holds another run that stopped before its first "
                                   f"checkpoint (differing: {_describe(diff)}); --set overwrite=true to replace "
                                   "it, or choose another --set output=...")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create output folder {str(out)!r}: {err.strerror or err}") from None
    import os

    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {str(out)!r} is not writable")


def _full_config(raw: Dict[str, Any]) -> Dict[str, Any]:
    """A stored config dict with the keys added to vsd since it was written filled in with their defaults."""
    from vsd.config import config_from_dict

    return config_to_dict(config_from_dict(raw))


def _differences_from_folder(out: Path, cfg: Config, free: tuple = ()) -> Dict[str, tuple]:
    from vsd.config import safe_load_yaml

    try:
        old = _full_config(safe_load_yaml((out / "config.yaml").read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:  # ConfigError and YAML errors are ValueErrors
        return {"config.yaml": (f"unreadable: {' '.join(str(err).split())}", "this config")}
    return {k: v for k, v in config_differences(old, config_to_dict(cfg)).items()
            if k not in _IDENTITY_FREE and k not in free}


def prepare_output(out: Path, cfg: Config, resuming: bool) -> None:
    """After the run is built, before it writes: drop stale temporaries, the replaced run's files (a fresh
    run), and write ``config.yaml``."""
    from vsd.config import save_config

    remove_stale_temporaries(out)
    if not resuming:
        for name in _OWNED_FILES:
            (out / name).unlink(missing_ok=True)
    save_config(cfg, out / "config.yaml")


def check_distill_rerun(out: Path, cfg: Config, progress: str = "checkpoint.safetensors") -> None:
    """Refuse to resume the unfinished distillation in ``out`` with a config other than the one it was started
    with (naming the differing keys), unless ``overwrite=true``."""
    if cfg.overwrite or not (out / progress).exists() or not (out / "config.yaml").exists():
        return
    diff = _differences_from_folder(out, cfg, DISTILL_RERUN_KEYS)
    if diff:
        raise ConfigError(f"output folder {str(out)!r} holds an unfinished distillation started with another "
                          f"config (differing: {_describe(diff)}); re-run with that config to resume it, set "
                          "overwrite=true to start over, or choose another output")
