"""PS-KD wrappers: the dense and compact probability banks (reads, writes, memory, DDP sync, checkpoint
state) and the snapshot wrapper in a plain training loop."""

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.losses import PSKDLoss, PSKDOutput, pskd_loss
from vsd.wrappers import CompactProbBank, DenseProbBank, PSKDSnapshot, create_prob_bank
from vsd.wrappers.prob_bank import bank_sizes


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ banks
def test_dense_bank_stores_exactly_and_unwritten_rows_read_as_onehot():
    bank = DenseProbBank(6, 4)
    probs = torch.softmax(torch.randn(2, 4), 1)
    bank.update(torch.tensor([1, 4]), probs)
    got = bank.get(torch.tensor([4, 0, 1]), torch.tensor([3, 2, 0]))
    assert torch.equal(got[0], probs[1]) and torch.equal(got[2], probs[0])
    assert got[1].tolist() == [0.0, 0.0, 1.0, 0.0]  # never written -> one-hot of its label
    assert bank.written.tolist() == [False, True, False, False, True, False]


def test_compact_bank_spreads_residual_mass_uniformly():
    bank = CompactProbBank(3, 5, topk=2)
    bank.update(torch.tensor([2]), torch.tensor([[0.06, 0.5, 0.04, 0.3, 0.1]]))
    got = bank.get(torch.tensor([2]), torch.tensor([1]))[0]
    rest = (1 - 0.5 - 0.3) / 3  # mass of the 3 classes outside the top-2
    assert torch.allclose(got, torch.tensor([rest, 0.5, rest, 0.3, rest]), atol=1e-3)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert bank.values.dtype == torch.float16 and bank.classes.dtype == torch.int16


def test_compact_bank_with_all_classes_is_exact_to_fp16():
    probs = torch.softmax(torch.randn(4, 6), 1)
    bank = CompactProbBank(4, 6, topk=50)
    assert bank.topk == 6
    bank.update(torch.arange(4), probs)
    assert torch.allclose(bank.get(torch.arange(4), torch.zeros(4, dtype=torch.long)), probs, atol=1e-3)


def test_memory_at_imagenet_scale_compact_under_5_percent():
    n, c = 1_281_167, 1000
    sizes = bank_sizes(["dense", "compact"], n, c, topk=10)
    assert sizes["dense"] == n * c * 4 + n                    # fp32 probabilities + written mask
    assert sizes["compact"] == n * 10 * (2 + 2) + n           # fp16 values + int16 classes + mask
    assert sizes["compact"] <= 0.05 * sizes["dense"]
    assert sizes["compact"] < 2 ** 30 / 10                    # far below 1 GB
    assert create_prob_bank("compact", n, c, topk=48, device="meta").nbytes <= 0.05 * sizes["dense"]


@pytest.mark.parametrize("kind", ["dense", "compact"])
def test_state_round_trips_through_checkpoint(tmp_path, kind):
    bank = create_prob_bank(kind, 10, 5, topk=3)
    bank.update(torch.tensor([0, 7, 3]), torch.softmax(torch.randn(3, 5), 1))
    save_checkpoint(tmp_path / "bank.safetensors", {"bank": bank.state_dict()})
    fresh = create_prob_bank(kind, 10, 5, topk=3)
    fresh.load_state_dict(load_checkpoint(tmp_path / "bank.safetensors")["bank"])
    idx, y = torch.arange(10), torch.arange(10) % 5
    assert torch.equal(fresh.get(idx, y), bank.get(idx, y))
    assert torch.equal(fresh.written, bank.written)


def test_state_mismatch_errors():
    state = DenseProbBank(10, 5).state_dict()
    with pytest.raises(ValueError, match="does not match"):
        CompactProbBank(10, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="does not match"):
        DenseProbBank(11, 5).load_state_dict(state)


