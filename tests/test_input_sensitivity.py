"""Tests of hw1utils.input_sensitivity against per-example autograd loops and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_classifiers import DTYPE, _data, _net
from torch import nn

from hw1utils import input_sensitivity


def _loop_input_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||d CE(model(x_i), y_i) / d x_i|| by a plain Python loop with autograd."""
    norms = []
    for xi, yi in zip(x, y, strict=True):
        xi = xi.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(model(xi[None]), yi[None]), xi)
        norms.append(gradient.norm())
    return torch.stack(norms)


def test_sensitivity_matches_per_example_autograd_loop():
    model = _net(0)
    x, y = _data(23)
    expected = _loop_input_grad_norms(model, x, y).mean().item()
    assert input_sensitivity.sensitivity(model, x, y, batch_size=5) == pytest.approx(expected, rel=1e-12)


def test_sensitivity_matches_central_finite_differences():
    model = _net(0, activation="tanh")
    x, y = _data(3)
    h = 1e-6
    norms = []
    with torch.no_grad():
        for xi, yi in zip(x, y, strict=True):
            steps = h * torch.eye(len(xi), dtype=DTYPE)
            plus = F.cross_entropy(model(xi + steps), yi.expand(len(xi)), reduction="none")
            minus = F.cross_entropy(model(xi - steps), yi.expand(len(xi)), reduction="none")
            norms.append(((plus - minus) / (2 * h)).norm())
    expected = torch.stack(norms).mean().item()
    assert input_sensitivity.sensitivity(model, x, y) == pytest.approx(expected, rel=1e-6)


def test_sensitivity_does_not_depend_on_chunk_size():
    model = _net(0)
    x, y = _data(50)
    values = [input_sensitivity.sensitivity(model, x, y, batch_size=size) for size in (1, 7, 1000)]
    assert values == pytest.approx([values[0]] * 3, rel=1e-12)


def test_sensitivity_is_not_the_batch_mean_loss_gradient():
    model = _net(0)
    x, y = _data(50)
    x_grad = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y), x_grad)
    batch_mean_norm = gradient.norm(dim=1).mean().item()
    value = input_sensitivity.sensitivity(model, x, y)
    assert value > 10 * batch_mean_norm  # the batch-mean version shrinks as 1/batch ...
    assert value == pytest.approx(len(x) * batch_mean_norm, rel=1e-10)  # ... exactly by 1/50 here


def test_jacobian_sensitivity_matches_autograd_functional_jacobian():
    model = _net(0, activation="tanh")
    x, _ = _data(7)

    def probabilities(v: torch.Tensor) -> torch.Tensor:
        return model(v[None]).softmax(-1)[0]

    norms = [torch.autograd.functional.jacobian(probabilities, xi).norm() for xi in x]
    expected = torch.stack(norms).mean().item()
    assert input_sensitivity.jacobian_sensitivity(model, x, batch_size=3) == pytest.approx(expected, rel=1e-12)


def test_sensitivity_rejects_bad_chunks_and_lengths():
    model = _net(0)
    x, y = _data(10)
    with pytest.raises(ValueError, match="batch_size"):
        input_sensitivity.sensitivity(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="equal length"):
        input_sensitivity.sensitivity(model, x, y[:5])
