"""Tests of hw1utils.landscape against independent references (hand formulas, loops, autograd, numpy)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from hw1utils import landscape
from hw1utils.curvature import top_hessian_eigenvalue
from hw1utils.models import cnn, mlp

DTYPE = torch.float64


def _net(seed: int, hidden: int = 6, activation: str = "relu") -> nn.Sequential:
    """A tiny float64 MLP 4 -> hidden -> 3."""
    torch.manual_seed(seed)
    return mlp(4, [hidden], 3, activation).double()


def _bn_net(seed: int) -> nn.Sequential:
    """A tiny float64 MLP with batch norm and non-trivial running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(seed + 1)
    return net


def _data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 inputs (n, 4) and labels in {0, 1, 2}."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator, dtype=DTYPE), torch.randint(0, 3, (n,), generator=generator)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of the state_dict."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_state_equal(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """The model's state_dict is bit-identical to `saved`."""
    state = model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)


# ----------------------------------------------------------------------------------------- interpolate


def test_interpolate_endpoints_reproduce_models_exactly_and_leave_inputs_unchanged():
    a, b = _net(0), _net(1)
    saved_a, saved_b = _snapshot(a), _snapshot(b)
    x, _ = _data()
    start, end = landscape.interpolate(a, b, 0.0), landscape.interpolate(a, b, 1.0)
    assert start is not a and end is not b
    assert torch.equal(start(x), a(x)) and torch.equal(end(x), b(x))
    _assert_state_equal(a, saved_a)
    _assert_state_equal(b, saved_b)


def test_interpolate_midpoint_equals_hand_average_including_buffers():
    a, b = _bn_net(0), _bn_net(1)
    mixed = landscape.interpolate(a, b, 0.5)
    state_a, state_b = a.state_dict(), b.state_dict()
    for name, value in mixed.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (state_a[name] + state_b[name]) / 2, rtol=1e-15, atol=0)
        else:  # num_batches_tracked is an integer count: kept from model_a
            assert torch.equal(value, state_a[name])
    assert not torch.equal(state_a["1.running_mean"], state_b["1.running_mean"])


def test_interpolate_outside_unit_interval_extrapolates():
    a, b = _net(0), _net(1)
    beyond = landscape.interpolate(a, b, 1.5)
    for pa, pb, p in zip(a.parameters(), b.parameters(), beyond.parameters(), strict=True):
        torch.testing.assert_close(p, pb + 0.5 * (pb - pa))


def test_interpolate_rejects_same_object_and_different_architectures():
    a = _net(0)
    x, y = _data()
    with pytest.raises(ValueError, match="same object"):
        landscape.interpolate(a, a, 0.5)
    with pytest.raises(ValueError, match="different architectures"):
        landscape.interpolate(a, _net(1, hidden=7), 0.5)
    with pytest.raises(ValueError, match="same object"):
        landscape.interpolation_curve(a, a, [0.0], x, y)


# --------------------------------------------------------------------------------- interpolation_curve


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
    curve = landscape.interpolation_curve(a, b, alphas, x, y, batch_size=8)
    assert set(curve) == {"alpha", "loss", "accuracy"}
    np.testing.assert_array_equal(curve["alpha"], alphas)
    models = [a, b] + [_hand_blend(a, b, alpha) for alpha in alphas[2:]]
    for k, model in enumerate(models):
        loss, accuracy = _hand_loss_accuracy(model, x, y)
        assert curve["loss"][k] == pytest.approx(loss, rel=1e-12)
        assert curve["accuracy"][k] == pytest.approx(accuracy, abs=1e-12)
    assert a.training  # the caller's mode is left alone
    _assert_state_equal(a, saved_a)


# ----------------------------------------------------------------------------------------- sensitivity


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
    assert landscape.sensitivity(model, x, y, batch_size=5) == pytest.approx(expected, rel=1e-12)


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
    assert landscape.sensitivity(model, x, y) == pytest.approx(expected, rel=1e-6)


def test_sensitivity_does_not_depend_on_chunk_size():
    model = _net(0)
    x, y = _data(50)
    values = [landscape.sensitivity(model, x, y, batch_size=size) for size in (1, 7, 1000)]
    assert values == pytest.approx([values[0]] * 3, rel=1e-12)


def test_sensitivity_is_not_the_batch_mean_loss_gradient():
    model = _net(0)
    x, y = _data(50)
    x_grad = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y), x_grad)
    batch_mean_norm = gradient.norm(dim=1).mean().item()
    value = landscape.sensitivity(model, x, y)
    assert value > 10 * batch_mean_norm  # the batch-mean version shrinks as 1/batch ...
    assert value == pytest.approx(len(x) * batch_mean_norm, rel=1e-10)  # ... exactly by 1/50 here


