#!/usr/bin/env python
"""Linear and k-NN probe of a trained model's features (any named layer) on its data set.

    python tools/probe.py --run runs/mae_digits_vit_tiny                     # run's config + model.safetensors
    python tools/probe.py --run runs/x --layer blocks.1 --pool cls --k 20
    python tools/probe.py --run runs/x --list-layers
    python tools/probe.py --config zoo/mae/digits_finetune.yaml --weights some.safetensors
    # the frozen random teacher of a random_teacher run (stored in the checkpoint's task state):
    python tools/probe.py --run runs/rt --weights runs/rt/checkpoint-last.safetensors --key task.teacher \\
        --strip-prefix encoder.

Prints (and with --output writes) JSON: {"linear": %, "knn": %, "layer": ..., "weights": ...}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vsd.cli import error_boundary  # noqa: E402


def read_weights(path: str, key: Optional[str], strip_prefix: str) -> Dict[str, torch.Tensor]:
    """Weights from a safetensors file or a vsd checkpoint entry ``key`` (dotted, e.g. ``task.teacher``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vsd.engine.checkpoint import CheckpointError, load_checkpoint

    if key:
        node = load_checkpoint(path)
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                have = ", ".join(sorted(node)) if isinstance(node, dict) else type(node).__name__
                raise ValueError(f"checkpoint {path!r} has no entry {key!r} (at {part!r}; available: {have})")
            node = node[part]
        state = node
    else:
        from vsd.engine.checkpoint import load_model_weights

        try:
            state = load_model_weights(path) if path.endswith(".safetensors") else load_file(path)
        except SafetensorError as err:
            raise CheckpointError(f"weights {path!r} are not a readable safetensors file: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r}{f' entry {key!r}' if key else ''} is not a set of weights (name -> tensor)")
    if strip_prefix:
        state = {k[len(strip_prefix):]: v for k, v in state.items() if k.startswith(strip_prefix)}
        if not state:
            raise ValueError(f"no weight in {path!r} starts with {strip_prefix!r}")
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a tools/train.py output folder (config.yaml, model.safetensors)")
    parser.add_argument("--config", help="YAML recipe naming data and model (default: <run>/config.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--weights", help="weights file (default: <run>/model.safetensors)")
    parser.add_argument("--key", help="entry of a vsd checkpoint holding the weights, e.g. task.teacher")
    parser.add_argument("--strip-prefix", default="", help="keep only weights with this prefix, removing it")
    parser.add_argument("--layer", help="named sub-module to probe (default: the embedding before the classifier)")
    parser.add_argument("--pool", default="avg", choices=["avg", "cls", "flatten"])
    parser.add_argument("--k", type=int, default=20, help="neighbours of the k-NN probe")
    parser.add_argument("--list-layers", action="store_true", help="print the probe-able layer names and exit")
    parser.add_argument("--output", help="also write the JSON result here")
    args = parser.parse_args(argv)
    return error_boundary(lambda: probe(args))


def load_weights(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: str, name: str) -> None:
    """Load ``state`` into ``model``; one error naming the entries that are missing or of another shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or mismatched:
        raise ValueError(f"weights {path!r} do not fit model {name}: {len(missing)} missing "
                         f"({', '.join(missing[:5])}), {len(mismatched)} of another shape ({', '.join(mismatched[:5])})")
    model.load_state_dict(state, strict=False)


def _check_writable(path: Path) -> None:
    """``path`` can be created: its nearest existing ancestor is a writable folder."""
    import os

    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OSError(f"--output {str(path)!r} cannot be written ({str(parent)!r} is not a writable folder)")


def probe(args: argparse.Namespace) -> int:
    from vsd.config import ConfigError, load_config
    from vsd.engine.distributed import DistEnv
    from vsd.engine.io import atomic_write_json
    from vsd.engine.loaders import build_eval_data, eval_loader
    from vsd.engine.preflight import check_inputs
    from vsd.models import build_model
    from vsd.probe import list_layers, probe_model

    if not (args.run or args.config):
        raise ValueError("pass --run <output folder> or --config <recipe>")
    if args.run and not Path(args.run).is_dir():
        raise FileNotFoundError(f"--run {args.run!r} is not a folder")
    config = args.config or str(Path(args.run) / "config.yaml")
    # the probe runs on this machine's default device, whatever device the run was trained on
    cfg = load_config(config, ["train.device=auto"] + list(args.set) + ["model.checkpoint=null"])
    if cfg.distill is not None and not args.weights:
        raise ConfigError(f"{config!r} is a distillation config: probe a tools/train.py run, or pass --weights")
    weights = args.weights or (str(Path(args.run) / "model.safetensors") if args.run else None)
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"weights {weights!r} do not exist")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.output:
        _check_writable(Path(args.output))
    check_inputs(cfg)
    data = build_eval_data(cfg)
    if args.k > len(data.train_plain):
        raise ValueError(f"--k {args.k} exceeds the {len(data.train_plain)} training samples of {cfg.data.name}")
    model = build_model(cfg, data.info)
    if weights:
        load_weights(model, read_weights(weights, args.key, args.strip_prefix), weights, cfg.model.name)
    if args.list_layers:
        print("\n".join(list_layers(model)))
        return 0
    env = DistEnv()
    accs = probe_model(model, eval_loader(data.train_plain, cfg, env), eval_loader(data.test, cfg, env),
                       layer=args.layer, pool=args.pool, k=args.k)
    result = {**accs, "layer": args.layer or "embedding", "pool": args.pool, "k": args.k, "weights": weights,
              "model": cfg.model.name, "dataset": cfg.data.name}
    print(json.dumps(result))
    if args.output:
        atomic_write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
