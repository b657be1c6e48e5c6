"""``tools/distill.py`` under ``torchrun`` with 2 CPU processes (gloo): finite losses, the same synthetic set on
both ranks, every file written by one rank, no hang (a timeout); exact kill-and-resume per rank; and, without a
GPU, the device each rank's tensors are created on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vsd.config import load_config
from vsd.distill import krr_st as krr_st_module
from vsd.distill import mtt as mtt_module
from vsd.distill import run_distiller

ROOT = Path(__file__).resolve().parents[2]
MTT = ["data.name=digits", "data.image_size=8", "model.name=convnet_d1", "model.kwargs={net_width: 4}",
       "train.device=cpu", "distill.method=mtt", "distill.ipc=1", "distill.iterations=4", "distill.syn_steps=2",
       "distill.expert_epochs=1", "distill.max_start_epoch=2", "distill.num_experts=2",
       "distill.expert_train_epochs=2", "distill.checkpoint_every=2", "distill.eval_nets=1", "distill.eval_epochs=1",
       "distill.eval_random_baseline=false", "distill.progress=false", "distill.export_imagefolder=false"]
KRR_ST = ["data.name=digits", "data.image_size=8", "model.name=convnet_d1", "model.kwargs={net_width: 4}",
          "train.device=cpu", "distill.method=krr_st", "distill.num_images=6", "distill.iterations=4",
          "distill.batch_real=16", "distill.pool_size=2", "distill.pool_max_steps=3",
          "distill.source_classes=[0, 1]", "distill.checkpoint_every=2", "distill.log_every=2",
          "distill.target.epochs=1", "distill.target.batch_size=32", "distill.target.projector=[8]",
          "distill.transfer.enabled=false"]


def _torchrun(tmp_path, name, sets, stop_at=None, nproc=2):
    """Run the probed tool; return (process, probe folder, output folder)."""
    probe, out = tmp_path / f"probe_{name}", tmp_path / "out"
    probe.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VSD_PROBE_DIR": str(probe)}
    if stop_at is not None:
        env["VSD_PROBE_STOP_AT"] = str(stop_at)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests" / "distill" / "ddp_probe.py"), "--set", *sets, f"output={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=420, env=env)
    return proc, probe, out


def _writes(probe, rank):
    path = probe / f"writes_rank{rank}.txt"
    return path.read_text().split() if path.exists() else []


def _check_two_ranks(tmp_path, proc, probe, out, names, final, loss_key):
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and torch.isfinite(torch.tensor(results[loss_key]))
    r0, r1 = (load_file(str(probe / f"rank{r}_it{final}.safetensors")) for r in (0, 1))
    for key in names:
        assert torch.isfinite(r0[key]).all() and torch.equal(r0[key], r1[key]), key
    exported = load_file(str(out / "distilled.safetensors"))
    assert torch.equal(exported["images"], r0[names[0]])
    w0, w1 = _writes(probe, 0), _writes(probe, 1)
    assert not [w for w in w1 if Path(w).parent == out], "rank 1 wrote into the output folder"
    for name in ("results.json", "config.yaml", "distilled.safetensors"):
        assert w0.count(str(out / name)) == 1, name
    experts = [w for w in w0 + w1 if Path(w).name.startswith("expert_")]
    assert len(experts) == len(set(experts))  # each expert trained by one rank
    return results


@pytest.mark.parametrize("backend", [
    "unroll", pytest.param("constant_memory", marks=pytest.mark.slow), pytest.param("higher", marks=pytest.mark.slow)])
def test_mtt_two_ranks(tmp_path, backend):
    """Two trajectories per iteration: each rank times vmap against sequential and takes rank 0's pick (gloo
    broadcast); the synthetic sets stay identical."""
    sets = MTT + [f"distill.backend={backend}", f"distill.buffer_dir={tmp_path / 'buffers'}",
                  "distill.num_trajectories=2"]
    proc, probe, out = _torchrun(tmp_path, backend, sets)
    results = _check_two_ranks(tmp_path, proc, probe, out, ["images", "syn_lr"], 4, "final_loss")
    assert results["iterations_done"] == 4 and results["experts_trained_now"] >= 1
    if backend != "higher":  # higher always runs trajectories in turn
        assert results["trajectory_batching"] in ("vmap", "sequential") and results["cpu_allocator"]
    folder = next((tmp_path / "buffers").iterdir())
    assert sorted(p.name for p in folder.glob("expert_*")) == ["expert_000.safetensors", "expert_001.safetensors"]


@pytest.mark.slow
def test_krr_st_two_ranks_equal_one_rank(tmp_path):
    proc, probe, out = _torchrun(tmp_path, "two", KRR_ST)
    _check_two_ranks(tmp_path, proc, probe, out, ["x_syn", "y_syn"], 4, "final_outer_mse")
    single = run_distiller(load_config(None, KRR_ST), tmp_path / "single")
    two = json.loads((out / "results.json").read_text())
    a, b = load_file(str(out / "distilled.safetensors")), load_file(str(tmp_path / "single" / "distilled.safetensors"))
    # the real batch is split over the ranks and the gradients re-weighted: the single-process run to float error
    torch.testing.assert_close(a["images"], b["images"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["targets"], b["targets"], rtol=1e-4, atol=1e-5)
    assert two["final_outer_mse"] == pytest.approx(single["final_outer_mse"], rel=1e-4)


@pytest.mark.slow
def test_mtt_kill_and_resume_is_exact_on_every_rank(tmp_path):
    sets = MTT + [f"distill.buffer_dir={tmp_path / 'buffers'}", "distill.eval_nets=0"]
    straight = tmp_path / "straight"
    straight.mkdir()
    proc, probe_a, _ = _torchrun(straight, "a", sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _, out = _torchrun(tmp_path, "killed", sets, stop_at=2)
    assert proc.returncode != 0 and (out / "checkpoint.safetensors").exists() and not (out / "results.json").exists()
    proc, probe_b, _ = _torchrun(tmp_path, "resumed", sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["resumed_from"] == 2
    for rank in (0, 1):
        a = load_file(str(probe_a / f"rank{rank}_it4.safetensors"))
        b = load_file(str(probe_b / f"rank{rank}_it4.safetensors"))
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["syn_lr"], b["syn_lr"]), rank


class _Created(Exception):
    """Raised by a probe with the device the run's tensors would be created on."""


