#!/usr/bin/env python
"""Smoke suite: every training method for a few steps on tiny data (the method matrix of the DDP tests).

    python tools/smoke.py                  # every method on tiny synthetic data, on the present device
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

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
    deterministic: bool = True
    extra: Dict[str, str] = field(default_factory=dict)

    def config_overrides(self, folder: Path) -> List[str]:
        return TINY_DATA + TINY_TRAIN + list(self.overrides) + (self.prepare(folder) if self.prepare else [])


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
    MethodCase("random_teacher", TINY_CONVNET + ["method.name=random_teacher", "method.hidden_dims=[16]",
                                                 "method.bottleneck_dim=8", "method.out_dim=32",
                                                 "method.probe_k=3"]),
]
