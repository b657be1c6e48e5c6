"""AST smooth-expert options: per-layer normalised weight perturbation, momentum reset at the x0.6 lr drop."""
import torch
import torch.nn.functional as F
from torch import nn

from vsd.distill.experts import ExpertSpec, conv_slices, perturb_weights, train_expert
from vsd.distill.flat import FlatModel


def test_conv_slices_follow_the_flat_order():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 3, 1, bias=False), nn.Flatten(),
                        nn.Linear(3, 2))
    fm = FlatModel(net)
    # conv0.weight 18, conv0.bias 2, bn.weight 2, bn.bias 2, conv2.weight 6, linear 6 + 2
    assert conv_slices(fm.shapes) == [slice(0, 18), slice(24, 30)]


def test_perturbation_is_normalised_per_layer_against_hand_computation():
    w = torch.arange(1.0, 11.0)
    layers = [slice(0, 3), slice(5, 9)]
    out = perturb_weights(w, layers, 0.5, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    hand = w.clone()
    for layer in layers:  # one draw per layer, each divided by its own norm
        d = torch.randn(layer.stop - layer.start, generator=g)
        hand[layer] = w[layer] + 0.5 * w[layer] * d / d.norm()
    assert torch.allclose(out, hand)
    for layer in layers:
        assert torch.allclose(((out[layer] - w[layer]) / w[layer]).norm(), torch.tensor(0.5))
    assert torch.equal(out[3:5], w[3:5]) and torch.equal(out[9:], w[9:])


def test_lr_drop_rebuilds_the_optimizer_momentum_reset():
    """Replay AST's loop by hand: SGD with momentum; after epoch ``epochs // 2 + 1`` (= 4 of 0..5) a NEW optimizer at
    lr * 0.6, so epoch 5 starts without momentum."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    spec = ExpertSpec(epochs=6, lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=8, lr_decay=0.6, augment=False)
    net, hand_net = nn.Linear(3, 2), nn.Linear(3, 2)
    hand_net.load_state_dict(net.state_dict())
    traj = train_expert(net, x, y, spec, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(hand_net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for epoch in range(6):
        loss = F.cross_entropy(hand_net(x), y)  # one full batch per epoch: the order does not matter
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch == 4:
            opt = torch.optim.SGD(hand_net.parameters(), lr=0.06, momentum=0.9, weight_decay=1e-3)
    hand = torch.cat([p.detach().reshape(-1) for p in hand_net.parameters()])
    assert torch.allclose(traj[-1], hand, atol=1e-6)
