"""Keskar et al.'s sharpness (quadratic estimate from the top Hessian eigenvalue, and measured by projected
ascent) and the Dinh et al. ReLU rescaling that changes it without changing the function (notebook 1-3d)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad_and_value

from hw1utils._evaluation import _dataset_mean, _device_of, _eval_copy
from hw1utils.curvature import top_hessian_eigenvalue
from hw1utils.weight_vector import LossFn, flat_params, functional_loss


def _random_start(theta: Tensor, radius: Tensor | float, box: bool, seed: int) -> Tensor:
    """A seeded random offset inside the L2 ball (or the box) of the given radius."""
    generator = torch.Generator().manual_seed(seed)
    if box:
        uniform = torch.rand(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
        return (2 * uniform - 1) * radius
    direction = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    scale = torch.rand((), generator=generator, dtype=theta.dtype).item()
    return direction * (scale * radius / direction.norm())


def _ascent_step(delta: Tensor, gradient: Tensor, radius: Tensor | float, box: bool) -> Tensor:
    """One projected ascent step: a move of one radius (L2: along g/|g|; box: sign(g)), then projection."""
    if box:
        return torch.clamp(delta + radius * gradient.sign(), -radius, radius)
    moved = delta + radius * gradient / gradient.norm().clamp_min(torch.finfo(gradient.dtype).tiny)
    return moved * min(1.0, radius / max(moved.norm().item(), torch.finfo(moved.dtype).tiny))


def _ascent_max_loss(loss_of: Callable[[Tensor], Tensor], grad_and_loss_of: Callable[[Tensor], tuple],
                     theta: Tensor, radius: Tensor | float, box: bool, steps: int, seed: int) -> float:
    """The largest loss at theta and along `steps` projected gradient-ascent steps from a random start."""
    best = loss_of(theta).item()
    delta = _random_start(theta, radius, box, seed)
    for _ in range(steps):
        gradient, value = grad_and_loss_of(theta + delta)
        best = max(best, value.item())
        delta = _ascent_step(delta, gradient, radius, box)
    return max(best, loss_of(theta + delta).item())


def sharpness(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, eps: float,
              batch_size: int | None = None, ascent_steps: int = 0, seed: int = 0,
              box: bool = False) -> dict[str, float]:
    """Keskar's sharpness: the quadratic `estimate` and, when ascent_steps > 0, a measured `ascent` value.

    estimate = max(lambda_max, 0) * eps^2 / (2 (1 + L)), lambda_max the top Hessian eigenvalue (Lanczos)
    and L the mean loss at theta. ascent = max over the eps-ball of (L(theta') - L) / (1 + L), found by
    projected gradient ascent from a seeded random start inside the ball, keeping the best value seen
    (theta itself included, so ascent >= 0). The ball is the L2 ball of radius eps around theta in
    parameter space; with box=True it is Keskar's box |theta'_i - theta_i| <= eps (|theta_i| + 1).
    L and the ascent are computed in float64 (a float32 loss cannot resolve changes of order eps^2).
    `loss_fn` must return the batch mean; data are processed in chunks of `batch_size` (None: all) and
    must be on the model's device. The model is evaluated in eval mode and never modified.
    Returns a dict with loss, lambda_max, estimate and (when ascent_steps > 0) ascent.
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if ascent_steps < 0:
        raise ValueError(f"ascent_steps must be >= 0, got {ascent_steps}")
    frozen = _eval_copy(model)
    device, theta = _device_of(frozen), flat_params(frozen).double()
    objective = functional_loss(frozen, loss_fn)

    def data_mean(fn: Callable[[Tensor, Tensor], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """Full-data float64 mean of the chunk means that fn returns."""
        return _dataset_mean(fn, batch_size, device, inputs, targets, dtype=torch.float64)

    def loss_of(flat: Tensor) -> Tensor:
        """Mean loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: (objective(flat, xb, yb),))[0]

    def grad_and_loss_of(flat: Tensor) -> tuple[Tensor, ...]:
        """Mean gradient and loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: grad_and_value(objective)(flat, xb, yb))

    loss = loss_of(theta).item()
    lambda_max = top_hessian_eigenvalue(frozen, loss_fn, inputs, targets, batch_size=batch_size, seed=seed)
    estimate = max(lambda_max, 0.0) * eps**2 / (2 * (1 + loss))
    result = {"loss": loss, "lambda_max": lambda_max, "estimate": estimate}
    if ascent_steps > 0:
        radius = eps * (theta.abs() + 1) if box else eps
        highest = _ascent_max_loss(loss_of, grad_and_loss_of, theta, radius, box, ascent_steps, seed)
        result["ascent"] = (highest - loss) / (1 + loss)
    return result


def rescale_relu_layers(model: nn.Module, a: float) -> nn.Module:
    """A copy of a ReLU MLP with the first Linear (weight, bias) times a and the next Linear's weight / a.

    ReLU is positively homogeneous, so the copy computes the same function (Dinh et al. 2017) while
    its curvature, hence its sharpness, changes.
    """
    if not (a > 0 and np.isfinite(a)):
        raise ValueError(f"the scale a must be positive and finite (ReLU(a z) = a ReLU(z) needs it), got {a}")
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    allowed = (nn.Flatten, nn.Linear, nn.ReLU)
    linear_at = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    if (not all(isinstance(layer, allowed) for layer in layers) or len(linear_at) < 2
            or linear_at[1] != linear_at[0] + 2 or not isinstance(layers[linear_at[0] + 1], nn.ReLU)):
        raise TypeError("rescale_relu_layers needs an nn.Sequential of Flatten/Linear/ReLU layers whose "
                        "first two Linear layers are joined by one ReLU, e.g. "
                        "hw1utils.models.mlp(..., activation='relu')")
    rescaled = copy.deepcopy(model)
    first, second = (rescaled[i] for i in linear_at[:2])
    with torch.no_grad():
        first.weight.mul_(a)
        if first.bias is not None:
            first.bias.mul_(a)
        second.weight.div_(a)
    return rescaled
