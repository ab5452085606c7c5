"""Tests of hw1utils.interpolation against hand-blended state dicts and ordinary eval-mode forward passes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_classifiers import _assert_state_equal, _data, _net, _snapshot
from torch import nn

from hw1utils import interpolation


def _bn_net(seed: int) -> nn.Sequential:
    """A tiny float64 MLP with batch norm and non-trivial running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(seed + 1)
    return net


# --------------------------------------------------------------------------------------------- interpolate


def test_interpolate_endpoints_reproduce_models_exactly_and_leave_inputs_unchanged():
    a, b = _net(0), _net(1)
    saved_a, saved_b = _snapshot(a), _snapshot(b)
    x, _ = _data()
    start, end = interpolation.interpolate(a, b, 0.0), interpolation.interpolate(a, b, 1.0)
    assert start is not a and end is not b
    assert torch.equal(start(x), a(x)) and torch.equal(end(x), b(x))
    _assert_state_equal(a, saved_a)
    _assert_state_equal(b, saved_b)


def test_interpolate_midpoint_equals_hand_average_including_buffers():
    a, b = _bn_net(0), _bn_net(1)
    mixed = interpolation.interpolate(a, b, 0.5)
    state_a, state_b = a.state_dict(), b.state_dict()
    for name, value in mixed.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (state_a[name] + state_b[name]) / 2, rtol=1e-15, atol=0)
        else:  # num_batches_tracked is an integer count: kept from model_a
            assert torch.equal(value, state_a[name])
    assert not torch.equal(state_a["1.running_mean"], state_b["1.running_mean"])


def test_interpolate_outside_unit_interval_extrapolates():
    a, b = _net(0), _net(1)
    beyond = interpolation.interpolate(a, b, 1.5)
    for pa, pb, p in zip(a.parameters(), b.parameters(), beyond.parameters(), strict=True):
        torch.testing.assert_close(p, pb + 0.5 * (pb - pa))


def test_interpolate_rejects_same_object_and_different_architectures():
    a = _net(0)
    x, y = _data()
    with pytest.raises(ValueError, match="same object"):
        interpolation.interpolate(a, a, 0.5)
    with pytest.raises(ValueError, match="different architectures"):
        interpolation.interpolate(a, _net(1, hidden=7), 0.5)
    with pytest.raises(ValueError, match="same object"):
        interpolation.interpolation_curve(a, a, [0.0], x, y)


# ------------------------------------------------------------------------------------- interpolation_curve


def _hand_loss_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Cross-entropy and accuracy by an ordinary eval-mode forward pass."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def _hand_blend(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """(1 - alpha) a + alpha b, written out on a copy of a."""
    mixed = copy.deepcopy(a)
    state_b = b.state_dict()
    mixed.load_state_dict({k: (1 - alpha) * v + alpha * state_b[k] if v.is_floating_point() else v
                           for k, v in a.state_dict().items()})
    return mixed


@pytest.mark.parametrize("build", [_net, _bn_net])
def test_interpolation_curve_matches_hand_evaluation(build):
    a, b = build(0), build(1)
    saved_a = _snapshot(a)
    x, y = _data(53)
    alphas = [0.0, 1.0, 0.5, -0.5, 1.7]
    curve = interpolation.interpolation_curve(a, b, alphas, x, y, batch_size=8)
    assert set(curve) == {"alpha", "loss", "accuracy"}
    np.testing.assert_array_equal(curve["alpha"], alphas)
    models = [a, b] + [_hand_blend(a, b, alpha) for alpha in alphas[2:]]
    for k, model in enumerate(models):
        loss, accuracy = _hand_loss_accuracy(model, x, y)
        assert curve["loss"][k] == pytest.approx(loss, rel=1e-12)
        assert curve["accuracy"][k] == pytest.approx(accuracy, abs=1e-12)
    assert a.training  # the caller's mode is left alone
    _assert_state_equal(a, saved_a)