def test_jacobian_sensitivity_matches_autograd_functional_jacobian():
    model = _net(0, activation="tanh")
    x, _ = _data(7)

    def probabilities(v: torch.Tensor) -> torch.Tensor:
        return model(v[None]).softmax(-1)[0]

    norms = [torch.autograd.functional.jacobian(probabilities, xi).norm() for xi in x]
    expected = torch.stack(norms).mean().item()
    assert landscape.jacobian_sensitivity(model, x, batch_size=3) == pytest.approx(expected, rel=1e-12)


def test_sensitivity_rejects_bad_chunks_and_lengths():
    model = _net(0)
    x, y = _data(10)
    with pytest.raises(ValueError, match="batch_size"):
        landscape.sensitivity(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="equal length"):
        landscape.sensitivity(model, x, y[:5])


# -------------------------------------------------------------------------------- rescaling, sharpness


def test_rescale_relu_layers_keeps_outputs_but_changes_curvature():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(40)
    loss_fn = nn.CrossEntropyLoss()
    base = top_hessian_eigenvalue(model, loss_fn, x, y)
    for a in (10.0, 0.1):
        rescaled = landscape.rescale_relu_layers(model, a)
        torch.testing.assert_close(rescaled(x), model(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rescaled[1].weight, a * model[1].weight)
        torch.testing.assert_close(rescaled[3].weight, model[3].weight / a)
        assert top_hessian_eigenvalue(rescaled, loss_fn, x, y) > 10 * base  # about 30x here
    _assert_state_equal(model, saved)


def test_rescale_relu_layers_rejects_bad_scale_and_models():
    with pytest.raises(ValueError, match="positive"):
        landscape.rescale_relu_layers(_net(0), 0.0)
    with pytest.raises(TypeError, match="ReLU"):
        landscape.rescale_relu_layers(_net(0, activation="tanh"), 2.0)
    with pytest.raises(TypeError, match="ReLU"):
        landscape.rescale_relu_layers(cnn((1, 8, 8), [2], n_classes=3), 2.0)


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
    result = landscape.sharpness(model, nn.CrossEntropyLoss(), x, y, eps=eps, batch_size=16)
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
    result = landscape.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20)
    assert worst == pytest.approx(eigenvalues[-1].item() * eps**2 / (2 * (1 + loss)), rel=1e-6)
    assert result["estimate"] == pytest.approx(worst, rel=1e-6)
    assert result["ascent"] <= worst * (1 + 1e-9)
    assert result["ascent"] >= 0.999 * worst
    short = landscape.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=1)
    assert 0 <= short["ascent"] <= result["ascent"]


def test_sharpness_box_ascent_lies_between_the_ball_value_and_the_best_box_corner():
    model, x, y, design = _least_squares_model()
    theta = parameters_to_vector(model.parameters()).detach()
    hessian = 2 * design.T @ design / len(x)
    loss, eps = ((design @ theta - y.reshape(-1)) ** 2).mean().item(), 1e-2
    radius = eps * (theta.abs() + 1)
    corners = [torch.tensor(signs, dtype=DTYPE) * radius for signs in itertools.product((-1, 1), repeat=3)]
    best_corner = max((c @ hessian @ c).item() / 2 for c in corners) / (1 + loss)  # convex: max at a corner
    ball = landscape.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20)["ascent"]
    box = landscape.sharpness(model, nn.MSELoss(), x, y, eps=eps, ascent_steps=20, box=True)["ascent"]
    assert ball < box <= best_corner * (1 + 1e-9)


def test_sharpness_rejects_bad_arguments():
    x, y = _data(10)
    with pytest.raises(ValueError, match="eps"):
        landscape.sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=0.0)
    with pytest.raises(ValueError, match="ascent_steps"):
        landscape.sharpness(_net(0), nn.CrossEntropyLoss(), x, y, eps=1e-3, ascent_steps=-1)


# ----------------------------------------------------------------------------------------- PCA, planes


def test_pca_2d_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 30)) @ np.diag(np.linspace(3, 0.1, 30))
    coords, components, ratio, mean = landscape.pca_2d(torch.as_tensor(vectors))
    centred = vectors - vectors.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(np.sum(components.numpy() * vt[:2], axis=1))
    np.testing.assert_allclose(components.numpy(), signs[:, None] * vt[:2], atol=1e-10)
    np.testing.assert_allclose(coords.numpy(), centred @ (signs[:, None] * vt[:2]).T, atol=1e-10)
    np.testing.assert_allclose(ratio.numpy(), singular[:2] ** 2 / np.sum(singular**2), rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), vectors.mean(0), rtol=1e-12)
    assert ratio.sum() <= 1 and ratio[0] >= ratio[1]
    loadings = components.numpy()
    assert all(row[np.argmax(np.abs(row))] > 0 for row in loadings)  # the sign convention


