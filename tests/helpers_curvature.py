"""Seeded tanh nets, regression data and autograd references shared by the weight-vector, curvature and
critical-point tests."""

from __future__ import annotations

import copy

import torch
from torch import nn

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
