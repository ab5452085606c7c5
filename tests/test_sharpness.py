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
    gradient = torch.func.grad(lambda p: _hand_ce_loss(p, x, y))(flat)
    assert result["first_order"] == pytest.approx(gradient.norm().item() * eps / (1 + loss), rel=1e-6)
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


# ----------------------------------------------------------------------------------------------- Keskar et al.


def _box_vertex_values(model: nn.Module, design: torch.Tensor, y: torch.Tensor, eps: float) -> list[float]:
    """Keskar's phi (x100) at every vertex of the box around the least-squares weights, by enumeration."""
    theta = parameters_to_vector(model.parameters()).detach()

    def hand_loss(flat: torch.Tensor) -> float:
        return ((design @ flat - y.reshape(-1)) ** 2).mean().item()

    loss, half_width = hand_loss(theta), eps * (theta.abs() + 1)
    corners = itertools.product((-1.0, 1.0), repeat=len(theta))
    return [(hand_loss(theta + torch.tensor(c, dtype=DTYPE) * half_width) - loss) / (1 + loss) * 100
            for c in corners]


def test_keskar_sharpness_on_an_exact_quadratic_reaches_a_box_vertex():
    model, x, y, design = _least_squares_model()
    saved = _snapshot(model)
    vertices = _box_vertex_values(model, design, y, 1e-2)  # a convex f: its box maximum is at a vertex
    found = [sharpness.keskar_sharpness(model, nn.MSELoss(), x, y, eps=1e-2, seed=seed)["sharpness"]
             for seed in range(5)]
    for value in found:
        assert min(abs(value - v) for v in vertices) <= 1e-9 * max(vertices)  # L-BFGS-B ends on a vertex
    assert max(found) == pytest.approx(max(vertices), rel=1e-9)  # and some start finds the best one
    _assert_state_equal(model, saved)


def test_keskar_sharpness_scales_with_eps_squared_at_a_minimum_and_is_zero_from_the_origin():
    model, x, y, _ = _least_squares_model()
    small, large = (sharpness.keskar_sharpness(model, nn.MSELoss(), x, y, eps=eps) for eps in (5e-4, 1e-3))
    assert 0 < small["sharpness"] < large["sharpness"]
    assert large["sharpness"] == pytest.approx(4 * small["sharpness"], rel=1e-6)  # the same vertex, f quadratic
    assert large["iterations"] <= sharpness.KESKAR_ITERATIONS and "L-BFGS-B" in large["method"]
    origin = sharpness.keskar_sharpness(model, nn.MSELoss(), x, y, eps=1e-3, start="zero")
    # the gradient is zero up to rounding (exactly zero on some CPUs, 1e-16 on others): it hardly moves
    assert origin["sharpness"] == pytest.approx(0.0, abs=1e-12)
    assert origin["max_loss"] == pytest.approx(origin["loss"], rel=1e-12)


def test_keskar_sharpness_of_a_linear_loss_is_at_the_sign_of_the_gradient_corner():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 3, generator=generator, dtype=DTYPE)
    model = nn.Linear(3, 1).double()
    theta = parameters_to_vector(model.parameters()).detach()

    def shifted_mean_output(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return outputs.mean() + 5.0  # f(w, b) = w . mean(x) + b + 5: linear in the parameters

    gradient = torch.cat([x.mean(0), torch.ones(1, dtype=DTYPE)])
    loss = (x @ theta[:3]).mean().item() + theta[3].item() + 5.0
    expected = (gradient.abs() @ (1e-3 * (theta.abs() + 1))).item() / (1 + loss) * 100
    for start in ("random", "zero"):
        out = sharpness.keskar_sharpness(model, shifted_mean_output, x, torch.zeros(30), eps=1e-3, start=start)
        assert out["loss"] == pytest.approx(loss, rel=1e-12)
        assert out["sharpness"] == pytest.approx(expected, rel=1e-9)


def test_keskar_sharpness_of_a_relu_net_is_positive_and_grows_with_eps():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(40)
    values = [sharpness.keskar_sharpness(model, nn.CrossEntropyLoss(), x, y, eps=eps, batch_size=16)["sharpness"]
              for eps in sorted(sharpness.KESKAR_EPSILONS)]
    assert 0 < values[0] < values[1]
    _assert_state_equal(model, saved)


def test_keskar_sharpness_rejects_bad_arguments():
    x, y = _data(10)
    for bad in (0.0, -1e-3, float("inf")):
        with pytest.raises(ValueError, match="eps"):
            sharpness.keskar_sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=bad)
    with pytest.raises(ValueError, match="max_iterations"):
        sharpness.keskar_sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=1e-3, max_iterations=0)
    with pytest.raises(ValueError, match="start"):
        sharpness.keskar_sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=1e-3, start="centre")


