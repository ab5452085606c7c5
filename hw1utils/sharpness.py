"""Flatness measures of a trained model and the Dinh et al. ReLU rescaling that changes them without
changing the function (notebooks 1-3c, 1-3d).

- `keskar_sharpness`: Keskar et al. (2017)'s sharpness exactly as in the paper: the box C_eps, L-BFGS-B,
  reported x100.
- `sharpness`: the course's L2-ball version: the quadratic estimate lambda_max eps^2 / (2 (1 + L)) and a
  measured value by projected gradient ascent (with box=True the ascent runs in Keskar's box, but it is
  still projected ascent, not the paper's L-BFGS-B).
- `pacbayes_mag_flatness`: Jiang et al. (2019)'s magnitude-aware PAC-Bayes flatness 1 / sigma'^2.

All losses are full-data means computed in float64 on a frozen eval-mode copy; the model is never modified.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, OptimizeResult, minimize
from torch import Tensor, nn
from torch.func import grad_and_value

from hw1utils.curvature import top_hessian_eigenvalue
from hw1utils.evaluation import dataset_mean, device_of, eval_copy
from hw1utils.weight_vector import LossFn, flat_params, functional_loss

KESKAR_EPSILONS = (1e-3, 5e-4)  # the box sizes of Keskar et al. (2017), Tables 3 and 4
KESKAR_ITERATIONS = 10  # "10 iterations of L-BFGS-B" in Keskar et al. (2017), Section 2.2.2


@dataclass(frozen=True)
class _FullDataLoss:
    """A frozen eval-mode copy of a model, its float64 flat weights, and the full-data mean loss of them."""

    model: nn.Module
    theta: Tensor
    loss: Callable[[Tensor], Tensor]
    grad_and_loss: Callable[[Tensor], tuple[Tensor, ...]]


def _full_data_loss(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor,
                    batch_size: int | None) -> _FullDataLoss:
    """The float64 full-data mean loss of model's weights (and its exact gradient), in chunks of batch_size."""
    frozen = eval_copy(model)
    device, theta = device_of(frozen), flat_params(frozen).double()
    objective = functional_loss(frozen, loss_fn)

    def data_mean(fn: Callable[[Tensor, Tensor], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """Full-data float64 mean of the chunk means that fn returns."""
        return dataset_mean(fn, batch_size, device, inputs, targets, dtype=torch.float64)

    def loss_of(flat: Tensor) -> Tensor:
        """Mean loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: (objective(flat, xb, yb),))[0]

    def grad_and_loss_of(flat: Tensor) -> tuple[Tensor, ...]:
        """Mean gradient and loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: grad_and_value(objective)(flat, xb, yb))

    return _FullDataLoss(frozen, theta, loss_of, grad_and_loss_of)


def _check_eps(eps: float) -> None:
    """Reject a neighbourhood size that is not a positive finite number."""
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be positive and finite, got {eps}")


def _check_count(value: int, name: str, hint: str) -> None:
    """Reject a count that is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({hint}), got {value!r}")


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
    """The course's sharpness in an L2 ball: the quadratic `estimate` and, when ascent_steps > 0, a measured `ascent`.

    estimate = max(lambda_max, 0) * eps^2 / (2 (1 + L)), lambda_max the top Hessian eigenvalue (Lanczos)
    and L the mean loss at theta. ascent = max over the eps-ball of (L(theta') - L) / (1 + L), found by
    projected gradient ascent from a seeded random start inside the ball, keeping the best value seen
    (theta itself included, so ascent >= 0). The ball is the L2 ball of radius eps around theta in
    parameter space; with box=True it is Keskar's box |theta'_i - theta_i| <= eps (|theta_i| + 1), but
    the maximiser is still this projected (sign-)ascent and the value is a ratio, not x100: for the
    paper's measure (L-BFGS-B, x100) use `keskar_sharpness`.
    L and the ascent are computed in float64 (a float32 loss cannot resolve changes of order eps^2).
    `loss_fn` must return the batch mean; data are processed in chunks of `batch_size` (None: all) and
    must be on the model's device. The model is evaluated in eval mode and never modified.
    first_order = ||grad L|| * eps / (1 + L) is what a linear loss would give in the ball: where the gradient
    is not zero, it dominates the ascent in a small enough ball.
    Returns a dict with loss, lambda_max, estimate, first_order and (when ascent_steps > 0) ascent.
    """
    _check_eps(eps)
    if ascent_steps < 0:
        raise ValueError(f"ascent_steps must be >= 0, got {ascent_steps}")
    full = _full_data_loss(model, loss_fn, inputs, targets, batch_size)
    loss = full.loss(full.theta).item()
    lambda_max = top_hessian_eigenvalue(full.model, loss_fn, inputs, targets, batch_size=batch_size, seed=seed)
    estimate = max(lambda_max, 0.0) * eps**2 / (2 * (1 + loss))
    grad_norm = full.grad_and_loss(full.theta)[0].norm().item()
    result = {"loss": loss, "lambda_max": lambda_max, "estimate": estimate, "first_order": grad_norm * eps / (1 + loss)}
    if ascent_steps > 0:
        radius = eps * (full.theta.abs() + 1) if box else eps
        highest = _ascent_max_loss(full.loss, full.grad_and_loss, full.theta, radius, box, ascent_steps, seed)
        result["ascent"] = (highest - loss) / (1 + loss)
    return result


def keskar_box(theta: Tensor, eps: float) -> Tensor:
    """Half-widths eps (|theta_i| + 1) of Keskar et al.'s box C_eps around theta (full space, A = identity)."""
    _check_eps(eps)
    return eps * (theta.abs() + 1)


def _lbfgsb_max(full: _FullDataLoss, half_width: np.ndarray, start: np.ndarray,
                max_iterations: int) -> tuple[float, OptimizeResult]:
    """Largest loss on the box theta + [-half_width, half_width] by scipy's L-BFGS-B from theta + start."""
    theta = full.theta

    def negative_loss_and_gradient(offset: np.ndarray) -> tuple[float, np.ndarray]:
        """-f(theta + offset) and its exact gradient, as float64 numpy values for scipy."""
        gradient, value = full.grad_and_loss(theta + torch.from_numpy(offset).to(theta.device))
        return -value.item(), -gradient.detach().cpu().numpy()

    # no tolerance stop: a well-trained net's tiny gradients would end the search before its budget
    found = minimize(negative_loss_and_gradient, start, jac=True, method="L-BFGS-B",
                     bounds=Bounds(-half_width, half_width),
                     options={"maxiter": max_iterations, "ftol": 0.0, "gtol": 0.0})
    return -float(found.fun), found


def keskar_sharpness(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, eps: float,
                     max_iterations: int = KESKAR_ITERATIONS, seed: int = 0, start: str = "random",
                     batch_size: int | None = None) -> dict[str, float | int | str]:
    """Keskar et al. (2017)'s sharpness: phi = (max_{y in C_eps} f(x + y) - f(x)) / (1 + f(x)) * 100.

    x are the float64 trainable weights, f the full-data mean loss of `loss_fn` (float64, exact gradient by
    torch.func), and C_eps = {y : |y_i| <= eps (|x_i| + 1)} the paper's box in the full space (A = identity).
    The maximum is sought as in the paper by L-BFGS-B (scipy, bounds = the box) with `max_iterations`
    iterations (the paper: 10; their eps: 1e-3 and 5e-4, see KESKAR_EPSILONS). No tolerance stops it early:
    it ends before the budget only where the projected gradient is exactly zero or the line search fails.
    It starts (start="random") from a point drawn uniformly in the box with numpy seed `seed`, or
    (start="zero") from y = 0, where at an exact minimum the gradient vanishes and L-BFGS-B stops at once,
    hence the random default. The value is a lower bound on the true maximum (L-BFGS-B finds a local
    maximum; other seeds may find higher ones); y = 0 is counted, so phi >= 0. The model is evaluated in eval mode, in
    chunks of `batch_size` (None: all data at once), and never modified.
    Returns loss f(x), max_loss, sharpness (phi, x100 as in the paper), iterations and evaluations used
    by L-BFGS-B, and a method string.
    """
    _check_eps(eps)
    _check_count(max_iterations, "max_iterations", f"the paper uses {KESKAR_ITERATIONS}")
    if start not in ("random", "zero"):
        raise ValueError(f"start must be 'random' (a seeded uniform point of the box) or 'zero', got {start!r}")
    full = _full_data_loss(model, loss_fn, inputs, targets, batch_size)
    half_width = keskar_box(full.theta, eps).cpu().numpy()
    offset = (np.random.default_rng(seed).uniform(-half_width, half_width) if start == "random"
              else np.zeros_like(half_width))
    loss = full.loss(full.theta).item()
    highest, found = _lbfgsb_max(full, half_width, offset, max_iterations)
    max_loss = max(loss, highest)
    origin = f"a uniform random point of the box (seed {seed})" if start == "random" else "y = 0"
    return {"loss": loss, "max_loss": max_loss, "sharpness": (max_loss - loss) / (1 + loss) * 100,
            "iterations": int(found.nit), "evaluations": int(found.nfev),
            "method": f"Keskar et al. (2017) box |y_i| <= {eps:g} (|x_i| + 1), full space; scipy L-BFGS-B, "
                      f"at most {max_iterations} iterations from {origin}; float64 full-data loss"}


def error_rate(outputs: Tensor, targets: Tensor) -> Tensor:
    """Fraction of examples whose arg-max output is not the target class (the 0-1 training error)."""
    return (outputs.argmax(dim=1) != targets).to(outputs.dtype).mean()


def _expected_loss_under_noise(full: _FullDataLoss, sigma: float, magnitude_eps: float, draws: int,
                               seed: int) -> float:
    """Mean of f(w + u) over `draws` u_i = n_i sqrt(sigma^2 w_i^2 + magnitude_eps^2), n ~ N(0, I) from `seed`."""
    theta = full.theta
    std = torch.sqrt(sigma**2 * theta**2 + magnitude_eps**2)
    generator = torch.Generator().manual_seed(seed)  # the same n for every sigma (common random numbers)
    values = [full.loss(theta + std * torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
                        .to(theta.device)).item() for _ in range(draws)]
    return float(np.mean(values))


def _bisect_sigma(increase_at: Callable[[float], float], deviation: float, tolerance: float, sigma_max: float,
                  depth: int) -> tuple[float, float, int, bool]:
    """Bisection on [0, sigma_max] for increase_at(sigma) = deviation +- tolerance.

    Returns sigma, the increase there, the steps used, and whether the target was bracketed (some sigma
    reached it; False means even sigma near sigma_max raised the loss by less than deviation).
    """
    lower, upper = 0.0, float(sigma_max)
    for step in range(1, depth + 1):
        sigma = (lower + upper) / 2
        increase = increase_at(sigma)
        hit = abs(increase - deviation) < tolerance
        if hit or step == depth:
            return sigma, increase, step, hit or upper < sigma_max
        lower, upper = (lower, sigma) if increase > deviation else (sigma, upper)
    raise ValueError(f"depth must be >= 1, got {depth}")


def pacbayes_mag_flatness(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor,
                          deviation: float = 0.1, magnitude_eps: float = 1e-3, draws: int = 10,
                          search_depth: int = 15, tolerance: float = 1e-2, sigma_max: float = 2.0,
                          seed: int = 0, batch_size: int | None = None) -> dict[str, float | int | str]:
    """Jiang et al. (2019)'s magnitude-aware PAC-Bayes flatness ("pacbayes.mag.flatness"): 1 / sigma'^2.

    sigma' is the largest relative noise scale whose perturbation u_i ~ N(0, sigma'^2 w_i^2 + magnitude_eps^2)
    of every trainable weight w_i (multiplicative noise w_i (1 + sigma' n_i), plus a small additive floor;
    the paper's magnitude_eps is 1e-3) raises the expected full-data mean loss E_u[f(w + u)] - f(w) by at
    most `deviation`. Found by bisection on [0, sigma_max], each step estimating the expectation from
    `draws` Monte-Carlo draws, stopping when the increase is within `tolerance` of `deviation` or after
    `search_depth` steps (the last midpoint is returned). The constants (0.1, [0, 2], 15 steps, 10 draws,
    0.01) are those of the reference implementation (robust-generalization-measures, adapted from the
    authors' code), which measures the deviation on training accuracy: pass loss_fn=error_rate for that;
    any mean loss works. Simplification: the same normal draws n (seed `seed`) are reused at every sigma,
    so the estimate is a deterministic, continuous function of sigma and the bisection is reproducible.
    The model is evaluated in eval mode, float64, in chunks of `batch_size`, and never modified.
    Returns loss f(w), sigma, flatness (1 / sigma^2), increase (the estimated E f(w + u) - f(w) at sigma),
    bisection steps used, bracketed (False when no sigma up to sigma_max raised the loss by `deviation`,
    e.g. a near-chance error rate: then sigma' >= sigma_max and the flatness is only an upper bound), and
    a method string.
    """
    for value, name in ((deviation, "deviation"), (tolerance, "tolerance"), (sigma_max, "sigma_max")):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if not (magnitude_eps >= 0 and math.isfinite(magnitude_eps)):
        raise ValueError(f"magnitude_eps must be >= 0 and finite (the paper uses 1e-3), got {magnitude_eps}")
    _check_count(draws, "draws", "Monte-Carlo draws per bisection step; the reference uses 10")
    _check_count(search_depth, "search_depth", "bisection steps; the reference uses 15")
    full = _full_data_loss(model, loss_fn, inputs, targets, batch_size)
    loss = full.loss(full.theta).item()
    sigma, increase, steps, bracketed = _bisect_sigma(
        lambda scale: _expected_loss_under_noise(full, scale, magnitude_eps, draws, seed) - loss,
        deviation, tolerance, sigma_max, search_depth)
    return {"loss": loss, "sigma": sigma, "flatness": 1 / sigma**2, "increase": increase, "steps": steps,
            "bracketed": bracketed,
            "method": f"Jiang et al. (2019) pacbayes.mag.flatness: bisection of sigma' on [0, {sigma_max:g}] for "
                      f"an expected loss increase of {deviation:g} +- {tolerance:g}, {draws} Monte-Carlo draws "
                      f"(seed {seed}, reused at every sigma), magnitude eps {magnitude_eps:g}"}


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
