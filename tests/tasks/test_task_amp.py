"""Mixed precision (``train.amp``) for every task of the method matrix (``tools/smoke.py``), on CPU autocast.

* bf16 vs float32 at the same weights, batch and RNG state: every logged loss term agrees within
  ``rtol=2e-2, atol=2e-3`` (bfloat16 keeps 8 mantissa bits, ~4e-3 relative per rounding; a few layers of
  matrix products stay well inside 2e-2), and the loss itself is float32;
* the loss math runs in float32: no softmax / log-softmax / KL / cross-entropy / MSE / L1 / normalize called
  from ``vsd/losses`` returns bfloat16 (the network's own layers may);
* the trainer runs ``train.amp: bf16`` and ``fp16`` (loss scaling) end to end on CPU; ``train.amp`` accepts the
  old booleans and rejects unknown values with the valid choices.
"""
import math
import traceback

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vsd.config import ConfigError, load_config
from vsd.engine.amp import autocast_dtype
from vsd.engine.trainer import Trainer
from tests.engine.smoke_tool import cpu_trainer, smoke_module

RTOL, ATOL = 2e-2, 2e-3
LOSS_OPS = {F.softmax, F.log_softmax, F.kl_div, F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.normalize,
            torch.softmax, torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax, torch.logsumexp}


class LowPrecisionLossOps(TorchFunctionMode):
    """Records loss ops called from ``vsd/losses`` whose result is bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in LOSS_OPS and isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16:
            ours = [f for f in traceback.extract_stack() if "/vsd/" in f.filename.replace("\\", "/")]
            if ours and "/vsd/losses/" in ours[-1].filename.replace("\\", "/"):  # innermost vsd caller
                self.calls.add(f"{func.__name__} at {ours[-1].filename}:{ours[-1].lineno}")
        return out


@pytest.mark.parametrize("case", smoke_module().METHOD_CASES, ids=lambda c: c.name)
def test_bf16_loss_close_to_float32_and_loss_math_in_float32(case, tmp_path):
    trainer, batch = cpu_trainer(case, tmp_path)
    task = trainer.task
    kwargs = {"index": batch[2]} if task.needs_index else {}
    for epoch in range(trainer.cfg.train.epochs):
        task.train()
        task.on_epoch_start(epoch)
        terms = {}
        for precision in ("float32", "bf16"):
            torch.manual_seed(epoch)  # the same masks / random draws in both precisions
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"), \
                    LowPrecisionLossOps() as spy:
                out = task(batch[0], batch[1], **kwargs)
            terms[precision] = {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
        assert spy.calls == set(), f"epoch {epoch}: loss math in bfloat16: {sorted(spy.calls)}"
        assert terms["bf16"]["loss"].dtype == torch.float32
        for key, ref in terms["float32"].items():
            low = float(terms["bf16"][key])
            assert math.isfinite(low)
            assert low == pytest.approx(float(ref), rel=RTOL, abs=ATOL), f"epoch {epoch}: {key}"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_trainer_runs_mixed_precision_on_cpu(tmp_path, amp):
    smoke = smoke_module()
    cfg = load_config(None, smoke.TINY_DATA + smoke.TINY_TRAIN + smoke.TINY_CONVNET
                      + [f"output={tmp_path}", "train.device=cpu", f"train.amp={amp}", "train.epochs=1"])
    trainer = Trainer(cfg)
    assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert (trainer.scaler is not None) == (amp == "fp16")
    results = trainer.fit()
    trainer.close()
    assert math.isfinite(results["eval_loss"])


def test_amp_setting_values():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(True, cpu) is None and autocast_dtype(True, cuda) is torch.bfloat16  # the old default
    assert autocast_dtype(False, cuda) is None and autocast_dtype("none", cuda) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cuda) is torch.float16
    assert load_config(None, ["train.amp=false"]).train.amp is False
    assert load_config(None, ["train.amp=bf16"]).train.amp == "bf16"
    with pytest.raises(ConfigError, match=r"train\.amp.*'float16'.*none, bf16, fp16"):
        load_config(None, ["train.amp=float16"])
