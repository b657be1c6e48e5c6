#!/usr/bin/env python
"""Smoke suite on whatever device is present: every method, every distiller, every CIFAR/ImageNet zoo recipe.

    python tools/smoke.py                          # all three sections (CUDA when available, else CPU)
    python tools/smoke.py --tiny                   # CPU-sized: tiny batches and syntheses, no ImageNet recipes
    python tools/smoke.py --sections methods --formats cifar --only ce mae

Sections (data are generated files in the real on-disk formats, :mod:`vsd.data.fake_files`):

* ``methods``: every training method (the matrix below, also used by the DDP tests) for 2 short epochs on tiny
  data written as CIFAR-10 python batches and as an ImageFolder tree (8x8 after resizing);
* ``distill``: ``tools/distill.py`` (its ``main``) for MTT with every backend and KRR-ST, a few iterations on
  the tiny CIFAR-10 files;
* ``zoo``: every ``zoo/*/cifar*.yaml`` and ``zoo/*/*imagenet*.yaml`` recipe with its real model, image size and
  mixed-precision setting for 2 iterations (training: 2 optimizer steps; distillation: 2 distillation
  iterations after a 1-expert buffer), on generated CIFAR files (both sets; 50 images per class, enough for the
  real initialisation of MTT at 50 images per class, 3 with ``--tiny``, 100 for the long-tailed sets so that
  their IF-100 tail keeps a sample) or an ImageFolder of ``--imagenet-classes`` classes at the recipe's size. Batch sizes are capped at ``--max-batch``; checkpoints a recipe reads (``model.checkpoint``,
  ``method.teacher_checkpoint``) are replaced by random weights of the right model.

Prints one row per run (wall time, median optimizer-step time, peak CUDA memory from
``torch.cuda.max_memory_allocated``, the autocast dtype, pass/fail) and exits 1 if any run failed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Tiny data (10 classes x 8 images of 8x8 gratings) and a tiny ConvNet: a few steps per epoch on any machine.
TINY_DATA = ["data.name=synthetic", "data.image_size=8",
             "data.kwargs={train_per_class: 8, test_per_class: 2, in_chans: 3}"]
TINY_CONVNET = ["model.name=convnet_d1", "model.kwargs={net_width: 8}"]
MAE_KWARGS = "{embed_dim: 16, depth: 2, num_heads: 2, decoder_embed_dim: 8, decoder_depth: 1, decoder_num_heads: 2}"
TINY_MAE = ["model.name=mae_vit_tiny_patch4_32", f"model.kwargs={MAE_KWARGS}", "method.mask_ratio=0.5"]
TINY_TRAIN = ["train.batch_size=16", "train.epochs=2", "train.opt=sgd", "train.lr=0.05", "train.eval_batch_size=64"]


@dataclass
class MethodCase:
    """One training method with tiny settings; ``prepare(folder)`` writes the files it needs and returns
    extra overrides (e.g. a teacher checkpoint)."""

    name: str
    overrides: List[str]
    prepare: Optional[Callable[[Path], List[str]]] = None

    def config_overrides(self, folder: Path, data: Sequence[str] = tuple(TINY_DATA)) -> List[str]:
        """The run's overrides on ``data`` (default: tiny synthetic); files it needs are written into ``folder``."""
        return list(data) + TINY_TRAIN + list(self.overrides) + (self.prepare(folder) if self.prepare else [])


def _dmae_teacher(folder: Path) -> List[str]:
    """A randomly initialised tiny MAE saved as the DMAE teacher checkpoint."""
    import torch
    from safetensors.torch import save_file

    from vsd.models import create_network

    path = folder / "dmae_teacher.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        import yaml

        teacher = create_network("mae_vit_tiny_patch4_32", yaml.safe_load(MAE_KWARGS), 10, 3, 8)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return [f"method.teacher_checkpoint={path}", "method.teacher_model=mae_vit_tiny_patch4_32",
            f"method.teacher_kwargs={MAE_KWARGS}", "method.student_blocks=[1]"]


