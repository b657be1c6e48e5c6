"""Distillation from a random teacher (``method.name: random_teacher``).

Sarnthein et al., "Random Teachers are Good Teachers", ICML 2023, official code github.com/safelix/dinopl
(configs ``cifar10_distillation_v2.json`` / ``tinyimagenet_distillation.json``). The run's model, as created
(randomly initialised), becomes the frozen teacher encoder in eval mode; the student encoder starts from it
(``student_init``); both carry a :class:`~vsd.wrappers.dino_head.DINOHead` (the student's head starts from the
teacher's by the same rule). The loss is DINO's cross-entropy (:class:`~vsd.losses.dino.DINOLoss`) between teacher
and student prototype scores.

Defaults = the paper's setting: an exact copy (``student_init: auto`` -> ``copy``) of a **BatchNorm** backbone,
head hidden [2048, 2048] -> bottleneck 256 -> 65536 prototypes, ``t_temp = s_temp = 1``, no centering, pairing
``same``, one view without augmentation (``views: [eval]``); dinopl's optimiser there is AdamW lr 1e-3 (the
``train`` section is the user's; see ``zoo/random_teacher``).

Why BatchNorm: with an exact copy the student's and teacher's scores are equal and the cross-entropy gradient
``softmax(s) - softmax(t)`` is exactly zero. The official code escapes this only through BatchNorm (the student in
train mode normalises with batch statistics, the teacher in eval mode with its initial running ones). A model
without BatchNorm (e.g. vsd's default ConvNet, instance norm) is refused under ``student_init: auto`` with a
message naming the fix (``model.kwargs.net_norm=batchnorm`` or a BatchNorm model); ``perturbed`` /
``interpolated`` remain as explicit choices: measured on ``photos`` (zoo/random_teacher/RESULTS.md) an
instance-norm student started at a perturbed copy trains but does not rise above its teacher.

Multi-crop (DINO / dinopl ``mc_spec``): ``global_crops: 2`` replaces ``views`` by 2 global crops
(``RandomResizedCrop(global_size, global_scale)``, + flip where the data set allows) and ``local_crops`` local ones
(``local_size``, ``local_scale``); sizes default to the data set's image size (models that flatten their final
map, like vsd's ConvNet, need equal sizes). The teacher sees only the global crops; ``loss_pairing`` selects the
pairs (``opposite``: DINO, ``same``, ``all``; see :mod:`vsd.losses.dino`). With ``views`` the teacher sees every
view.

Every ``probe_every`` epochs the encoder embeddings (before the head) of the student AND the teacher are probed
(linear + k-NN, :mod:`vsd.probe`): ``eval_probe_student_linear``, ``eval_probe_student_knn``,
``eval_probe_teacher_linear``, ``eval_probe_teacher_knn``.

Student initialisation (``p_t`` teacher parameters, ``p_r`` a fresh initialisation drawn with ``init_seed``:
every sub-module defining ``reset_parameters()`` is re-initialised with PyTorch's defaults; parameters outside
such sub-modules, e.g. ViT tokens, keep ``p_r = p_t``):

* ``copy``: ``p_s = p_t`` (distance 0);
* ``perturbed``: ``p_s = p_t + eps * p_r`` (``||p_s - p_t|| = eps ||p_r||``; dinopl ``neighborhood``);
* ``interpolated``: ``p_s = (1 - alpha) p_t + alpha p_r`` (``||p_s - p_t|| = alpha ||p_r - p_t||``);
* ``auto`` (default): ``copy`` when the encoder has BatchNorm, else refused (see above).

Deliberate differences from dinopl: the re-initialisation for ``perturbed``/``interpolated`` uses PyTorch's
per-layer defaults rather than dinopl's own initialisers; the prototypes are weight-normalized (see
``DINOHead``); the multi-crop views carry no colour jitter / blur / solarisation (dinopl's random-teacher configs
use none either).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from vsd.config import Config, ConfigError, MethodConfig
from vsd.data.transforms import ResizedCrop, TransformArg
from vsd.losses.dino import PAIRINGS, DINOLoss
from vsd.losses.nkd import at_least_float32
from vsd.probe import embed, probe_model
from vsd.tasks.base import TaskContext, VSDTask, classifier_parameters
from vsd.tasks.mae import probe_due
from vsd.tasks.registry import register_task
from vsd.wrappers.dino_head import DINOHead

INIT_MODES = ("auto", "copy", "perturbed", "interpolated")


@dataclass
class RandomTeacherConfig(MethodConfig):
    """Random-teacher distillation (see module docstring)."""

    name: str = "random_teacher"
    student_init: str = "auto"
    eps: float = 0.1
    alpha: float = 0.1
    init_seed: Optional[int] = None
    hidden_dims: List[int] = field(default_factory=lambda: [2048, 2048])
    bottleneck_dim: int = 256
    out_dim: int = 65536
    s_temp: float = 1.0
    t_temp: float = 1.0
    center_momentum: Optional[float] = None
    loss_pairing: str = "same"
    views: List[str] = field(default_factory=lambda: ["eval"])
    global_crops: int = 0
    global_size: Optional[int] = None
    global_scale: List[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crops: int = 0
    local_size: Optional[int] = None
    local_scale: List[float] = field(default_factory=lambda: [0.05, 0.4])
    probe_every: int = 1
    probe_k: int = 20


class DINONet(nn.Module):
    """Encoder + DINO head; ``forward`` returns prototype scores, ``encoder`` alone gives the probed embedding."""

    def __init__(self, encoder: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(embed(self.encoder, x))


class FrozenTeacher(nn.Module):
    """A frozen network that stays in eval mode whatever ``train()`` asks."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def resolve_init(mode: str, encoder: nn.Module) -> str:
    """``auto`` -> ``copy`` with BatchNorm, refused without (:class:`ConfigError` naming the fix); other modes pass
    through (validated)."""
    if mode not in INIT_MODES:
        raise ValueError(f"method.student_init {mode!r} is unknown; expected one of {', '.join(INIT_MODES)}")
    if mode != "auto":
        return mode
    if not has_batchnorm(encoder):
        raise ConfigError(
            "method random_teacher needs a BatchNorm backbone (the paper's setting): the model has no BatchNorm "
            "layer, and an exact copy of a teacher without BatchNorm gets exactly zero gradient. Use "
            "--set model.kwargs.net_norm=batchnorm (vsd ConvNets) or a BatchNorm model such as "
            "model.name=resnet18_cifar; method.student_init=perturbed trains without BatchNorm but, measured on "
            "photos, does not lift the student above its teacher")
    return "copy"


