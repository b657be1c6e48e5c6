"""Tests of the KRR-ST model pool (vsd.distill.model_pool)."""
import pytest
import torch
import torch.nn as nn

from vsd.distill.model_pool import ModelPool, head_keys, member_features


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2)

    def embed(self, x):
        return torch.relu(self.body(x))

    def forward(self, x):
        return self.head(self.embed(x))


def _pool(size=3, max_steps=4, seed=0):
    return ModelPool(_Tiny, size=size, max_steps=max_steps,
                     make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                     generator=torch.Generator().manual_seed(seed))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)


def test_size_zero_is_an_error():
    with pytest.raises(ValueError, match="pool size must be >= 1"):
        _pool(size=0)


def test_max_steps_too_small_is_an_error():
    with pytest.raises(ValueError, match="max_steps"):
        _pool(max_steps=1)


def test_warm_up_draws_steps_below_the_limit():
    pool = _pool(size=8, max_steps=5)
    pool.warm_up(*_data())
    assert all(1 <= s <= 4 for s in pool.steps)


def test_reset_after_limit_resets_the_counter_and_trains_again():
    torch.manual_seed(0)
    pool = _pool(size=1, max_steps=3)
    x, y = _data()
    for _ in range(3):
        pool.update(0, x, y)
    assert pool.steps == [3]
    old = pool.members[0]
    old_weight = old.body.weight.detach().clone()
    pool.update(0, x, y)                      # limit reached: re-initialise, counter to 0, then one step
    assert pool.members[0] is not old and pool.optimizers[0].param_groups[0]["params"][0] is pool.members[0].body.weight
    assert pool.steps == [1]
    assert not torch.allclose(pool.members[0].body.weight, old_weight)
    before = pool.members[0].body.weight.detach().clone()
    pool.update(0, x, y)                      # the fresh member keeps training (the official code's bug: it would not)
    assert pool.steps == [2]
    assert not torch.allclose(pool.members[0].body.weight, before)


def test_update_trains_towards_the_targets():
    torch.manual_seed(0)
    pool = _pool(size=1, max_steps=1000)
    x, y = _data()
    first = pool.update(0, x, y)
    for _ in range(50):
        last = pool.update(0, x, y)
    assert last < 0.5 * first


def test_output_width_mismatch_is_an_error():
    pool = _pool(size=1)
    with pytest.raises(ValueError, match="target width"):
        pool.update(0, torch.randn(6, 4), torch.randn(6, 3))


def test_bad_index():
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        _pool().update(3, *_data())


def test_state_round_trip_continues_identically(tmp_path):
    from vsd.engine.checkpoint import load_checkpoint, save_checkpoint

    x, y = _data()
    torch.manual_seed(0)
    a = _pool(seed=3)
    a.warm_up(x, y)
    save_checkpoint(tmp_path / "pool.safetensors", a.state_dict())
    rng = torch.get_rng_state()
    seq_a = [a.update(a.sample(), x, y) for _ in range(10)]

    torch.manual_seed(123)
    b = _pool(seed=99)
    b.load_state_dict(load_checkpoint(tmp_path / "pool.safetensors"))
    torch.set_rng_state(rng)
    seq_b = [b.update(b.sample(), x, y) for _ in range(10)]
    assert seq_a == seq_b
    assert a.steps == b.steps


def test_member_features_uses_timm_api_or_embed():
    import timm

    net = timm.create_model("resnet10t", num_classes=3)
    feats = member_features(net, torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, net.num_features)
    assert member_features(_Tiny(), torch.randn(2, 4)).shape == (2, 5)
    with pytest.raises(TypeError, match="penultimate"):
        member_features(nn.Linear(4, 2), torch.randn(2, 4))
    assert head_keys(net) == {"fc.weight", "fc.bias"}
