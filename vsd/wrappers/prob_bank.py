"""Per-sample probability banks for PS-KD's bank mode: ``p_prev`` of every training sample, indexed by the
position of the sample in the training set.

* :class:`DenseProbBank`: an N x C fp32 tensor, as the official PS-KD code keeps (ImageNet: 5.1 GB).
* :class:`CompactProbBank`: per sample the top-k probabilities in fp16 and their class indices (int16 when
  C <= 32768); the remaining mass ``1 - sum(top-k)`` is spread uniformly over the other C - k classes on read.
  At 1.28M x 1000 with k = 10 it takes about 1% of the dense bank.

Both keep a ``written`` mask: a sample never written (e.g. dropped by ``drop_last`` in the first epoch) reads
back as its one-hot label. Deliberate difference from the official code, whose zero-initialised bank would give
such a sample the target ``(1 - alpha) * onehot``, which does not sum to one.

``update`` is DDP-aware: when ``torch.distributed`` is initialised with several ranks, every rank all-gathers the
(encoded) predictions and sample indices of all ranks and writes them all, so each rank holds the full bank, as in
the official code. Banks live on ``device`` (CPU by default, like the official code); ``device="meta"`` builds
one without memory, to measure sizes (see :attr:`ProbBank.nbytes`).

Example:
    >>> import torch
    >>> bank = CompactProbBank(num_samples=100, num_classes=10, topk=3)
    >>> bank.update(torch.tensor([5, 7]), torch.softmax(torch.randn(2, 10), 1))
    >>> bank.get(torch.tensor([5, 7]), torch.tensor([1, 2])).sum(1).allclose(torch.ones(2))
    True
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["ProbBank", "DenseProbBank", "CompactProbBank", "bank_sizes", "create_prob_bank"]

Device = Union[str, torch.device]


def _all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same trailing shape on every rank, any leading size) from all ranks, in rank order."""
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(s.item())] for part, s in zip(gathered, sizes)])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ProbBank:
    """Base class: index checks, the ``written`` mask, DDP synchronisation and checkpoint state.

    Subclasses define ``kind``, ``_tensors()`` (name -> stored tensor), ``_encode(probs)`` (payload tensors,
    gathered across ranks as they are) and ``_store(index, *payload)`` / ``_read(index) -> [B, C] fp32``.
    """

    kind = ""

    def __init__(self, num_samples: int, num_classes: int, device: Device = "cpu") -> None:
        if num_samples < 1 or num_classes < 2:
            raise ValueError(f"a probability bank needs num_samples >= 1 and num_classes >= 2, got "
                             f"num_samples={num_samples}, num_classes={num_classes}")
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.written = torch.zeros(self.num_samples, dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ subclass hooks
    def _tensors(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def _encode(self, probs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _store(self, index: torch.Tensor, *payload: torch.Tensor) -> None:
        raise NotImplementedError

    def _read(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    @property
    def nbytes(self) -> int:
        """Bytes held by the bank's tensors (the written mask included); exact also on the meta device."""
        tensors = list(self._tensors().values()) + [self.written]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"sample indices must be a 1-D integer tensor, got {index.dtype} of shape "
                             f"{tuple(index.shape)}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"sample indices must lie in [0, {self.num_samples}) for a bank of {self.num_samples} "
                             f"samples, got values in [{int(index.min())}, {int(index.max())}]; does the loader "
                             f"index the same training set the bank was built for?")
        return index.to(self.device, torch.long)

    def get(self, index: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stored probabilities [B, C] fp32 of samples ``index`` on ``target``'s device; never-written samples
        read as ``onehot(target)`` ([B] class indices)."""
        idx = self._check_index(index)
        if target.shape != index.shape:
            raise ValueError(f"target must have one class index per sample index, shape {tuple(index.shape)}, got "
                             f"{tuple(target.shape)}")
        probs = self._read(idx).to(target.device, non_blocking=True)
        written = self.written[idx].to(target.device, non_blocking=True)
        onehot = F.one_hot(target.long(), self.num_classes).to(probs.dtype)
        return torch.where(written[:, None], probs, onehot)

    @torch.no_grad()
    def update(self, index: torch.Tensor, probs: torch.Tensor) -> None:
        """Write ``probs`` [B, C] (detached) for samples ``index``; with DDP, the samples of all ranks."""
        self._check_index(index)
        if tuple(probs.shape) != (index.shape[0], self.num_classes):
            raise ValueError(f"probs must have shape {(index.shape[0], self.num_classes)} (one probability vector "
                             f"per sample index), got {tuple(probs.shape)}")
        payload = self._encode(probs.detach().float())
        if _distributed():
            index = _all_gather_cat(index.to(probs.device, torch.long))
            payload = tuple(_all_gather_cat(p) for p in payload)
        idx = index.to(self.device, torch.long)
        self._store(idx, *(p.to(self.device) for p in payload))
        self.written[idx] = True

    def state_dict(self) -> Dict[str, Any]:
        """Checkpoint state: the kind, the sizes and the tensors."""
        return {**self._meta(), "written": self.written, **self._tensors()}

    def _meta(self) -> Dict[str, Any]:
        return {"kind": self.kind, "num_samples": self.num_samples, "num_classes": self.num_classes}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore tensors saved by :meth:`state_dict` of a bank with the same kind and sizes."""
        expected = self._meta()
        found = {key: state.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"probability bank state does not match this bank: expected {expected}, got {found}")
        for name, tensor in list(self._tensors().items()) + [("written", self.written)]:
            value = state.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
                got = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"probability bank state entry {name!r}: expected {tuple(tensor.shape)} "
                                 f"{tensor.dtype}, got {got}")
            tensor.copy_(value)


class DenseProbBank(ProbBank):
    """N x C fp32 probabilities, exact (the official PS-KD bank)."""

    kind = "dense"

    def __init__(self, num_samples: int, num_classes: int, device: Device = "cpu") -> None:
        super().__init__(num_samples, num_classes, device)
        self.probs = torch.zeros(self.num_samples, self.num_classes, dtype=torch.float32, device=self.device)

    def _tensors(self) -> Dict[str, torch.Tensor]:
        return {"probs": self.probs}

    def _encode(self, probs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (probs,)

    def _store(self, index: torch.Tensor, *payload: torch.Tensor) -> None:
        self.probs[index] = payload[0]

    def _read(self, index: torch.Tensor) -> torch.Tensor:
        return self.probs[index]


class CompactProbBank(ProbBank):
    """Top-k probabilities (fp16) and their classes per sample; the rest of the mass spread uniformly.

    Read-back of a row: the k stored probabilities at their classes, ``max(0, 1 - sum) / (C - k)`` elsewhere,
    renormalised to sum to one (fp16 rounding). With ``topk >= num_classes`` the bank is exact up to fp16.
    """

    kind = "compact"

    def __init__(self, num_samples: int, num_classes: int, topk: int = 10, device: Device = "cpu") -> None:
        super().__init__(num_samples, num_classes, device)
        if topk < 1:
            raise ValueError(f"CompactProbBank topk must be >= 1, got {topk}")
        self.topk = min(int(topk), self.num_classes)
        class_dtype = torch.int16 if self.num_classes <= 2 ** 15 else torch.int32
        self.values = torch.zeros(self.num_samples, self.topk, dtype=torch.float16, device=self.device)
        self.classes = torch.zeros(self.num_samples, self.topk, dtype=class_dtype, device=self.device)

    def _meta(self) -> Dict[str, Any]:
        return {**super()._meta(), "topk": self.topk}

    def _tensors(self) -> Dict[str, torch.Tensor]:
        return {"values": self.values, "classes": self.classes}

    def _encode(self, probs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        values, classes = probs.topk(self.topk, dim=1)
        return values.to(torch.float16), classes.to(torch.int32)  # int32 on the wire: gloo has no int16

    def _store(self, index: torch.Tensor, *payload: torch.Tensor) -> None:
        values, classes = payload
        self.values[index] = values
        self.classes[index] = classes.to(self.classes.dtype)

    def _read(self, index: torch.Tensor) -> torch.Tensor:
        values = self.values[index].float()
        rest = self.num_classes - self.topk
        residual = (1.0 - values.sum(dim=1, keepdim=True)).clamp_min(0.0)
        fill = residual / rest if rest else torch.zeros_like(residual)
        dense = fill.expand(values.shape[0], self.num_classes).clone()
        dense.scatter_(1, self.classes[index].long(), values)
        return dense / dense.sum(dim=1, keepdim=True).clamp_min(torch.finfo(dense.dtype).tiny)


def create_prob_bank(kind: str, num_samples: int, num_classes: int, topk: int = 10,
                     device: Device = "cpu") -> ProbBank:
    """Build a ``"dense"`` or ``"compact"`` bank."""
    if kind == "dense":
        return DenseProbBank(num_samples, num_classes, device)
    if kind == "compact":
        return CompactProbBank(num_samples, num_classes, topk, device)
    raise ValueError(f"unknown probability bank kind {kind!r}; expected 'dense' or 'compact'")


def bank_sizes(kinds: List[str], num_samples: int, num_classes: int, topk: int = 10) -> Dict[str, int]:
    """Bytes of each bank kind at the given size, measured from meta-device tensors (nothing is allocated)."""
    return {kind: create_prob_bank(kind, num_samples, num_classes, topk, device="meta").nbytes for kind in kinds}
