"""Loss landscape along directions in weight space: filter-normalised random directions (Li et al. 2018)
and the loss on a 2-D grid or a 1-D line through a centre along given directions (notebook 1-2a)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from hw1utils.evaluation import dataset_mean, device_of, eval_copy
from hw1utils.weight_vector import LossFn, flat_params, functional_loss

Span = tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]


def _as_flat(vector: Tensor | np.ndarray, like: Tensor, name: str) -> Tensor:
    """`vector` as a 1-D tensor with the device, dtype and length of `like`."""
    flat = torch.as_tensor(vector).to(device=like.device, dtype=like.dtype).reshape(-1)
    if flat.numel() != like.numel():
        raise ValueError(f"{name} has {flat.numel()} entries but the model has {like.numel()} parameters")
    return flat


def filter_normalized_direction(model: nn.Module, seed: int = 0) -> Tensor:
    """A seeded Gaussian direction (flat, P) with each weight row rescaled to that row's norm in the model.

    Rows are output units of Linear layers and filters of Conv layers (the first dimension). Biases and
    other 1-D parameters get zero, as in Li et al. (2018). Ordered like `weight_vector.flat_params`.
    """
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for weight in (p for p in model.parameters() if p.requires_grad):
        w = weight.detach()
        noise = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        if w.dim() <= 1:
            pieces.append(torch.zeros_like(w).reshape(-1))
            continue
        row_norms = w.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        pieces.append((noise.flatten(1) * row_norms[:, None]).reshape(-1))
    return torch.cat(pieces)


def _loss_evaluator(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor,
                    batch_size: int | None) -> Callable[[Tensor], Tensor]:
    """points (K, P) -> mean loss on (x, y) at each flat parameter vector (eval mode, vmapped over K)."""
    batched = vmap(functional_loss(eval_copy(model), loss_fn), in_dims=(0, None, None))
    device = device_of(model)

    def losses(points: Tensor) -> Tensor:
        """(K,) mean losses at the K points."""
        with torch.no_grad():
            return dataset_mean(lambda xb, yb: (batched(points, xb, yb),), batch_size, device, x, y)[0]

    return losses


def _grid_axes(span: Span, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The a and b coordinates of a steps x steps grid; span is (lo, hi) or ((a_lo, a_hi), (b_lo, b_hi))."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    pairs = span if np.ndim(span) == 2 else (span, span)
    if np.shape(pairs) != (2, 2):
        raise ValueError(f"span must be (lo, hi) or ((a_lo, a_hi), (b_lo, b_hi)), got {span}")
    return tuple(np.linspace(lo, hi, steps) for lo, hi in pairs)


def loss_surface(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor,
                 direction1: Tensor, direction2: Tensor, span: Span = (-1.0, 1.0), steps: int = 21,
                 center: Tensor | None = None,
                 batch_size: int | None = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss L(center + a d1 + b d2) on a steps x steps grid (center defaults to the model's parameters).

    Each grid row is one vmap call over its points, data in chunks of `batch_size` (memory grows with
    steps * batch_size); the model is run in eval mode and not modified.
    Returns numpy (a_grid, b_grid, losses), all (steps, steps), indexed [i, j] <-> (a_i, b_j).
    """
    theta = flat_params(model).detach() if center is None else _as_flat(center, flat_params(model), "center")
    d1, d2 = _as_flat(direction1, theta, "direction1"), _as_flat(direction2, theta, "direction2")
    a_axis, b_axis = _grid_axes(span, steps)
    b_values = torch.as_tensor(b_axis, device=theta.device, dtype=theta.dtype)
    losses_at = _loss_evaluator(model, loss_fn, x, y, batch_size)
    rows = [losses_at(theta + a * d1 + b_values[:, None] * d2) for a in a_axis]
    a_grid, b_grid = np.meshgrid(a_axis, b_axis, indexing="ij")
    return a_grid, b_grid, torch.stack(rows).cpu().numpy()


def loss_line(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, direction: Tensor,
              alphas: Sequence[float] | np.ndarray | Tensor, center: Tensor | None = None,
              batch_size: int | None = 4096) -> np.ndarray:
    """Loss L(center + alpha d) at every alpha (a 1-D cut) as a numpy array; center defaults to the model."""
    theta = flat_params(model).detach() if center is None else _as_flat(center, flat_params(model), "center")
    d = _as_flat(direction, theta, "direction")
    steps = torch.as_tensor(alphas, device=theta.device, dtype=theta.dtype)
    losses_at = _loss_evaluator(model, loss_fn, x, y, batch_size)
    return losses_at(theta + steps.reshape(-1, 1) * d).cpu().numpy()
