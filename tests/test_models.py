"""Model builders, parameter counting and matching, summaries."""

import copy

import pytest
import torch
from torch import nn

from hw1utils import models


def test_mlp_layers_and_count():
    net = models.mlp(3, [4, 5], 2)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 4), (4, 5), (5, 2)]
    assert models.count_params(net) == (3 * 4 + 4) + (4 * 5 + 5) + (5 * 2 + 2)
    assert not isinstance(net[-1], nn.ReLU)
    assert net(torch.zeros(7, 3)).shape == (7, 2)


def test_count_params_skips_frozen():
    net = models.mlp(2, [3], 1)
    net[1].weight.requires_grad_(False)
    assert models.count_params(net) == 3 + 3 * 1 + 1


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_cnn_shapes_and_count_by_hand(shape):
    net = models.cnn(shape, [4, 8, 8], 10)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
    assert models.count_params(net) == (9 * shape[0] * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8) + (8 * 10 + 10)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in net)
    assert pools == 3  # 28 -> 14 -> 7 -> 3 (32 -> 16 -> 8 -> 4): a pool after each conv while the map is >= 4 px
    table = models.summary(net, shape)
    assert table.parameters.iloc[-1] == models.count_params(net)
    assert table.layer.iloc[-1] == "total"


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_cnn_pools_before_a_monotone_activation_with_the_same_outputs_and_gradients(activation):
    torch.manual_seed(0)
    net = models.cnn((1, 8, 8), [3, 4], 10, activation)  # conv, pool and activation twice: 8 -> 4 -> 2 px
    pool_first = activation in models.MONOTONE
    assert isinstance(net[1], nn.MaxPool2d) == isinstance(net[4], nn.MaxPool2d) == pool_first
    textbook = copy.deepcopy(net)  # activation, then pool
    if pool_first:
        for i in (1, 4):
            textbook[i], textbook[i + 1] = textbook[i + 1], textbook[i]
    assert isinstance(textbook[2], nn.MaxPool2d) and isinstance(textbook[5], nn.MaxPool2d)
    x = torch.randn(5, 1, 8, 8)
    for model in (net, textbook):
        model(x).square().sum().backward()
    assert torch.equal(net(x), textbook(x))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(net.parameters(), textbook.parameters()))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("depth", [2, 3, 4, 6])
def test_cnn_with_params_equal_widths_and_mostly_convolutions(shape, depth):
    net = models.cnn_with_params(shape, depth, 10, target=6_000)
    widths = [m.out_channels for m in net if isinstance(m, nn.Conv2d)]
    assert len(widths) == depth and len(set(widths[:-1])) <= 1
    assert abs(models.count_params(net) - 6_000) <= 60
    conv = sum(models.count_params(m) for m in net if isinstance(m, nn.Conv2d))
    assert models.conv_fraction(net) == conv / models.count_params(net) > 0.9


def test_cnn_with_params_unreachable_depth_names_it():
    with pytest.raises(ValueError, match=r"no CNN on 1x28x28 input with 6 layers has 50 parameters .*closest"):
        models.cnn_with_params((1, 28, 28), 6, 10, target=50)


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("target", [600, 1000])
def test_mlp_with_params_within_one_percent(depth, target):
    net = models.mlp_with_params(1, depth, 1, target=target)
    assert abs(models.count_params(net) - target) <= 0.01 * target
    assert sum(isinstance(m, nn.Linear) for m in net) == depth + 1


def test_match_width_unreachable_target():
    with pytest.raises(ValueError, match="no width reaches 50 parameters"):
        models.match_width(lambda w: models.mlp(784, [w, w], 10), 50)
    with pytest.raises(ValueError, match="within 1%"):
        models.mlp_with_params(784, 2, 10, target=50)
    with pytest.raises(ValueError, match="positive"):
        models.match_width(lambda w: models.mlp(1, [w], 1), 0)


def test_bad_widths_and_activation():
    with pytest.raises(ValueError, match=">= 1"):
        models.mlp(3, [0], 1)
    with pytest.raises(ValueError, match="unknown activation"):
        models.mlp(3, [2], 1, activation="sigmoidish")


def test_same_size_and_geometric_widths():
    assert models.same_size([1000, 1005, 995])
    assert not models.same_size([1000, 1030])
    widths = models.geometric_widths(2, 512, 12)
    assert len(widths) == 12 and widths[0] == 2 and widths[-1] == 512
    assert all(b > a for a, b in zip(widths, widths[1:]))
    with pytest.raises(ValueError):
        models.geometric_widths(2, 4, 10)


def test_describe_and_flops():
    net = models.mlp(784, [256], 10)
    assert "784" not in models.describe(net) and "256-10" in models.describe(net)
    assert models.flops_per_example(net, (1, 28, 28)) == 2 * (784 * 256 + 256 * 10)