def _fake_second_gpu_rank(monkeypatch):
    """Rank 1 of 2 on a machine that reports CUDA; the process group and the GPU selection are recorded."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device("cuda", d)
                                                                          if isinstance(d, int) else d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw.get("backend"))))
    return calls


def test_mtt_creates_the_data_on_the_ranks_gpu(monkeypatch):
    calls = _fake_second_gpu_rank(monkeypatch)

    def load_problem(cfg, device):
        calls.append(("data", device))
        raise _Created

    monkeypatch.setattr(mtt_module, "load_problem", load_problem)
    cfg = load_config(None, MTT + ["train.device=auto"])
    with pytest.raises(_Created):
        mtt_module.distill_mtt(cfg, Path("unused"))
    assert calls[-1] == ("data", torch.device("cuda", 1))
    assert ("set_device", torch.device("cuda", 1)) in calls[:-1] and ("init", "nccl") in calls


def test_krr_st_creates_its_state_on_the_ranks_gpu(monkeypatch):
    calls = _fake_second_gpu_rank(monkeypatch)

    def target_encoder(cfg, images, info, out_dir, device, *args):
        calls.append(("encoder", device))
        raise _Created

    monkeypatch.setattr(krr_st_module, "_target_encoder", target_encoder)
    with pytest.raises(_Created):
        krr_st_module.distill_krr_st(load_config(None, KRR_ST + ["train.device=auto"]), Path("unused"))
    assert calls[-1] == ("encoder", torch.device("cuda", 1))
    assert ("set_device", torch.device("cuda", 1)) in calls[:-1]
