"""Tests of hw1utils.sharpness against exact Hessians by hand, exact quadratics and ReLU rescaling identities."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers_classifiers import DTYPE, _assert_state_equal, _data, _net, _snapshot
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from hw1utils import sharpness
from hw1utils.curvature import top_hessian_eigenvalue
from hw1utils.models import cnn

# ----------------------------------------------------------------------------------------------- rescaling


def test_rescale_relu_layers_keeps_outputs_but_changes_curvature():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(40)
    loss_fn = nn.CrossEntropyLoss()
    base = top_hessian_eigenvalue(model, loss_fn, x, y)
    for a in (10.0, 0.1):
        rescaled = sharpness.rescale_relu_layers(model, a)
        torch.testing.assert_close(rescaled(x), model(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rescaled[1].weight, a * model[1].weight)
        torch.testing.assert_close(rescaled[3].weight, model[3].weight / a)
        assert top_hessian_eigenvalue(rescaled, loss_fn, x, y) > 10 * base  # about 30x here
    _assert_state_equal(model, saved)


def test_rescale_relu_layers_rejects_bad_scale_and_models():
    with pytest.raises(ValueError, match="positive"):
        sharpness.rescale_relu_layers(_net(0), 0.0)
    with pytest.raises(TypeError, match="ReLU"):
        sharpness.rescale_relu_layers(_net(0, activation="tanh"), 2.0)
    with pytest.raises(TypeError, match="ReLU"):
        sharpness.rescale_relu_layers(cnn((1, 8, 8), [2], n_classes=3), 2.0)


# ----------------------------------------------------------------------------------------------- sharpness


def _hand_ce_loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the 4-6-3 ReLU MLP written out by hand from its flat parameters."""
    w1, b1, w2, b2 = flat.split([24, 6, 18, 3])
    hidden = torch.relu(x @ w1.reshape(6, 4).T + b1)
    return F.cross_entropy(hidden @ w2.reshape(3, 6).T + b2, y)


def test_sharpness_estimate_matches_exact_hessian_by_hand():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(40)
    flat = parameters_to_vector(model.parameters()).detach()
    loss = _hand_ce_loss(flat, x, y).item()
    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(lambda p: _hand_ce_loss(p, x, y), flat))[-1]
    eps = 1e-3
    result = sharpness.sharpness(model, nn.CrossEntropyLoss(), x, y, eps=eps, batch_size=16)
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    assert result["lambda_max"] == pytest.approx(top.item(), rel=1e-6)
    assert result["estimate"] == pytest.approx(top.item() * eps**2 / (2 * (1 + loss)), rel=1e-6)
    assert "ascent" not in result
    _assert_state_equal(model, saved)


def _least_squares_model() -> tuple[nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear model at the exact least-squares minimum of an MSE loss, the data and the design matrix."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=generator, dtype=DTYPE) * torch.tensor([1.0, 3.0], dtype=DTYPE)
    noise = torch.randn(40, 1, generator=generator, dtype=DTYPE)
    y = x @ torch.tensor([[0.5], [-1.0]], dtype=DTYPE) + 0.3 * noise
    design = torch.cat([x, torch.ones(40, 1, dtype=DTYPE)], 1)
    solution = torch.linalg.lstsq(design, y).solution.reshape(-1)
    model = nn.Linear(2, 1).double()
    vector_to_parameters(solution, model.parameters())  # weight (1, 2) then bias (1,): same order
    return model, x, y, design


def test_sharpness_ascent_on_an_exact_quadratic_reaches_the_worst_boundary_point():
    model, x, y, design = _least_squares_model()
    theta = parameters_to_vector(model.parameters()).detach()
    hessian = 2 * design.T @ design / len(x)  # MSE of a linear model: constant Hessian, zero gradient here
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)

    def hand_loss(flat: torch.Tensor) -> float:
        return ((design @ flat - y.reshape(-1)) ** 2).mean().item()

    loss, eps = hand_loss(theta), 1e-2
    worst = (hand_loss(theta + eps * eigenvectors[:, -1]) - loss) / (1 + loss)
    result = sharpness.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20)
    assert worst == pytest.approx(eigenvalues[-1].item() * eps**2 / (2 * (1 + loss)), rel=1e-6)
    assert result["estimate"] == pytest.approx(worst, rel=1e-6)
    assert result["ascent"] <= worst * (1 + 1e-9)
    assert result["ascent"] >= 0.999 * worst
    short = sharpness.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=1)
    assert 0 <= short["ascent"] <= result["ascent"]


def test_sharpness_box_ascent_lies_between_the_ball_value_and_the_best_box_corner():
    model, x, y, design = _least_squares_model()
    theta = parameters_to_vector(model.parameters()).detach()
    hessian = 2 * design.T @ design / len(x)
    loss, eps = ((design @ theta - y.reshape(-1)) ** 2).mean().item(), 1e-2
    radius = eps * (theta.abs() + 1)
    corners = [torch.tensor(signs, dtype=DTYPE) * radius for signs in itertools.product((-1, 1), repeat=3)]
    best_corner = max((c @ hessian @ c).item() / 2 for c in corners) / (1 + loss)  # convex: max at a corner
    ball = sharpness.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20)["ascent"]
    box = sharpness.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20, box=True)["ascent"]
    assert ball < box <= best_corner * (1 + 1e-9)


def test_sharpness_rejects_bad_arguments():
    x, y = _data(10)
    with pytest.raises(ValueError, match="eps"):
        sharpness.sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=0.0)
    with pytest.raises(ValueError, match="ascent_steps"):
        sharpness.sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=1e-3, ascent_steps=-1)
