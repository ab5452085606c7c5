"""Tests of hw1utils.curvature against closed forms, finite differences, plain autograd and eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_curvature import F64, _autograd_gradient, _data, _float64_copy, _tanh_net
from torch import nn

from hw1utils import curvature as cv
from hw1utils import weight_vector as wv


def _with_bias(inputs: torch.Tensor) -> torch.Tensor:
    """Inputs with a column of ones appended: the design matrix [X, 1] of a Linear layer's (W, b)."""
    return torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], dim=1)


# ------------------------------------------------------------------------------------------- exact Hessian


def test_hessian_of_linear_regression_is_two_over_n_xtx():
    x, y = _data(20, 3, 1, seed=2)
    model = nn.Linear(3, 1).double()
    design = _with_bias(x)
    expected = 2 / len(x) * design.T @ design
    assert torch.allclose(cv.hessian(model, nn.MSELoss(), x, y), expected, rtol=1e-12, atol=1e-12)


def test_hessian_of_logistic_regression_in_float32_model_is_computed_in_float64():
    x, _ = _data(30, 3, 1, seed=3)
    labels = (torch.rand(30, 1, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    model = nn.Linear(3, 1)  # float32: hessian works on a float64 copy
    hess = cv.hessian(model, nn.BCEWithLogitsLoss(), x.float(), labels)
    design = _with_bias(x.float().double())
    theta = wv.flat_params(model).double()
    p = torch.sigmoid(design @ theta)
    expected = design.T @ torch.diag(p * (1 - p)) @ design / len(x)
    assert hess.dtype == F64
    assert torch.allclose(hess, expected, rtol=1e-10, atol=1e-12)


def test_hessian_of_softmax_regression_keeps_class_index_targets():
    x, _ = _data(25, 3, 1, seed=4)
    labels = torch.randint(0, 4, (25,), generator=torch.Generator().manual_seed(4))
    model = nn.Linear(3, 4).double()
    p = torch.softmax(model(x), dim=1).detach()
    curvature = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # per example, (C, C)
    blocks = torch.einsum("ncd,ni,nj->cidj", curvature, x, x) / len(x)  # weight-weight
    cross = torch.einsum("ncd,ni->cid", curvature, x) / len(x)  # weight-bias
    n_w = 12
    expected = torch.zeros(16, 16, dtype=F64)
    expected[:n_w, :n_w] = blocks.reshape(n_w, n_w)
    expected[:n_w, n_w:] = cross.reshape(n_w, 4)
    expected[n_w:, :n_w] = cross.reshape(n_w, 4).T
    expected[n_w:, n_w:] = curvature.mean(0)
    assert torch.allclose(cv.hessian(model, nn.CrossEntropyLoss(), x, labels), expected, atol=1e-12)


def test_hessian_agrees_with_double_backward_and_finite_differences():
    model = _tanh_net((2, 5, 3, 1), seed=5, dtype=torch.float32)
    x, y = _data(12, 2, 1, seed=5)
    hess = cv.hessian(model, nn.MSELoss(), x, y)
    assert torch.equal(hess, hess.T)
    assert torch.allclose(hess, cv.hessian_by_double_backward(model, nn.MSELoss(), x, y), atol=1e-12)
    theta, step = wv.flat_params(model).double(), 1e-5
    twin = _float64_copy(model)
    columns = []
    for i in range(theta.numel()):
        shifted = [theta.clone(), theta.clone()]
        shifted[0][i] += step
        shifted[1][i] -= step
        grads = []
        for point in shifted:
            wv.set_flat_params(twin, point)
            grads.append(_autograd_gradient(twin, nn.MSELoss(), x, y))
        columns.append((grads[0] - grads[1]) / (2 * step))
    assert torch.allclose(hess, torch.stack(columns, dim=1), atol=1e-8)


def test_curvature_functions_leave_the_model_unchanged():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).eval()
    x, y = _data(10, 2, 1, seed=6)
    x, y = x.float(), y.float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = nn.MSELoss()
    cv.hessian(model, loss_fn, x, y)
    cv.hessian_by_double_backward(model, loss_fn, x, y)
    wv.grad_norm(model, loss_fn, x, y, batch_size=3)
    cv.top_hessian_eigenvalue(model, loss_fn, x, y, iters=5)
    cv.hessian_vector_product(model, loss_fn, x, y, torch.ones(wv.flat_params(model).numel()))
    cv.sampled_minimal_ratio(model, loss_fn, x, y, radius=0.1, n_samples=8, seed=0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype, key
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())
    assert not model.training


def test_hessian_refuses_large_models_and_says_why():
    model = _tanh_net((4, 10, 1), seed=7)  # P = 61
    x, y = _data(5, 4, 1, seed=7)
    with pytest.raises(ValueError, match=r"P = 61.*max_params = 50.*MiB.*top_hessian_eigenvalue"):
        cv.hessian(model, nn.MSELoss(), x, y, max_params=50)


# ------------------------------------------------------------------------ Hessian-vector products, Lanczos


def test_top_eigenvalue_is_the_largest_algebraic_one():
    def negated_mse(out, target):
        """Minus the MSE: its Hessian is dominated by large negative eigenvalues."""
        return -F.mse_loss(out, target)

    model = _tanh_net((2, 12, 1), seed=3)  # P = 49 > iters
    x, y = _data(32, 2, 1, seed=3, scale=3.0)
    spectrum = torch.linalg.eigvalsh(cv.hessian(model, negated_mse, x, y))
    assert -spectrum[0] > 2 * spectrum[-1] > 0  # magnitude would pick the negative end
    top = cv.top_hessian_eigenvalue(model, negated_mse, x, y, iters=30)
    assert top == pytest.approx(float(spectrum[-1]), rel=1e-6)
    batched = cv.top_hessian_eigenvalue(model, negated_mse, x, y, iters=30, batch_size=13, seed=1)
    assert batched == pytest.approx(float(spectrum[-1]), rel=1e-6)


def test_batched_hessian_vector_product_equals_the_full_one_with_uneven_batches():
    model = _tanh_net((3, 4, 2), seed=8)
    x, y = _data(10, 3, 2, seed=8)
    vector = torch.randn(wv.flat_params(model).numel(), generator=torch.Generator().manual_seed(8), dtype=F64)
    expected = cv.hessian(model, nn.MSELoss(), x, y) @ vector
    for batch_size in (None, 4, 10, 64):  # 4 leaves a last batch of 2
        product = cv.hessian_vector_product(model, nn.MSELoss(), x, y, vector, batch_size=batch_size)
        assert torch.allclose(product, expected, atol=1e-12), batch_size


# ------------------------------------------------------------------------------------------- minimal ratio


def test_minimal_ratio_counts_eigenvalues_above_an_absolute_tolerance():
    eigenvalues = np.array([-1.0, 0.0, 1e-12, 2.0, 3.0])
    assert cv.minimal_ratio(eigenvalues) == pytest.approx(3 / 5)
    tol = cv.relative_tol(eigenvalues, 1e-6)
    assert tol == pytest.approx(3e-6)
    assert cv.minimal_ratio(torch.tensor(eigenvalues), tol=tol) == pytest.approx(2 / 5)
    assert cv.minimal_ratio([1.0, 2.0], tol=1.5) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="1-D"):
        cv.minimal_ratio(np.ones((2, 3)))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        cv.minimal_ratio(eigenvalues, tol=-1.0)