METHOD_CASES: List[MethodCase] = [
    MethodCase("ce", TINY_CONVNET + ["method.name=ce"]),
    MethodCase("pskd_dense", TINY_CONVNET + ["method.name=pskd", "method.bank=dense"]),
    MethodCase("pskd_compact", TINY_CONVNET + ["method.name=pskd", "method.bank=compact", "method.topk=3"]),
    MethodCase("pskd_snapshot", TINY_CONVNET + ["method.name=pskd", "method.mode=snapshot"]),
    MethodCase("nkd", TINY_CONVNET + ["method.name=nkd", "method.teacher=convnet_d1",
                                      "method.teacher_kwargs={net_width: 8}"]),
    MethodCase("uskd", ["model.name=convnet_d2", "model.kwargs={net_width: 8}", "method.name=uskd"]),
    MethodCase("mdcs", ["model.name=resnet32_cifar", "model.kwargs={layers: [1, 1, 1]}", "method.name=mdcs",
                        "method.warmup_epochs=1"]),
    MethodCase("sla", TINY_CONVNET + ["method.name=sla"]),
    MethodCase("sla_sd", TINY_CONVNET + ["method.name=sla", "method.self_distill=true"]),
    MethodCase("mae", ["method.name=mae"] + TINY_MAE),
    MethodCase("dmae", ["method.name=dmae"] + TINY_MAE, prepare=_dmae_teacher),
    MethodCase("further_pretrain_sd", ["method.name=further_pretrain_sd", "method.switch_epoch=1"] + TINY_MAE),
    MethodCase("random_teacher", ["model.name=convnet_d1", "model.kwargs={net_width: 8, net_norm: batchnorm}",
                                  "method.name=random_teacher", "method.hidden_dims=[16]", "method.bottleneck_dim=8",
                                  "method.out_dim=32", "method.probe_k=3"]),
]


SECTIONS = ("methods", "distill", "zoo")
FORMATS = ("cifar", "imagefolder")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the smoke table."""

    section: str
    name: str
    status: str = "pass"
    wall_s: float = 0.0
    step_s: Optional[float] = None
    peak_mib: Optional[float] = None
    amp: str = "-"
    error: str = ""


def _timed(section: str, name: str, device: "torch.device", job: Callable[[Row], None]) -> Row:
    """Run ``job(row)``; fill in the wall time, the peak CUDA memory and any failure."""
    import torch

    row = Row(section, name)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        job(row)
    except Exception as err:  # a smoke run reports every failure and goes on
        row.status = "FAIL"
        row.error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        traceback.print_exc()
    row.wall_s = time.perf_counter() - start
    if device.type == "cuda":
        row.peak_mib = torch.cuda.max_memory_allocated(device) / 2 ** 20
    print(_format_row(row), flush=True)
    return row


def _train(row: Row, overrides: List[str], max_steps: Optional[int] = None, recipe: Optional[Path] = None) -> None:
    """Train ``recipe`` + ``overrides`` (all epochs, or ``max_steps`` optimizer steps); record the median step
    time (the first step, with its one-off set-up, left out when there are more) and the autocast dtype."""
    import statistics

    from vsd.config import load_config
    from vsd.distill.precision import dtype_name
    from vsd.engine.trainer import RunInterrupted, Trainer

    trainer = Trainer(load_config(recipe, overrides))
    try:
        row.amp = dtype_name(trainer.amp_dtype)
        try:
            trainer.fit(max_steps=max_steps)
        except RunInterrupted:
            if max_steps is None:
                raise
        times = list(trainer.step_seconds)[1:] or list(trainer.step_seconds)
        if not times:
            raise RuntimeError("no optimizer step ran")
        row.step_s = statistics.median(times)
    finally:
        trainer.close()


def _distill(row: Row, argv: List[str]) -> None:
    """``tools/distill.py`` with ``argv``; a non-zero exit status is a failure."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vsd_tools_distill", ROOT / "tools" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(argv)
    if code != 0:
        raise RuntimeError(f"tools/distill.py exited with status {code}")


