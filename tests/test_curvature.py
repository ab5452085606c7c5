"""Tests of hw1utils.curvature against closed forms, finite differences, plain autograd and eigvalsh."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw1utils import curvature as cv

F64 = torch.float64


def _tanh_net(widths: tuple[int, ...], seed: int, dtype: torch.dtype = F64) -> nn.Sequential:
    """Linear/tanh layers of the given widths (no activation after the last), seeded weights."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def _data(n: int, d_in: int, d_out: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 inputs (n, d_in) and targets (n, d_out)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d_in, generator=generator, dtype=F64),
            scale * torch.randn(n, d_out, generator=generator, dtype=F64))


def _autograd_gradient(model: nn.Module, loss_fn, inputs, targets) -> torch.Tensor:
    """Reference flat gradient by loss.backward() on a float64 copy of the model."""
    twin = _float64_copy(model)
    loss_fn(twin(inputs.double()), targets.double() if targets.is_floating_point() else targets).backward()
    return torch.cat([p.grad.reshape(-1) for p in twin.parameters()])


def _float64_copy(model: nn.Module) -> nn.Module:
    """A float64 deep copy of the model."""
    return copy.deepcopy(model).double()


def _with_bias(inputs: torch.Tensor) -> torch.Tensor:
    """Inputs with a column of ones appended: the design matrix [X, 1] of a Linear layer's (W, b)."""
    return torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], dim=1)


# ---------------------------------------------------------------- flat vectors


def test_flat_params_round_trip_in_parameter_order_and_skips_frozen():
    model = _tanh_net((2, 3, 1), seed=0)
    model[2].bias.requires_grad_(False)
    flat = cv.flat_params(model)
    expected = torch.cat([model[0].weight.reshape(-1), model[0].bias, model[2].weight.reshape(-1)])
    assert torch.equal(flat, expected.detach())
    cv.set_flat_params(model, torch.arange(flat.numel(), dtype=F64))
    assert torch.equal(model[0].bias, torch.tensor([6.0, 7.0, 8.0], dtype=F64))
    assert torch.equal(model[2].weight, torch.tensor([[9.0, 10.0, 11.0]], dtype=F64))
    with pytest.raises(ValueError, match="12 trainable parameters"):
        cv.set_flat_params(model, torch.zeros(13))


def test_functional_loss_matches_model_and_rejects_unreduced_losses():
    model = _tanh_net((2, 4, 1), seed=1)
    x, y = _data(9, 2, 1, seed=1)
    loss = cv.functional_loss(model, nn.MSELoss())
    assert torch.allclose(loss(cv.flat_params(model), x, y), F.mse_loss(model(x), y))
    with pytest.raises(ValueError, match="scalar mean loss"):
        cv.functional_loss(model, nn.MSELoss(reduction="none"))(cv.flat_params(model), x, y)


# ---------------------------------------------------------------- exact Hessian


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
    theta = cv.flat_params(model).double()
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
    theta, step = cv.flat_params(model).double(), 1e-5
    twin = _float64_copy(model)
    columns = []
    for i in range(theta.numel()):
        shifted = [theta.clone(), theta.clone()]
        shifted[0][i] += step
        shifted[1][i] -= step
        grads = []
        for point in shifted:
            cv.set_flat_params(twin, point)
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
    cv.grad_norm(model, loss_fn, x, y, batch_size=3)
    cv.top_hessian_eigenvalue(model, loss_fn, x, y, iters=5)
    cv.hessian_vector_product(model, loss_fn, x, y, torch.ones(cv.flat_params(model).numel()))
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


# ---------------------------------------------------------------- Hessian-vector products, Lanczos, gradient norm


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
    vector = torch.randn(cv.flat_params(model).numel(), generator=torch.Generator().manual_seed(8), dtype=F64)
    expected = cv.hessian(model, nn.MSELoss(), x, y) @ vector
    for batch_size in (None, 4, 10, 64):  # 4 leaves a last batch of 2
        product = cv.hessian_vector_product(model, nn.MSELoss(), x, y, vector, batch_size=batch_size)
        assert torch.allclose(product, expected, atol=1e-12), batch_size


def test_grad_norm_chunked_equals_full_and_autograd():
    model = _tanh_net((3, 4, 2), seed=9)
    x, y = _data(10, 3, 2, seed=9)
    expected = float(_autograd_gradient(model, nn.MSELoss(), x, y).norm())
    assert cv.grad_norm(model, nn.MSELoss(), x, y) == pytest.approx(expected, rel=1e-12)
    assert cv.grad_norm(model, nn.MSELoss(), x, y, batch_size=3) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        cv.grad_norm(model, nn.MSELoss(), x, y, batch_size=0)


# ---------------------------------------------------------------- minimal ratio


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
    cv.set_flat_params(model, solution)
    assert cv.grad_norm(model, nn.MSELoss(), x, y) < 1e-12
    assert cv.sampled_minimal_ratio(model, nn.MSELoss(), x, y, radius=1e-2, n_samples=500, seed=0) == 1.0