def test_sampled_minimal_ratio_is_one_at_a_strict_minimum():
    x, y = _data(40, 3, 1, seed=10)
    model = nn.Linear(3, 1).double()
    solution = torch.linalg.lstsq(_with_bias(x), y).solution.reshape(-1)
    wv.set_flat_params(model, solution)
    assert wv.grad_norm(model, nn.MSELoss(), x, y) < 1e-12
    assert cv.sampled_minimal_ratio(model, nn.MSELoss(), x, y, radius=1e-2, n_samples=500, seed=0) == 1.0


def test_sampled_and_hessian_minimal_ratio_at_a_saddle():
    """f(x) = w2 * w1 * x fitted to y = x: at w = 0 the gradient vanishes and H = [[0, -2m], [-2m, 0]]."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    wv.set_flat_params(model, torch.zeros(2))
    x = torch.linspace(-1, 1, 21, dtype=F64).unsqueeze(1)
    second_moment = float((x**2).mean())
    hess = cv.hessian(model, nn.MSELoss(), x, x)
    assert torch.allclose(hess, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=F64) * second_moment)
    assert cv.minimal_ratio(torch.linalg.eigvalsh(hess)) == 0.5
    ratio = cv.sampled_minimal_ratio(model, nn.MSELoss(), x, x, radius=1e-3, n_samples=2000, seed=1)
    assert 0.4 < ratio < 0.6
    assert ratio == cv.sampled_minimal_ratio(model, nn.MSELoss(), x, x, radius=1e-3, n_samples=2000, seed=1)


# -------------------------------------------------------------------------------------------- stacked nets


def _trained_ensemble(members: int, steps: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1-4-1 tanh architecture, `members` weight vectors after `steps` Adam steps on sinc(5x), and the data."""
    x = torch.linspace(-1, 1, 32, dtype=F64).unsqueeze(1)
    y = torch.sinc(5 * x)
    nets = [_tanh_net((1, 4, 1), seed=20 + k) for k in range(members)]
    flats = torch.stack([wv.flat_params(net) for net in nets]).requires_grad_()
    optimizer = torch.optim.Adam([flats], lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        wv.stacked_loss_fn(nets[0], nn.MSELoss())(flats, x, y).sum().backward()
        optimizer.step()
    return nets[0], flats.detach(), x, y


def test_stacked_loss_and_eigenvalues_match_each_member():
    model, flats, x, y = _trained_ensemble(members=3, steps=20)
    losses = wv.stacked_loss_fn(model, nn.MSELoss())(flats, x, y)
    eigenvalues = cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), flats, x, y)
    twin = _float64_copy(model)
    for k, flat in enumerate(flats):
        wv.set_flat_params(twin, flat)
        assert losses[k] == pytest.approx(float(F.mse_loss(twin(x), y).detach()), rel=1e-12)
        expected = torch.linalg.eigvalsh(cv.hessian_by_double_backward(twin, nn.MSELoss(), x, y))
        assert torch.allclose(eigenvalues[k], expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(K, 13\)"):
        cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), flats[0], x, y)