# ----------------------------------------------------------------------------------------------------- sections
def tiny_data(folder: Path) -> dict:
    """Tiny CIFAR-10 batches and an ImageFolder tree (10 classes, 32x32); data overrides by format."""
    from vsd.data.fake_files import write_cifar, write_imagefolder

    write_cifar(folder / "cifar", "cifar10", train_per_class=2, test_per_class=1)
    write_imagefolder(folder / "imagefolder", num_classes=10, train_per_class=8, test_per_class=2, image_size=32)
    return {"cifar": ["data.name=cifar10", f"data.root={folder / 'cifar'}", "data.image_size=8"],
            "imagefolder": ["data.name=imagefolder", f"data.root={folder / 'imagefolder'}", "data.image_size=8"]}


def method_rows(folder: Path, device: "torch.device", formats: Sequence[str], wanted: Callable[[str], bool]) -> List[Row]:
    data = tiny_data(folder / "data")
    rows = []
    for fmt in formats:
        for case in METHOD_CASES:
            name = f"{case.name}/{fmt}"
            if wanted(name):
                overrides = case.config_overrides(folder / "files", data[fmt]) + [
                    f"output={folder / 'runs' / fmt / case.name}", "overwrite=true", f"train.device={device}"]
                rows.append(_timed("methods", name, device, lambda row, o=overrides: _train(row, o)))
    return rows


def distill_rows(folder: Path, device: "torch.device", wanted: Callable[[str], bool]) -> List[Row]:
    from vsd.distill.matching import BACKENDS

    data = tiny_data(folder / "data")["cifar"]
    common = data + ["model.name=convnet_d1", "model.kwargs={net_width: 8}", f"train.device={device}",
                     "overwrite=true"]
    mtt = ["distill.method=mtt", "distill.ipc=1", "distill.iterations=3", "distill.syn_steps=3",
           "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
           "distill.expert_train_epochs=2", "distill.lr_img=100", f"distill.buffer_dir={folder / 'buffers'}",
           "distill.checkpoint_every=2", "distill.eval_nets=1", "distill.eval_epochs=2",
           "distill.progress=false", "distill.export_imagefolder=false"]
    krr = ["distill.method=krr_st", "distill.num_images=6", "distill.iterations=3", "distill.batch_real=16",
           "distill.pool_size=2", "distill.pool_max_steps=3", "distill.checkpoint_every=2", "distill.log_every=1",
           "distill.target.epochs=1", "distill.target.batch_size=16", "distill.target.projector=[8]",
           "distill.transfer.enabled=false"]
    jobs = {f"mtt_{backend}": common + mtt + [f"distill.backend={backend}"] for backend in BACKENDS}
    jobs["krr_st"] = common + krr
    rows = []
    for name, overrides in jobs.items():
        if wanted(name):
            argv = ["--set", *overrides, f"output={folder / name}"]
            rows.append(_timed("distill", name, device, lambda row, a=argv: _distill(row, a)))
    return rows


def zoo_recipes() -> List[Path]:
    """The CIFAR and ImageNet recipes of the zoo."""
    return sorted(ROOT.glob("zoo/*/cifar*.yaml")) + sorted(ROOT.glob("zoo/*/*imagenet*.yaml"))


