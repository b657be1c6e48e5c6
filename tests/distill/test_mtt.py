"""The mtt distiller end to end on digits (tiny): exact resume, divergence guard, bad input."""
import json
import re

import pytest
import torch

from vsd.config import load_config
from vsd.distill import load_distilled, run_distiller
from vsd.distill import mtt as mtt_module
from vsd.distill.experts import BufferMismatchError


def _cfg(tmp_path, *extra):
    return load_config(None, [
        "data.name=digits", "model.name=convnet_d1", "model.kwargs={net_width: 4}", "train.device=cpu",
        "distill.method=mtt", "distill.ipc=1", "distill.iterations=4", "distill.syn_steps=3",
        "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
        "distill.expert_train_epochs=2", "distill.lr_img=100", f"distill.buffer_dir={tmp_path / 'buffers'}",
        "distill.checkpoint_every=2", "distill.eval_nets=0", "distill.progress=false",
        "distill.export_imagefolder=false", *extra])


def test_resume_gives_the_same_images(tmp_path):
    straight = run_distiller(_cfg(tmp_path, "distill.backend=unroll"), tmp_path / "a")
    assert straight["status"] == "ok" and straight["iterations_done"] == 4
    run_distiller(_cfg(tmp_path, "distill.iterations=2", "distill.backend=unroll"), tmp_path / "b")  # "killed"
    resumed = run_distiller(_cfg(tmp_path, "distill.backend=unroll"), tmp_path / "b")
    assert resumed["resumed_from"] == 2 and resumed["experts_trained_now"] == 0
    a, meta_a = load_distilled(tmp_path / "a")
    b, meta_b = load_distilled(tmp_path / "b")
    assert torch.equal(a["images"], b["images"]) and meta_a["syn_lr"] == meta_b["syn_lr"]


def test_auto_engine_is_chosen_once_and_kept_on_resume(tmp_path, monkeypatch):
    """auto probes on the first iteration, stores its choice in the checkpoint and reuses it after a resume, so
    the resumed run equals a straight run with that engine bit for bit."""
    first = run_distiller(_cfg(tmp_path, "distill.iterations=2", "distill.num_trajectories=2"), tmp_path / "b")
    chosen, batching = first["backend"], first["trajectory_batching"]
    assert chosen in ("unroll", "constant_memory") and "timed probe" in first["backend_reason"]
    assert batching in ("vmap", "sequential") and "timed probe" in first["trajectory_batching_reason"]

    def no_probe(*args, **kwargs):
        raise AssertionError("the engine must not be chosen again after a resume")

    monkeypatch.setattr(mtt_module, "choose_backend", no_probe)
    monkeypatch.setattr(mtt_module, "time_options", no_probe)
    resumed = run_distiller(_cfg(tmp_path, "distill.num_trajectories=2"), tmp_path / "b")
    assert resumed["resumed_from"] == 2 and resumed["backend"] == chosen and "kept" in resumed["backend_reason"]
    assert resumed["trajectory_batching"] == batching
    # the straight run with that engine, its batching forced to the same choice
    monkeypatch.setattr(mtt_module, "time_options", lambda call, options, device: (
        batching == "vmap", call(batching == "vmap"), "forced"))
    straight = run_distiller(_cfg(tmp_path, f"distill.backend={chosen}", "distill.num_trajectories=2"),
                             tmp_path / "a")
    assert straight["backend_reason"] == "set in the config" and straight["trajectory_batching"] == batching
    a, _ = load_distilled(tmp_path / "a")
    b, _ = load_distilled(tmp_path / "b")
    assert torch.equal(a["images"], b["images"])