# ----------------------------------------------------------------------------------------------- Jiang et al.


def _scaled_mse(scale: float):
    """scale x the mean squared error: the same minimum, a Hessian `scale` times sharper."""
    return lambda outputs, targets: scale * F.mse_loss(outputs, targets)


def test_pacbayes_mag_flatness_matches_the_quadratic_closed_form_and_grows_with_sharpness():
    model, x, y, design = _least_squares_model()
    saved = _snapshot(model)
    theta = parameters_to_vector(model.parameters()).detach()
    curvature = design.T @ design / len(x)  # f(w + u) - f(w) = u^T curvature u at the minimum
    deviation, floor = 0.01, 1e-3
    results = []
    for scale in (1.0, 4.0):
        out = sharpness.pacbayes_mag_flatness(model, _scaled_mse(scale), x, y, deviation=deviation,
                                              magnitude_eps=floor, draws=400, tolerance=1e-5, search_depth=40)
        # E u^T A u = sum_i A_ii (sigma^2 w_i^2 + eps^2) = deviation / scale
        sigma_squared = (deviation / scale - floor**2 * curvature.diag().sum()) / (curvature.diag() @ theta**2)
        assert out["flatness"] == pytest.approx(1 / sigma_squared.item(), rel=0.2)  # 400 draws: ~7% noise
        assert out["increase"] == pytest.approx(deviation, abs=1e-5)
        results.append(out)
    assert results[1]["flatness"] > 3 * results[0]["flatness"]  # 4x sharper: about 4x flatness measure
    again = sharpness.pacbayes_mag_flatness(model, _scaled_mse(1.0), x, y, deviation=deviation,
                                            magnitude_eps=floor, draws=400, tolerance=1e-5, search_depth=40)
    assert again == results[0]  # seeded: bit-identical
    _assert_state_equal(model, saved)


def test_pacbayes_mag_flatness_with_the_error_rate_and_bad_arguments():
    model, (x, y) = _net(0), _data(40)
    out = sharpness.pacbayes_mag_flatness(model, nn.CrossEntropyLoss(), x, y, draws=3)
    assert out["bracketed"] and abs(out["increase"] - 0.1) < 1e-2 and out["flatness"] == 1 / out["sigma"] ** 2
    chance = sharpness.pacbayes_mag_flatness(model, sharpness.error_rate, x, y, draws=3)
    assert chance["loss"] == 0.7 and not chance["bracketed"]  # an untrained net: noise cannot add 0.1 error
    assert chance["steps"] == 15 and chance["sigma"] == pytest.approx(2, rel=1e-3)
    assert sharpness.error_rate(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item() == 0.5
    for name, value in (("deviation", 0.0), ("tolerance", -1.0), ("magnitude_eps", -1e-3), ("draws", 0),
                        ("search_depth", 0), ("sigma_max", float("nan"))):
        with pytest.raises(ValueError, match=name):
            sharpness.pacbayes_mag_flatness(model, nn.CrossEntropyLoss(), x, y, **{name: value})
