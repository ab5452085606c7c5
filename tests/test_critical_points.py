"""Tests of hw1utils.critical_points: Levenberg-Marquardt reaches known minima and saddles (plain autograd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_curvature import F64, _autograd_gradient, _float64_copy, _tanh_net
from torch import nn

from hw1utils import critical_points as cp
from hw1utils import curvature as cv
from hw1utils import weight_vector as wv


def _reference_grad_norms(model: nn.Module, flats: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient norm of each row of flats by plain autograd on a float64 copy of the model."""
    twin = _float64_copy(model)
    norms = []
    for flat in flats:
        wv.set_flat_params(twin, flat)
        norms.append(_autograd_gradient(twin, nn.MSELoss(), x, y).norm())
    return torch.stack(norms)


def test_minimize_grad_norm_reaches_a_minimum_of_a_tanh_net():
    """1-4-1 tanh student on data from a teacher of the same shape, started 0.02 away from the teacher."""
    teacher = _tanh_net((1, 4, 1), seed=0)
    star = torch.tensor([3.0, -2.0, 4.0, 2.5, -1.5, 0.5, 1.0, 0.0, 1.0, -1.0, 0.5, 0.8, 0.1], dtype=F64)
    wv.set_flat_params(teacher, star)
    x = torch.linspace(-1, 1, 32, dtype=F64).unsqueeze(1)
    with torch.no_grad():
        y = teacher(x)
    offsets = torch.randn(4, 13, generator=torch.Generator().manual_seed(0), dtype=F64)
    starts = star + 0.02 * offsets / offsets.norm(dim=1, keepdim=True)
    out, info = cp.minimize_grad_norm(teacher, nn.MSELoss(), starts, x, y, steps=15)
    before, after = _reference_grad_norms(teacher, starts, x, y), _reference_grad_norms(teacher, out, x, y)
    assert before.min() > 5e-3  # gradient norms 0.009 .. 0.04: a real start, not already critical
    assert after.max() < 1e-8
    assert torch.allclose(info.grad_norm_before, before, rtol=1e-10)
    assert torch.allclose(info.grad_norm_after, after, rtol=1e-6, atol=1e-14)
    assert info.median_grad_norm[0] > 1e6 * info.median_grad_norm[-1]
    assert len(info.median_grad_norm) == info.steps + 1 <= 16
    assert torch.allclose(wv.flat_params(teacher), star)  # the model is untouched


def test_minimize_grad_norm_converges_to_a_saddle_too():
    """f(x) = w2 * w1 * x fitted to y = x has a strict saddle at w = 0; starts near it end on it."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    x = torch.linspace(-1, 1, 21, dtype=F64).unsqueeze(1)
    starts = 0.01 * torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    out, info = cp.minimize_grad_norm(model, nn.MSELoss(), starts, x, x, steps=20)
    assert out.abs().max() < 1e-10
    assert info.grad_norm_after.max() < 1e-10
    assert torch.allclose(info.loss_after, (x**2).mean().expand(4))
    eigenvalues = cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), out, x, x)
    assert all(cv.minimal_ratio(e, cv.relative_tol(e, 1e-6)) == 0.5 for e in eigenvalues)


def _bilinear_saddle() -> tuple[nn.Module, torch.Tensor]:
    """f(x) = w2 * w1 * x fitted to y = x: a non-degenerate saddle at w = 0 (Hessian eigenvalues +-2 mean x^2)."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    return model, torch.linspace(-1, 1, 21, dtype=F64).unsqueeze(1)


@pytest.mark.parametrize("start", [(0.05, -0.03), (0.1, 0.07), (-0.08, -0.02)])
def test_minimize_grad_norm_converges_quadratically_to_a_non_degenerate_saddle(start):
    model, x = _bilinear_saddle()
    eigenvalues = cv.stacked_hessian_eigenvalues(model, nn.MSELoss(), torch.zeros(1, 2, dtype=F64), x, x)[0]
    assert torch.allclose(eigenvalues, 2 * (x**2).mean() * torch.tensor([-1.0, 1.0], dtype=F64))  # non-degenerate
    flats = torch.tensor([start], dtype=F64)
    out, info = cp.minimize_grad_norm(model, nn.MSELoss(), flats, x, x, steps=3, gtol=0.0)
    norms = info.median_grad_norm  # one member: its own gradient norm, at the start and after each step
    assert len(norms) == 4 and norms[0] > 1e-2
    for before, after in zip(norms[:-1], norms[1:]):
        assert after <= before**2  # quadratic (or faster): the number of correct digits at least doubles
    assert norms[-1] < 1e-20 and out.abs().max() < 1e-15


def test_minimize_grad_norm_never_changes_the_callers_model_or_weights():
    model, x = _bilinear_saddle()
    with torch.no_grad():
        model[0].weight.fill_(0.3)
        model[1].weight.fill_(-0.2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flats = torch.tensor([[0.05, -0.03], [0.9, 1.1]], dtype=F64)
    kept = flats.clone()
    out, _ = cp.minimize_grad_norm(model, nn.MSELoss(), flats, x, x, steps=5)
    assert torch.equal(flats, kept) and not torch.equal(out, kept)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_run_that_does_not_reach_the_criterion_is_reported_as_stalled():
    """One LM step from far away leaves the gradient above 1e-8: classified as stalled, never critical."""
    from hw1utils import minimal_ratio_study as study

    model, x = _bilinear_saddle()
    flats = torch.tensor([[0.05, -0.03], [3.0, -2.0]], dtype=F64)
    _, info = cp.minimize_grad_norm(model, nn.MSELoss(), flats, x, x, steps=1)
    norms = info.grad_norm_after.numpy()
    assert norms[1] > 1e-8
    kinds = study.classify(norms, np.zeros(2), np.full(2, np.inf), criterion=1e-8, pin_gap=1e-6)
    assert kinds[1] == study.FLAT and kinds[1] not in ("minimum", "saddle")


def test_minimize_grad_norm_rejects_bad_input():
    model = _tanh_net((1, 2, 1), seed=0)
    x = torch.zeros(3, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"\(K, 7\)"):
        cp.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 6), x, x)
    with pytest.raises(ValueError, match="mu_init"):
        cp.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 7), x, x, mu_init=0.0)