def test_engines_give_the_same_run_and_auto_respects_the_memory_budget(tmp_path):
    """Both exact engines give the same distilled set up to float rounding (4 iterations, momentum, 2
    trajectories); a budget too small for the unroll makes auto take constant_memory without a probe."""
    extra = ("distill.num_trajectories=2", "distill.inner_momentum=0.5", "distill.checkpoint_every=0")
    runs = {b: run_distiller(_cfg(tmp_path, f"distill.backend={b}", *extra), tmp_path / b)
            for b in ("unroll", "constant_memory")}
    sets = {b: load_distilled(tmp_path / b)[0]["images"] for b in runs}
    assert torch.allclose(sets["unroll"], sets["constant_memory"], rtol=1e-4, atol=1e-5)
    assert abs(runs["unroll"]["syn_lr"] - runs["constant_memory"]["syn_lr"]) < 1e-7
    tight = run_distiller(_cfg(tmp_path, "distill.max_memory_gb=1e-9", *extra), tmp_path / "tight")
    assert tight["backend"] == "constant_memory" and "budget" in tight["backend_reason"]
    assert tight["cpu_allocator"].startswith("large blocks mmap-ed")
    assert torch.allclose(load_distilled(tmp_path / "tight")[0]["images"], sets["constant_memory"], rtol=1e-4,
                          atol=1e-5)


def test_cpu_allocator_is_set_before_the_engine_probe(tmp_path, monkeypatch):
    """On CPU the large-block policy is applied once, before auto's timed probe (so the probe times the engines
    as they will run) and before the first iteration of a configured flat engine; results say what it did (the
    higher engine keeps the allocator as it is)."""
    order = []
    real_choose = mtt_module.choose_backend
    monkeypatch.setattr(mtt_module, "large_blocks_policy",
                        lambda need, budget, device: order.append(("policy", need > 0)) or "policy line")
    monkeypatch.setattr(mtt_module, "choose_backend",
                        lambda *args, **kwargs: order.append(("probe", True)) or real_choose(*args, **kwargs))
    auto = run_distiller(_cfg(tmp_path, "distill.iterations=2"), tmp_path / "auto")
    assert order == [("policy", True), ("probe", True)] and auto["cpu_allocator"] == "policy line"
    order.clear()
    for backend in ("unroll", "constant_memory"):
        order.clear()
        run = run_distiller(_cfg(tmp_path, "distill.iterations=2", f"distill.backend={backend}"), tmp_path / backend)
        assert order == [("policy", True)] and run["cpu_allocator"] == "policy line"
    order.clear()
    higher = run_distiller(_cfg(tmp_path, "distill.iterations=2", "distill.backend=higher"), tmp_path / "higher")
    assert order == [] and higher["cpu_allocator"] is None


def test_nan_stops_and_keeps_the_last_good_set(tmp_path, monkeypatch):
    real = mtt_module.batched_matching_grads
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss, grads = real(*args, **kwargs)
        if calls["n"] == 3:
            grads["images"] = grads["images"] * float("nan")
        return loss, grads

    monkeypatch.setattr(mtt_module, "batched_matching_grads", flaky)
    out = run_distiller(_cfg(tmp_path, "distill.checkpoint_every=0", "distill.backend=unroll"), tmp_path / "nan")
    assert out["status"] == "diverged" and out["iterations_done"] == 2 and "not finite" in out["message"]
    tensors, _ = load_distilled(tmp_path / "nan")
    assert torch.isfinite(tensors["images"]).all()


def test_syn_lr_is_clamped_not_negative(tmp_path):
    out = run_distiller(_cfg(tmp_path, "distill.lr_lr=1000", "distill.min_syn_lr=1e-4", "seed=3"), tmp_path / "lr")
    assert out["syn_lr"] >= 1e-4 and out["syn_lr_clamped"] >= 1
    assert out["seed"] == 3  # tools/report.py's per-seed tables read it


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="larger than the smallest class"):
        run_distiller(_cfg(tmp_path, "distill.ipc=1000"), tmp_path / "x")
    with pytest.raises(ValueError, match="exceeds the 2 epochs"):
        run_distiller(_cfg(tmp_path, "distill.max_start_epoch=5"), tmp_path / "x")
    with pytest.raises(ValueError, match="must be positive"):
        run_distiller(_cfg(tmp_path, "distill.lr_teacher=-0.01"), tmp_path / "x")