def test_sampled_and_hessian_minimal_ratio_at_a_saddle():
    """f(x) = w2 * w1 * x fitted to y = x: at w = 0 the gradient vanishes and H = [[0, -2m], [-2m, 0]]."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    cv.set_flat_params(model, torch.zeros(2))
    x = torch.linspace(-1, 1, 21, dtype=F64).unsqueeze(1)
    second_moment = float((x**2).mean())
    hess = cv.hessian(model, nn.MSELoss(), x, x)
    assert torch.allclose(hess, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=F64) * second_moment)
    assert cv.minimal_ratio(torch.linalg.eigvalsh(hess)) == 0.5
    ratio = cv.sampled_minimal_ratio(model, nn.MSELoss(), x, x, radius=1e-3, n_samples=2000, seed=1)
    assert 0.4 < ratio < 0.6
    assert ratio == cv.sampled_minimal_ratio(model, nn.MSELoss(), x, x, radius=1e-3, n_samples=2000, seed=1)


# ---------------------------------------------------------------- stacked nets


def _trained_ensemble(members: int, steps: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1-4-1 tanh architecture, `members` weight vectors after `steps` Adam steps on sinc(5x), and the data."""
    x = torch.linspace(-1, 1, 32, dtype=F64).unsqueeze(1)
    y = torch.sinc(5 * x)
    nets = [_tanh_net((1, 4, 1), seed=20 + k) for k in range(members)]
    flats = torch.stack([cv.flat_params(net) for net in nets]).requires_grad_()
    optimizer = torch.optim.Adam([flats], lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        cv.stacked_loss_fn(nets[0], nn.MSELoss())(flats, x, y).sum().backward()
        optimizer.step()
    return nets[0], flats.detach(), x, y


def test_stacked_loss_and_eigenvalues_match_each_member():
    model, flats, x, y = _trained_ensemble(members=3, steps=20)
    losses = cv.stacked_loss_fn(model, nn.MSELoss())(flats, x, y)
    eigenvalues = cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), flats, x, y)
    twin = _float64_copy(model)
    for k, flat in enumerate(flats):
        cv.set_flat_params(twin, flat)
        assert losses[k] == pytest.approx(float(F.mse_loss(twin(x), y).detach()), rel=1e-12)
        expected = torch.linalg.eigvalsh(cv.hessian_by_double_backward(twin, nn.MSELoss(), x, y))
        assert torch.allclose(eigenvalues[k], expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(K, 13\)"):
        cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), flats[0], x, y)


def _reference_grad_norms(model: nn.Module, flats: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient norm of each row of flats by plain autograd on a float64 copy of the model."""
    twin = _float64_copy(model)
    norms = []
    for flat in flats:
        cv.set_flat_params(twin, flat)
        norms.append(_autograd_gradient(twin, nn.MSELoss(), x, y).norm())
    return torch.stack(norms)


def test_minimize_grad_norm_reaches_a_minimum_of_a_tanh_net():
    """1-4-1 tanh student on data from a teacher of the same shape, started 0.02 away from the teacher."""
    teacher = _tanh_net((1, 4, 1), seed=0)
    star = torch.tensor([3.0, -2.0, 4.0, 2.5, -1.5, 0.5, 1.0, 0.0, 1.0, -1.0, 0.5, 0.8, 0.1], dtype=F64)
    cv.set_flat_params(teacher, star)
    x = torch.linspace(-1, 1, 32, dtype=F64).unsqueeze(1)
    with torch.no_grad():
        y = teacher(x)
    offsets = torch.randn(4, 13, generator=torch.Generator().manual_seed(0), dtype=F64)
    starts = star + 0.02 * offsets / offsets.norm(dim=1, keepdim=True)
    out, info = cv.minimize_grad_norm(teacher, nn.MSELoss(), starts, x, y, steps=15)
    before, after = _reference_grad_norms(teacher, starts, x, y), _reference_grad_norms(teacher, out, x, y)
    assert before.min() > 5e-3  # gradient norms 0.009 .. 0.04: a real start, not already critical
    assert after.max() < 1e-8
    assert torch.allclose(info.grad_norm_before, before, rtol=1e-10)
    assert torch.allclose(info.grad_norm_after, after, rtol=1e-6, atol=1e-14)
    assert info.median_grad_norm[0] > 1e6 * info.median_grad_norm[-1]
    assert len(info.median_grad_norm) == info.steps + 1 <= 16
    assert torch.allclose(cv.flat_params(teacher), star)  # the model is untouched


def test_minimize_grad_norm_converges_to_a_saddle_too():
    """f(x) = w2 * w1 * x fitted to y = x has a strict saddle at w = 0; starts near it end on it."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    x = torch.linspace(-1, 1, 21, dtype=F64).unsqueeze(1)
    starts = 0.01 * torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    out, info = cv.minimize_grad_norm(model, nn.MSELoss(), starts, x, x, steps=20)
    assert out.abs().max() < 1e-10
    assert info.grad_norm_after.max() < 1e-10
    assert torch.allclose(info.loss_after, (x**2).mean().expand(4))
    eigenvalues = cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), out, x, x)
    assert all(cv.minimal_ratio(e, cv.relative_tol(e, 1e-6)) == 0.5 for e in eigenvalues)


def test_minimize_grad_norm_rejects_bad_input():
    model = _tanh_net((1, 2, 1), seed=0)
    x = torch.zeros(3, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"\(K, 7\)"):
        cv.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 6), x, x)
    with pytest.raises(ValueError, match="mu_init"):
        cv.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 7), x, x, mu_init=0.0)
