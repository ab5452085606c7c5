"""Seeded small classifier MLPs, class-label data and state-dict checks shared by the interpolation,
input-sensitivity, sharpness and landscape tests."""

from __future__ import annotations

import torch
from torch import nn

from hw1utils.models import mlp

DTYPE = torch.float64


def _net(seed: int, hidden: int = 6, activation: str = "relu") -> nn.Sequential:
    """A tiny float64 MLP 4 -> hidden -> 3."""
    torch.manual_seed(seed)
    return mlp(4, [hidden], 3, activation).double()


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
