"""Critical points (minima and saddles) of the loss of many same-shaped small nets at once: batched
Levenberg-Marquardt on the gradient, driving each member's gradient norm toward zero (notebook 1-2c)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from hw1utils.curvature import check_hessian_size, stacked_hessian
from hw1utils.weight_vector import FlatLoss, check_stack, float64, functional_loss, stacked_loss_fn

MU_LIMITS = (1e-30, 1e30)  # the damping of minimize_grad_norm stays inside these; at the top a member stops
FD_STEP = 0.1  # finite-difference step, as a fraction of the LM velocity, for the geodesic acceleration
MU_GRID = tuple(10.0 ** (k / 4) for k in range(-16, 17))  # dampings tried per Hessian, x current mu


def _stacked_grad(loss: FlatLoss, flats: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """(K, P) gradients of the K members."""
    return vmap(grad(loss), in_dims=(0, None, None))(flats, inputs, targets)


@dataclass
class GradNormMinimization:
    """What minimize_grad_norm did, per member (K rows) and per step."""

    grad_norm_before: Tensor  # (K,) gradient 2-norm of the mean loss at the start
    grad_norm_after: Tensor  # (K,) gradient 2-norm at the end
    loss_before: Tensor  # (K,) mean loss at the start
    loss_after: Tensor  # (K,) mean loss at the end (critical points may sit above or below the start)
    median_grad_norm: list[float]  # median over members of the gradient norm: start, then after each step
    mu: Tensor  # (K,) final Levenberg-Marquardt damping (reaching MU_LIMITS[1] means the member stalled)
    steps: int  # Hessian evaluations done (fewer than asked when every member had stopped)


@dataclass(frozen=True)
class LMSettings:
    """Levenberg-Marquardt knobs of minimize_grad_norm."""

    max_tries: int = 3  # grids tried per Hessian; after each failure the grid moves up by MU_GRID[-1]**2
    max_accel_ratio: float = 0.75  # reject steps with 2|acceleration| > this * |velocity| (Transtrum 2012)

    def __post_init__(self) -> None:
        """Raise ValueError on settings that cannot work."""
        if self.max_tries < 1 or self.max_accel_ratio <= 0:
            raise ValueError(f"need max_tries >= 1 and max_accel_ratio > 0, got {self}")


def _damped_solve(eigenvalues: Tensor, eigenvectors: Tensor, residuals: Tensor, grid: Tensor) -> Tensor:
    """(K, C, P) damped solves -(H^2 + mu I)^{-1} H r per member k, residual r[k, c], damping grid[k, c].

    Through H = V diag(lam) V^T: -V diag(lam / (lam^2 + mu)) V^T r.
    """
    in_eigenbasis = torch.einsum("kpq,kcp->kcq", eigenvectors, residuals)
    scaled = eigenvalues[:, None, :] / (eigenvalues[:, None, :] ** 2 + grid[:, :, None]) * in_eigenbasis
    return -torch.einsum("kpq,kcq->kcp", eigenvectors, scaled)


def _grads_of_rows(loss: FlatLoss, points: Tensor, data: tuple[Tensor, Tensor]) -> Tensor:
    """Gradients at a (K, C, P) block of weight vectors, as one (K * C)-row vmap."""
    return _stacked_grad(loss, points.reshape(-1, points.shape[-1]), *data).reshape(points.shape)


def _lm_trials(loss: FlatLoss, flats: Tensor, grads: Tensor, spectrum: tuple[Tensor, Tensor], grid: Tensor,
               data: tuple[Tensor, Tensor], max_accel_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Geodesic-accelerated LM steps for every damping in grid (K, C): (trial points, gradients, valid).

    `valid` marks steps whose acceleration is small enough; all three are shaped (K, C, ...).
    """
    eigenvalues, eigenvectors = spectrum
    velocity = _damped_solve(eigenvalues, eigenvectors, grads[:, None, :].expand(-1, grid.shape[1], -1), grid)
    # second directional derivative of the residual g along the velocity, by finite differences
    probe = _grads_of_rows(loss, flats[:, None, :] + FD_STEP * velocity, data)
    hessian_velocity = torch.einsum("kpq,kq,kcq->kcp", eigenvectors, eigenvalues,
                                    torch.einsum("kpq,kcp->kcq", eigenvectors, velocity))
    curvature = 2 / FD_STEP * ((probe - grads[:, None, :]) / FD_STEP - hessian_velocity)
    acceleration = _damped_solve(eigenvalues, eigenvectors, curvature, grid)
    trials = flats[:, None, :] + velocity + acceleration / 2
    valid = 2 * acceleration.norm(dim=2) <= max_accel_ratio * velocity.norm(dim=2)
    return trials, _grads_of_rows(loss, trials, data), valid