def test_pca_2d_rejects_degenerate_input():
    with pytest.raises(ValueError, match=">= 2 rows"):
        landscape.pca_2d(np.ones((1, 5)))
    with pytest.raises(ValueError, match="identical"):
        landscape.pca_2d(np.ones((4, 5)))


def test_project_onto_plane_matches_numpy_least_squares():
    rng = np.random.default_rng(1)
    center, d1, d2 = (rng.normal(size=20) for _ in range(3))
    in_plane = center + rng.normal(size=(6, 1)) * d1 + rng.normal(size=(6, 1)) * d2
    vectors = in_plane + 0.1 * rng.normal(size=(6, 20))
    expected = np.linalg.lstsq(np.stack([d1, d2], 1), (vectors - center).T, rcond=None)[0].T
    as_torch = [torch.as_tensor(v) for v in (center, d1, d2)]
    np.testing.assert_allclose(landscape.project_onto_plane(vectors, *as_torch).numpy(), expected, rtol=1e-10)


# --------------------------------------------------------------------------------------- loss surfaces


def test_filter_normalized_direction_matches_weight_row_norms_and_zeroes_biases():
    torch.manual_seed(0)
    model = cnn((1, 8, 8), [3], hidden=[5], n_classes=3).double()
    direction = landscape.filter_normalized_direction(model, seed=1)
    assert direction.shape == (sum(p.numel() for p in model.parameters()),)
    pieces = direction.split([p.numel() for p in model.parameters()])
    for (name, weight), piece in zip(model.named_parameters(), pieces, strict=True):
        piece = piece.reshape(weight.shape)
        if weight.dim() == 1:
            assert torch.count_nonzero(piece) == 0, name
        else:
            torch.testing.assert_close(piece.flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1))
    assert torch.equal(direction, landscape.filter_normalized_direction(model, seed=1))
    assert not torch.equal(direction, landscape.filter_normalized_direction(model, seed=2))


def _hand_loss_at(model: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of a copy of `model` holding the flat parameters `flat`."""
    twin = copy.deepcopy(model)
    vector_to_parameters(flat, twin.parameters())
    with torch.no_grad():
        return F.cross_entropy(twin(x), y).item()


def test_loss_surface_center_and_a_grid_point_match_hand_evaluation():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(30)
    d1, d2 = (landscape.filter_normalized_direction(model, seed=s) for s in (1, 2))
    a_grid, b_grid, losses = landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, d1, d2, span=(-1, 1),
                                                    steps=5, batch_size=7)
    assert a_grid.shape == b_grid.shape == losses.shape == (5, 5)
    assert (a_grid[2, 2], b_grid[2, 2]) == (0.0, 0.0)
    theta = parameters_to_vector(model.parameters()).detach()
    assert losses[2, 2] == pytest.approx(_hand_loss_at(model, theta, x, y), rel=1e-12)
    assert (a_grid[0, 3], b_grid[0, 3]) == (-1.0, 0.5)
    assert losses[0, 3] == pytest.approx(_hand_loss_at(model, theta - d1 + 0.5 * d2, x, y), rel=1e-12)
    _assert_state_equal(model, saved)


def test_loss_surface_with_center_and_separate_spans():
    model = _net(0)
    x, y = _data(30)
    d1, d2 = (landscape.filter_normalized_direction(model, seed=s) for s in (1, 2))
    center = parameters_to_vector(_net(3).parameters()).detach()
    a_grid, b_grid, losses = landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, d1, d2,
                                                    span=((0.0, 2.0), (-3.0, 0.0)), steps=3, center=center)
    np.testing.assert_array_equal(a_grid[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(b_grid[0], [-3.0, -1.5, 0.0])
    assert losses[1, 0] == pytest.approx(_hand_loss_at(model, center + d1 - 3 * d2, x, y), rel=1e-12)


def test_loss_line_matches_hand_evaluation():
    model = _net(0)
    x, y = _data(30)
    direction = landscape.filter_normalized_direction(model, seed=4)
    alphas = [-1.0, 0.0, 0.3]
    theta = parameters_to_vector(model.parameters()).detach()
    expected = [_hand_loss_at(model, theta + alpha * direction, x, y) for alpha in alphas]
    np.testing.assert_allclose(landscape.loss_line(model, nn.CrossEntropyLoss(), x, y, direction, alphas),
                               expected, rtol=1e-12)


def test_loss_surface_rejects_wrong_direction_length():
    model = _net(0)
    x, y = _data(10)
    good = landscape.filter_normalized_direction(model)
    with pytest.raises(ValueError, match="direction2"):
        landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, good, good[:-1])