def _random_weights(path: Path, name: str, kwargs: dict, info) -> str:
    """``path``: a safetensors file of ``name(**kwargs)`` at its random initialisation (for a trained file)."""
    import torch
    from safetensors.torch import save_file

    from vsd.models import create_network

    folder = path.parent
    if not path.exists():
        torch.manual_seed(0)
        model = create_network(name, kwargs, info.num_classes, info.in_chans, info.image_size)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def zoo_overrides(recipe: Path, folder: Path, device: "torch.device", max_batch: int, tiny: bool,
                  imagenet_classes: int) -> List[str]:
    """Overrides that run ``recipe`` for 2 iterations on generated files (see module docstring)."""
    from vsd.config import load_config
    from vsd.data import dataset_info
    from vsd.data.fake_files import write_cifar, write_imagefolder

    cfg = load_config(recipe)
    sets = [cfg.data.name] + ([cfg.distill.transfer.dataset] if getattr(getattr(cfg.distill, "transfer", None),
                                                                        "dataset", None) else [])
    unknown = [s for s in sets if not (s.startswith("cifar") or s == "imagefolder")]
    if unknown:
        raise ValueError(f"{recipe}: no generator for data set(s) {unknown}")
    if cfg.data.name == "imagefolder":
        root = folder / f"imagefolder_{imagenet_classes}_{cfg.data.image_size}"
        if not root.exists():
            per_class = max(1, -(-2 * max_batch // imagenet_classes))
            write_imagefolder(root, imagenet_classes, per_class, 1, cfg.data.image_size or 224, ext="jpg")
    else:  # long-tailed sets need >= 100 images per class so that the IF-100 tail keeps one
        longtail = any(name.endswith("_lt") for name in sets)
        per_class = 100 if longtail else (3 if tiny else 50)  # >= ipc 50 of the MTT recipes' real init
        root = folder / f"cifar_{per_class}"
        if not (root / "cifar-100-python").exists():
            write_cifar(root, "cifar10", train_per_class=-(-per_class // 5), test_per_class=2)
            write_cifar(root, "cifar100", train_per_class=per_class, test_per_class=1)
    out = [f"output={folder / 'zoo' / recipe.parent.name / recipe.stem}", "overwrite=true", f"data.root={root}",
           "data.download=false", f"train.device={device}", f"train.batch_size={min(cfg.train.batch_size, max_batch)}"]
    if tiny:
        out.append("data.num_workers=0")
    info = dataset_info(cfg.data.name, cfg.data.image_size, root=root, **cfg.data.kwargs)
    if cfg.model.checkpoint and not Path(cfg.model.checkpoint).exists():
        out.append("model.checkpoint=null")
    method = cfg.method
    if getattr(method, "teacher_checkpoint", None) and not Path(method.teacher_checkpoint).exists():
        name = getattr(method, "teacher", None) or getattr(method, "teacher_model", None) or cfg.model.name
        kwargs = getattr(method, "teacher_kwargs", None) or (cfg.model.kwargs if name == cfg.model.name else {})
        path = folder / "weights" / f"{recipe.parent.name}_{recipe.stem}_teacher.safetensors"
        out.append(f"method.teacher_checkpoint={_random_weights(path, name, kwargs, info)}")
    d = cfg.distill
    if d is not None and d.method == "mtt":
        out += ["distill.iterations=2", "distill.num_experts=1", "distill.max_start_epoch=1",
                f"distill.expert_train_epochs={1 + d.expert_epochs}", "distill.checkpoint_every=1",
                f"distill.expert_batch_size={min(d.expert_batch_size, max_batch)}", "distill.eval_nets=0",
                "distill.eval_full_data_epochs=0", "distill.export_imagefolder=false", "distill.progress=false",
                f"distill.buffer_dir={folder / 'buffers'}"]
        if tiny:
            out += ["distill.ipc=1", "distill.syn_steps=2", "distill.expert_epochs=1", "distill.expert_train_epochs=2"]
    elif d is not None and d.method == "krr_st":
        out += ["distill.iterations=2", "distill.checkpoint_every=1", "distill.log_every=1",
                f"distill.batch_real={min(d.batch_real, max_batch)}", "distill.pool_max_steps=2",
                "distill.target.epochs=1", f"distill.target.batch_size={min(d.target.batch_size, max_batch)}",
                "distill.transfer.enabled=false"]
        if tiny:
            out += ["distill.num_images=20", "distill.pool_size=1", "distill.target.batch_size=32"]
    return out


def zoo_rows(folder: Path, device: "torch.device", max_batch: int, tiny: bool, imagenet_classes: int,
             only: Sequence[str]) -> List[Row]:
    """Every zoo recipe named by ``only`` (all when empty; with ``tiny``, ImageNet ones only when named)."""
    from vsd.config import load_config

    rows = []
    for recipe in zoo_recipes():
        name = f"{recipe.parent.name}/{recipe.stem}"
        named = any(text in name for text in only)
        if (only and not named) or (tiny and "imagenet" in recipe.stem and not named):
            continue

        def job(row: Row, recipe: Path = recipe) -> None:
            overrides = zoo_overrides(recipe, folder, device, max_batch, tiny, imagenet_classes)
            if load_config(recipe).distill is not None:
                _distill(row, ["--config", str(recipe), "--set", *overrides])
            else:
                _train(row, overrides, max_steps=2, recipe=recipe)

        rows.append(_timed("zoo", name, device, job))
    return rows


# ----------------------------------------------------------------------------------------------------- table
COLUMNS = ("section", "name", "status", "wall_s", "step_s", "peak_MiB", "amp")


def _format_row(row: Row) -> str:
    step = "-" if row.step_s is None else f"{row.step_s:.4f}"
    peak = "-" if row.peak_mib is None else f"{row.peak_mib:.0f}"
    line = f"{row.section:<8} {row.name:<44} {row.status:<5} {row.wall_s:>8.2f} {step:>8} {peak:>9} {row.amp:<9}"
    return line + (f"  {row.error}" if row.error else "")


def print_table(rows: Sequence[Row], device: "torch.device") -> None:
    import torch

    title = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    print(f"\nsmoke table on {title}, torch {torch.__version__}")
    print(f"{COLUMNS[0]:<8} {COLUMNS[1]:<44} {COLUMNS[2]:<5} {COLUMNS[3]:>8} {COLUMNS[4]:>8} {COLUMNS[5]:>9} "
          f"{COLUMNS[6]:<9}")
    for row in rows:
        print(_format_row(row))
    failed = [r.name for r in rows if r.status != "pass"]
    print(f"{len(rows) - len(failed)}/{len(rows)} passed" + (f"; FAILED: {', '.join(failed)}" if failed else ""))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS,
                        help="on-disk formats of the methods section")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT",
                        help="run only rows whose name contains one of these strings")
    parser.add_argument("--max-batch", type=int, default=256, help="cap on zoo recipes' batch sizes")
    parser.add_argument("--imagenet-classes", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true",
                        help="CPU sizes: batches <= 4, 1 image per class and 2 inner steps for MTT, 10 ImageNet "
                             "classes, ImageNet recipes only when named by --only")
    parser.add_argument("--out", help="folder for generated data and runs (default: a temporary folder)")
    args = parser.parse_args(argv)

    from vsd.engine.distributed import resolve_device

    device = resolve_device(args.device)
    max_batch = min(args.max_batch, 4) if args.tiny else args.max_batch
    classes = min(args.imagenet_classes, 10) if args.tiny else args.imagenet_classes
    wanted = (lambda name: any(text in name for text in args.only)) if args.only else (lambda name: True)
    with tempfile.TemporaryDirectory(prefix="vsd-smoke-") as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        rows: List[Row] = []
        if "methods" in args.sections:
            rows += method_rows(folder / "methods", device, args.formats, wanted)
        if "distill" in args.sections:
            rows += distill_rows(folder / "distill", device, wanted)
        if "zoo" in args.sections:
            rows += zoo_rows(folder / "zoo", device, max_batch, args.tiny, classes, args.only)
    print_table(rows, device)
    return 0 if rows and all(r.status == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