def test_cross_architecture_models_get_their_own_kwargs_and_a_random_baseline(tmp_path, monkeypatch):
    """eval_models are built with eval_model_kwargs (not the ConvNet's net_width, which a ResNet refuses) and
    get the random real subset too; both sets train the same number of networks with the same arguments."""
    import vsd.models

    built = []
    real = vsd.models.create_network

    def record(name, kwargs, *args):
        net = real(name, kwargs, *args)
        if next(net.parameters()).device.type != "meta":  # the up-front meta-device check is not an evaluation
            built.append((name, dict(kwargs)))
        return net

    monkeypatch.setattr(vsd.models, "create_network", record)
    plain = run_distiller(_cfg(tmp_path, "distill.iterations=1", "distill.eval_nets=1", "distill.eval_epochs=1",
                               "distill.eval_models=[resnet32_cifar]"), tmp_path / "plain")
    assert "eval_distilled@resnet32_cifar" in plain and [k for n, k in built if n == "resnet32_cifar"] == [{}] * 2
    built.clear()
    kwargs = {"layers": [1, 1, 1], "widths": [4, 4, 8]}
    out = run_distiller(_cfg(tmp_path, "distill.iterations=1", "distill.eval_nets=2", "distill.eval_epochs=1",
                             "distill.eval_models=[resnet32_cifar]",
                             f"distill.eval_model_kwargs={{resnet32_cifar: {kwargs}}}"), tmp_path / "x")
    assert len(out["eval_distilled@resnet32_cifar"]["accs"]) == 2
    assert len(out["eval_random_real@resnet32_cifar"]["accs"]) == 2
    assert [k for n, k in built if n == "resnet32_cifar"] == [kwargs] * 4
    assert all(k == {"net_width": 4} for n, k in built if n == "convnet_d1")
    with pytest.raises(ValueError, match="not in distill.eval_models"):
        run_distiller(_cfg(tmp_path, "distill.eval_model_kwargs={vit_tiny_patch4_32: {depth: 1}}"), tmp_path / "y")


def test_buffer_for_another_model_is_refused(tmp_path):
    run_distiller(_cfg(tmp_path, "distill.iterations=0"), tmp_path / "ok")
    folder = next((tmp_path / "buffers").iterdir())
    with pytest.raises(BufferMismatchError, match="another architecture or data set"):
        run_distiller(_cfg(tmp_path, "model.kwargs={net_width: 8}", f"distill.buffer_path={folder}"), tmp_path / "bad")


