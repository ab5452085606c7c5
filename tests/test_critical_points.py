"""Tests of hw1utils.critical_points: Levenberg-Marquardt reaches known minima and saddles (plain autograd)."""

from __future__ import annotations

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


def test_minimize_grad_norm_rejects_bad_input():
    model = _tanh_net((1, 2, 1), seed=0)
    x = torch.zeros(3, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"\(K, 7\)"):
        cp.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 6), x, x)
    with pytest.raises(ValueError, match="mu_init"):
        cp.minimize_grad_norm(model, nn.MSELoss(), torch.zeros(2, 7), x, x, mu_init=0.0)