def crop_views(cfg: RandomTeacherConfig, image_size: int) -> Tuple[List[TransformArg], int]:
    """``(views, teacher_views)``: the multi-crop views (2 global + N local) or ``cfg.views`` (teacher on all)."""
    if cfg.global_crops == 0:
        if not cfg.views:
            raise ConfigError("method.views must name at least one view (transform preset), e.g. [eval]")
        if cfg.local_crops:
            raise ConfigError("method.local_crops needs method.global_crops >= 1 (the teacher sees global crops)")
        return list(cfg.views), len(cfg.views)
    if cfg.global_crops < 1 or cfg.local_crops < 0:
        raise ConfigError(f"method.global_crops must be >= 0 and local_crops >= 0, got {cfg.global_crops} and "
                          f"{cfg.local_crops}")
    glob = ResizedCrop(cfg.global_size or image_size, tuple(cfg.global_scale))
    local = ResizedCrop(cfg.local_size or image_size, tuple(cfg.local_scale))
    return [glob] * cfg.global_crops + [local] * cfg.local_crops, cfg.global_crops


def random_like(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` whose sub-modules with ``reset_parameters()`` are re-initialised (seeded; the global
    RNG stream is left untouched)."""
    fresh = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in fresh.modules():
            if sub is not fresh and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return fresh


def init_student(teacher: nn.Module, mode: str, eps: float = 0.0, alpha: float = 0.0,
                 seed: int = 0) -> Tuple[nn.Module, Optional[nn.Module]]:
    """``(student, p_r)``: the student built from ``teacher`` by ``mode`` (``copy``/``perturbed``/
    ``interpolated``) and the random draw it used (``None`` for ``copy``)."""
    student = copy.deepcopy(teacher).requires_grad_(True)
    if mode == "copy":
        return student, None
    if mode not in ("perturbed", "interpolated"):
        raise ValueError(f"unknown student init {mode!r}; expected copy, perturbed or interpolated")
    if mode == "interpolated" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"method.alpha must lie in [0, 1] for interpolated init, got {alpha}")
    rand = random_like(teacher, seed)
    with torch.no_grad():
        for p_s, p_t, p_r in zip(student.parameters(), teacher.parameters(), rand.parameters()):
            p_s.copy_(p_t + eps * p_r if mode == "perturbed" else (1.0 - alpha) * p_t + alpha * p_r)
    return student, rand


class RandomTeacherTask(VSDTask):
    """DINO-style distillation of a frozen random teacher into a nearby student."""

    def __init__(self, model: nn.Module, cfg: RandomTeacherConfig, ctx: TaskContext, seed: int) -> None:
        super().__init__(device=ctx.device, verbose=False)
        if cfg.loss_pairing not in PAIRINGS:
            raise ConfigError(f"method.loss_pairing must be one of {', '.join(PAIRINGS)}, got {cfg.loss_pairing!r}")
        self.cfg, self.epochs = cfg, ctx.epochs
        self.train_views, self.teacher_views = crop_views(cfg, ctx.image_size)
        self.init_mode = resolve_init(cfg.student_init, model)
        with torch.no_grad():
            was = model.training
            width = embed(model.eval(), torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size,
                                                    device=next(model.parameters()).device)).shape[-1]
            model.train(was)
        head = DINOHead(width, cfg.hidden_dims, cfg.bottleneck_dim, cfg.out_dim).to(next(model.parameters()).device)
        teacher = DINONet(copy.deepcopy(model), head)
        init_seed = seed + 1 if cfg.init_seed is None else cfg.init_seed
        student, _ = init_student(teacher, self.init_mode, cfg.eps, cfg.alpha, init_seed)
        with torch.no_grad():  # the run's model object is the student encoder (saved as model.safetensors)
            for p_m, p_s in zip(model.parameters(), student.encoder.parameters()):
                p_m.copy_(p_s)
        self.trainable_module = DINONet(model, student.head)
        self.teacher = FrozenTeacher(teacher)
        self.criterion = DINOLoss(cfg.out_dim, cfg.s_temp, cfg.t_temp, cfg.center_momentum, cfg.loss_pairing)
        self._teacher_probe: Optional[Dict[str, float]] = None

    def forward(self, input: Any, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        views = input if isinstance(input, (list, tuple)) else [input]
        student = torch.stack([self.trainable_module(v) for v in views])
        teacher = torch.stack([self.teacher(v) for v in views[:self.teacher_views]])
        loss = self.criterion(*at_least_float32(student, teacher))  # softmax cross-entropy in float32
        return {"loss": loss, "output": student[0]}

    def idle_parameters(self) -> List[nn.Parameter]:
        """The student encoder's classifier: the DINO head reads the embedding before it (:func:`vsd.probe.embed`
        goes through ``forward_head(pre_logits=True)`` when the encoder has it)."""
        encoder = self.trainable_module.encoder
        uses_head_api = hasattr(encoder, "forward_features") and hasattr(encoder, "forward_head")
        return classifier_parameters(encoder) if uses_head_api else []

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> nn.Module:
        """The student encoder (its eval forward returns the model's own, untrained-head logits)."""
        return self.trainable_module.encoder if module is None else module

    def evaluate(self, loaders: Any, epoch: int) -> Dict[str, float]:
        """Student and teacher probe accuracies (%), when due; the frozen teacher is probed once per process."""
        if not probe_due(epoch, self.epochs, self.cfg.probe_every):
            return {}
        if self._teacher_probe is None:
            self._teacher_probe = probe_model(self.teacher.net.encoder, loaders.train, loaders.test,
                                              k=self.cfg.probe_k, device=self.device)
        student = probe_model(self.get_eval_model(), loaders.train, loaders.test, k=self.cfg.probe_k,
                              device=self.device)
        row = {f"probe_student_{k}": v for k, v in student.items()}
        row.update({f"probe_teacher_{k}": v for k, v in self._teacher_probe.items()})
        return row

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {"teacher": self.teacher.net.state_dict(), "center": self.criterion.center.clone(),
                "init_mode": self.init_mode}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if not state:
            return
        self.teacher.net.load_state_dict(state["teacher"])
        self.criterion.center.copy_(state["center"])
        self._teacher_probe = None


@register_task("random_teacher", RandomTeacherConfig)
def build_random_teacher(model: nn.Module, cfg: Config, ctx: TaskContext) -> RandomTeacherTask:
    """The run's freshly initialised model is the teacher; the student starts near it."""
    return RandomTeacherTask(model, cfg.method, ctx, cfg.seed)  # type: ignore[arg-type]