def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "distill.py"
    spec = importlib.util.spec_from_file_location("vsd_distill_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_results_and_refuses_bad_input(tmp_path, capsys):
    tool = _tool()
    args = ["--config", str(tmp_path / "missing.yaml")]
    assert tool.main(args) == 2 and "does not exist" in capsys.readouterr().err
    base = ["data.name=digits", "model.name=convnet_d1", "model.kwargs={net_width: 4}", "train.device=cpu",
            "distill.method=mtt", "distill.ipc=1", "distill.iterations=1", "distill.syn_steps=2",
            "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
            "distill.expert_train_epochs=1", f"distill.buffer_dir={tmp_path / 'b'}", "distill.eval_nets=1",
            "distill.eval_epochs=1", "distill.progress=false", f"output={tmp_path / 'out'}",
            "distill.backend=higher", "distill.inner_optimizer=adam", "distill.eval_models=[convnet_d2]"]
    assert tool.main(["--set", *base]) == 0
    assert (tmp_path / "out" / "results.json").exists() and (tmp_path / "out" / "config.yaml").exists()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["status"] == "ok"
    assert {"eval_distilled", "eval_random_real", "eval_distilled@convnet_d2"} <= set(results)
    assert tool.main(["--set", *base]) == 2 and "already holds a finished run" in capsys.readouterr().err
    assert tool.main(["--set", *base, "distill.ipc=500"]) == 2


@pytest.mark.slow
def test_all_options_together_zca_soft_labels_representative(tmp_path):
    out = run_distiller(_cfg(tmp_path, "distill.zca=true", "distill.soft_labels=true", "distill.init=representative",
                             "distill.inner_momentum=0.5", "distill.intermediate_matching=true",
                             "distill.expert_epochs=2", "distill.syn_steps=4", "distill.balance_loss=true",
                             "distill.weight_perturb=1.0", "distill.backend=constant_memory",
                             "distill.num_trajectories=2", "distill.expert_grad_penalty=2.0",
                             "distill.expert_loss_scaling=true", "distill.expert_momentum=0.9",
                             "distill.iterations=2"), tmp_path / "all")
    assert out["status"] == "ok"
    tensors, meta = load_distilled(tmp_path / "all")
    assert meta["zca"] and meta["label_kind"] == "soft" and "zca_inverse" in tensors
    assert torch.allclose(tensors["labels"].sum(1), torch.ones(10))
    from vsd.data import create_dataset

    test = create_dataset("distilled", "test", root=str(tmp_path / "all"))
    assert abs(float(test.images.mean())) < 0.1  # whitened with the exported matrices


@pytest.mark.slow
def test_ddp_two_ranks_share_experts_and_gradients(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sets = ["data.name=digits", "model.name=convnet_d1", "model.kwargs={net_width: 4}", "train.device=cpu",
            "distill.method=mtt", "distill.ipc=1", "distill.iterations=2", "distill.syn_steps=2",
            "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=4",
            "distill.expert_train_epochs=1", f"distill.buffer_dir={tmp_path / 'b'}", "distill.eval_nets=0",
            "distill.progress=false", f"output={tmp_path / 'out'}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "tools" / "distill.py"), "--set", *sets]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = next((tmp_path / "b").iterdir())
    assert len(list(folder.glob("expert_*.safetensors"))) == 4
    tensors, meta = load_distilled(tmp_path / "out")
    assert meta["iterations"] == 2 and torch.isfinite(tensors["images"]).all()


def test_unfit_eval_model_kwargs_refused_before_any_compute(tmp_path):
    cfg = _cfg(tmp_path, "distill.eval_models=[resnet32_cifar]",
               "distill.eval_model_kwargs={resnet32_cifar: {net_width: 4}}")
    with pytest.raises(ValueError, match="'resnet32_cifar' with eval_model_kwargs .* cannot be built"):
        run_distiller(cfg, tmp_path / "bad")
    assert not (tmp_path / "buffers").exists()  # no expert was trained


def test_cpu_memory_budget_is_shared_by_the_local_processes(tmp_path, monkeypatch):
    """torchrun's processes on one machine share its RAM: each rank's CPU budget is the available memory divided
    by LOCAL_WORLD_SIZE (else every rank would plan for the whole machine); max_memory_gb is taken as given."""
    budgets = []
    monkeypatch.setattr(mtt_module, "available_memory_bytes", lambda device: 12 * 2 ** 30)
    monkeypatch.setattr(mtt_module, "large_blocks_policy",
                        lambda need, budget, device: budgets.append(budget) or "policy line")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    run_distiller(_cfg(tmp_path, "distill.iterations=1", "distill.backend=unroll"), tmp_path / "shared")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    run_distiller(_cfg(tmp_path, "distill.iterations=1", "distill.backend=unroll"), tmp_path / "alone")
    run_distiller(_cfg(tmp_path, "distill.iterations=1", "distill.backend=unroll", "distill.max_memory_gb=5"),
                  tmp_path / "set")
    assert budgets == [4 * 2 ** 30, 12 * 2 ** 30, 5 * 2 ** 30]


def test_every_rank_takes_rank_0s_engine_and_batching(tmp_path, monkeypatch):
    """Under DDP each rank probes, then takes rank 0's engine and trajectory batching (the ones rank 0's checkpoint
    stores, so a resume repeats what every rank ran). Simulated: rank 0 broadcasts the option this rank did not
    pick."""
    class TwoRanks:
        @staticmethod
        def is_available():
            return True

        @staticmethod
        def is_initialized():
            return True

        @staticmethod
        def get_world_size():
            return 2

        @staticmethod
        def broadcast(index, src):
            index.fill_(1 - int(index))  # the other of the first two options

    monkeypatch.setattr(mtt_module, "dist", TwoRanks)
    results = run_distiller(_cfg(tmp_path, "distill.iterations=2", "distill.num_trajectories=2"), tmp_path / "r1")

    def probe_winner(reason):  # "... timed probe (CPU time): a 0.1 s/it, b 0.2 s/it ...": the faster one
        timings = re.findall(r"(\w+) ([0-9.e-]+) s/it", reason)
        return min(timings, key=lambda t: float(t[1]))[0]

    for key, chosen in (("backend_reason", results["backend"]),
                        ("trajectory_batching_reason", results["trajectory_batching"])):
        assert results[key].startswith("rank 0's choice (this rank's probe: timed probe"), results[key]
        assert probe_winner(results[key]) != chosen, results[key]