def _lm_step(loss: FlatLoss, flats: Tensor, grads: Tensor, mu: Tensor, data: tuple[Tensor, Tensor],
             settings: LMSettings) -> tuple[Tensor, Tensor, Tensor]:
    """One LM step per member from one Hessian each; returns the new (flats, grads, mu).

    The dampings mu * MU_GRID are tried at once; per member, the step with the smallest damping among
    those that lower ||g|| is kept (mu becomes that damping). Members with no such step retry with the
    grid shifted up (max_tries times).
    """
    spectrum = torch.linalg.eigh(stacked_hessian(loss, flats, *data))
    grid_factors = torch.tensor(MU_GRID, dtype=flats.dtype, device=flats.device)
    pending = torch.ones(len(flats), dtype=torch.bool, device=flats.device)
    for _ in range(settings.max_tries):
        grid = (mu[:, None] * grid_factors).clamp(*MU_LIMITS)
        trials, trial_grads, valid = _lm_trials(loss, flats, grads, spectrum, grid, data, settings.max_accel_ratio)
        improving = valid & (trial_grads.norm(dim=2) < grads.norm(dim=1)[:, None])
        best = torch.where(improving, grid, torch.inf).argmin(dim=1)  # the boldest step that still helps
        rows = torch.arange(len(flats), device=flats.device)
        accept = pending & improving[rows, best]
        flats = torch.where(accept[:, None], trials[rows, best], flats)
        grads = torch.where(accept[:, None], trial_grads[rows, best], grads)
        failed = (mu * MU_GRID[-1] ** 2).clamp(*MU_LIMITS)
        mu = torch.where(accept, grid[rows, best], torch.where(pending, failed, mu))
        pending = pending & ~accept & (mu < MU_LIMITS[1])
        if not pending.any():
            break
    return flats, grads, mu


def minimize_grad_norm(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], flats: Tensor,
                       inputs: Tensor, targets: Tensor, steps: int = 50, mu_init: float = 1e-3,
                       settings: LMSettings | None = None, gtol: float = 1e-13,
                       max_params: int = 4000) -> tuple[Tensor, GradNormMinimization]:
    """Drive each member's gradient norm toward zero: Levenberg-Marquardt on the residual grad L(theta).

    The residual's Jacobian is the Hessian H, so the step is v = -(H^2 + mu I)^{-1} H g (eigh of H per
    member) plus half the geodesic acceleration (the same solve applied to the residual's second
    directional derivative along v, by finite differences; Transtrum & Sethna 2012), which lets steps
    follow curved valleys. Per Hessian, the dampings mu * MU_GRID (1e-4 .. 1e4, 4 per decade) are tried
    at once and the smallest one whose step lowers ||g|| is kept, so mu adapts by orders of magnitude
    in one step (needed: Hessians of small tanh nets span 1e-9 .. 1e1). Converges to critical points
    of any index (minima and saddles), fast near non-degenerate ones; in near-flat regions (many
    eigenvalues |lambda| < 1e-4, saturating units drifting to infinity) ||g|| falls only linearly, so
    check info.grad_norm_after. All members run batched (vmap) in float64; a member
    stops once ||g|| <= gtol or its mu reaches MU_LIMITS[1]. Returns the (K, P) float64 parameters and
    a GradNormMinimization record.
    """
    check_hessian_size(check_stack(model, flats), max_params, members=len(flats))
    if steps < 0 or mu_init <= 0:
        raise ValueError(f"need steps >= 0 and mu_init > 0, got steps={steps}, mu_init={mu_init}")
    settings = settings or LMSettings()
    loss, data = functional_loss(model, loss_fn), (float64(inputs), float64(targets))
    flats = flats.detach().double().clone()
    grads = _stacked_grad(loss, flats, *data)
    mu = torch.full((len(flats),), float(mu_init), dtype=torch.float64, device=flats.device)
    before, loss_before = grads.norm(dim=1), stacked_loss_fn(model, loss_fn)(flats, *data)
    history = [float(before.median())]
    for _ in range(steps):
        active = (grads.norm(dim=1) > gtol) & (mu < MU_LIMITS[1])
        if not active.any():
            break
        moved = _lm_step(loss, flats[active], grads[active], mu[active], data, settings)
        flats[active], grads[active], mu[active] = moved
        history.append(float(grads.norm(dim=1).median()))
    loss_after = stacked_loss_fn(model, loss_fn)(flats, *data)
    record = GradNormMinimization(before, grads.norm(dim=1), loss_before, loss_after, history, mu,
                                  steps=len(history) - 1)
    return flats, record