def test_index_and_shape_errors():
    bank = DenseProbBank(5, 3)
    with pytest.raises(ValueError, match=r"\[0, 5\) for a bank of 5 samples"):
        bank.get(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D integer"):
        bank.update(torch.tensor([0.0]), torch.rand(1, 3))
    with pytest.raises(ValueError, match=r"probs must have shape \(2, 3\)"):
        bank.update(torch.tensor([0, 1]), torch.rand(2, 4))
    with pytest.raises(ValueError, match="unknown probability bank kind"):
        create_prob_bank("sparse", 5, 3)


def _ddp_worker(rank, world, init_file, kind, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)
    bank = create_prob_bank(kind, 8, 4, topk=2)
    index = torch.tensor([0, 1, 2]) if rank == 0 else torch.tensor([5, 6])  # uneven batches
    probs = torch.softmax(torch.randn(len(index), 4), 1)
    bank.update(index, probs)
    everything = bank.get(torch.arange(8), torch.zeros(8, dtype=torch.long))
    own = bank.get(index, torch.zeros(len(index), dtype=torch.long))
    queue.put((rank, index.tolist(), own.tolist(), everything.tolist(), bank.written.tolist()))
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["dense", "compact"])
def test_ddp_ranks_hold_the_full_bank(tmp_path, kind):
    # spawn, not fork: forking a process whose torch thread pools already run can deadlock gloo
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, tmp_path / "init", kind, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:  # read before join: a child exits only once its queued data is consumed
        rank, *tensors = queue.get(timeout=120)
        results[rank] = [torch.tensor(t) for t in tensors]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (idx0, own0, all0, w0), (idx1, own1, all1, w1) = results[0], results[1]
    assert torch.equal(all0, all1) and torch.equal(w0, w1)
    assert w0.tolist() == [True, True, True, False, False, True, True, False]
    assert torch.equal(all0[idx0], own0) and torch.equal(all0[idx1], own1)  # each rank sees the other's rows


# ------------------------------------------------------------------------------------------------ snapshot
def _tiny_model():
    return timm.create_model("test_resnet", num_classes=5)


def test_snapshot_first_epoch_is_plain_cross_entropy_then_previous_model():
    model = PSKDSnapshot(_tiny_model(), epochs=4, alpha_T=0.8)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 4])
    out = model(x)
    assert isinstance(out, PSKDOutput) and out.prev_probs is None and out.alpha == pytest.approx(0.2)
    assert torch.allclose(PSKDLoss()(out, y), F.cross_entropy(out.logits, y))
    model.end_epoch()
    expected_prev = torch.softmax(model.snapshot(x), 1)
    with torch.no_grad():  # train the live model a bit: the snapshot must not move
        for p in model.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = model(x)
    assert out.alpha == pytest.approx(0.4)
    assert torch.allclose(out.prev_probs, expected_prev)
    assert torch.allclose(PSKDLoss()(out, y), pskd_loss(out.logits, y, expected_prev, 0.4))
    model.model.eval()
    assert not torch.allclose(model.model(x), model.snapshot(x))


def test_snapshot_in_a_plain_training_loop():
    model = PSKDSnapshot(_tiny_model(), epochs=2)
    loss_fn = PSKDLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        model.train()
        output = model(x)
        loss = loss_fn(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.end_epoch()
    assert all(p.grad is not None for p in model.model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.snapshot.parameters())
    logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 5)  # timm validation gets plain logits


def test_snapshot_stays_out_of_state_dict_and_parameters():
    model = PSKDSnapshot(_tiny_model(), epochs=3)
    model.end_epoch()
    assert all(k.startswith("model.") for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.model.parameters())
    model.to(torch.float64)
    assert next(model.snapshot.parameters()).dtype == torch.float64


def test_snapshot_state_round_trips_through_checkpoint(tmp_path):
    model = PSKDSnapshot(_tiny_model(), epochs=3)
    model.end_epoch()
    save_checkpoint(tmp_path / "s.safetensors", {"task": model.snapshot_state()})
    fresh = PSKDSnapshot(_tiny_model(), epochs=3)
    assert fresh.snapshot is None
    fresh.load_snapshot_state(load_checkpoint(tmp_path / "s.safetensors")["task"])
    assert fresh.epoch == 1
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(fresh.snapshot(x), model.snapshot(x))
    with pytest.raises(ValueError, match="'epoch' and 'snapshot'"):
        fresh.load_snapshot_state({"epoch": 1})


def test_resume_at_uses_the_loaded_weights_as_snapshot():
    model = PSKDSnapshot(_tiny_model(), epochs=3)
    model.resume_at(0)
    assert model.snapshot is None and model.epoch == 0
    model.resume_at(2)
    x = torch.randn(2, 3, 16, 16)
    model.model.eval()
    assert model.epoch == 2 and torch.allclose(model.snapshot(x), model.model(x))
