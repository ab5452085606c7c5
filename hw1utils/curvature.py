"""Curvature of the loss: flat parameter vectors, gradient norm, exact Hessian, Lanczos top eigenvalue,
minimal ratio, and gradient-norm minimisation for many small nets at once (notebooks 1-2c and 1-3d).

Every function here takes `loss_fn(outputs, targets) -> scalar` that returns a MEAN over the examples
(e.g. `nn.MSELoss()`, `nn.CrossEntropyLoss()`); batch-wise results are combined weighted by batch size,
which equals the full-data result only for a mean loss. No function here changes the caller's model:
they work on flat copies of its parameters through `torch.func.functional_call`. Nets with dropout
or batch norm should be put in `eval()` mode first (vmap refuses random ops, and batch statistics
would make the loss depend on the batch cut).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

FlatLoss = Callable[[Tensor, Tensor, Tensor], Tensor]
# torch.func's forward-mode AD calls the deprecated torch.jit.script internally (torch 2.14): not ours to fix
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
SAMPLE_CHUNK = 256  # nearby weight vectors evaluated at once by sampled_minimal_ratio (bounds memory)
MU_LIMITS = (1e-30, 1e30)  # the damping of minimize_grad_norm stays inside these; at the top a member stops
FD_STEP = 0.1  # finite-difference step, as a fraction of the LM velocity, for the geodesic acceleration
CPU_HESSIAN_BLOCK = 2**16  # (tangent, example) pairs per vmap(hessian) chunk on CPU: 2x faster than all
MU_GRID = tuple(10.0 ** (k / 4) for k in range(-16, 17))  # dampings tried per Hessian, x current mu


# ---------------------------------------------------------------- flat parameter vectors


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs of the trainable parameters, in model.parameters() order."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (requires_grad=True): "
                         "nothing to differentiate")
    return named


def _n_params(model: nn.Module) -> int:
    """Number of trainable parameters (the length of the flat vector)."""
    return sum(p.numel() for _, p in _trainable(model))


def flat_params(model: nn.Module) -> Tensor:
    """A detached 1-D copy of the trainable parameters, concatenated in model.parameters() order."""
    return torch.cat([p.detach().reshape(-1) for _, p in _trainable(model)])


def _check_flat(flat: Tensor, n_params: int, name: str = "flat") -> None:
    """Raise ValueError unless `flat` is a 1-D tensor of length n_params."""
    if not isinstance(flat, Tensor) or flat.dim() != 1 or flat.shape[0] != n_params:
        shape = tuple(flat.shape) if isinstance(flat, Tensor) else type(flat).__name__
        raise ValueError(f"{name} must be a 1-D tensor of the {n_params} trainable parameters "
                         f"(see flat_params(model)), got {shape}")


def set_flat_params(model: nn.Module, flat: Tensor) -> None:
    """Copy the 1-D vector `flat` into the trainable parameters, in place (cast to their dtype/device)."""
    named = _trainable(model)
    _check_flat(flat, sum(p.numel() for _, p in named))
    with torch.no_grad():
        for (_, p), chunk in zip(named, flat.split([p.numel() for _, p in named]), strict=True):
            p.copy_(chunk.reshape(p.shape))


def _fixed_state(model: nn.Module) -> dict[str, Tensor]:
    """Buffers and frozen parameters, detached: the part of the state that the flat vector leaves alone."""
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    return {**{name: b.detach() for name, b in model.named_buffers()}, **frozen}


def _like(tensor: Tensor, flat: Tensor) -> Tensor:
    """A copy of `tensor` on flat's device, in flat's dtype when floating (so float64 runs stay float64)."""
    dtype = flat.dtype if tensor.is_floating_point() else tensor.dtype
    return tensor.to(device=flat.device, dtype=dtype, copy=True)


def functional_loss(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> FlatLoss:
    """`f(flat, inputs, targets) = loss_fn(model(inputs), targets)` with the weights taken from `flat`.

    `flat` is split and reshaped into the trainable parameters (model.parameters() order); buffers and
    frozen parameters come from the model, copied into flat's dtype. Works under vmap, grad, jvp and
    hessian, and in float64 (pass float64 `flat` and inputs). The model itself is never modified.
    """
    named = _trainable(model)
    names = [name for name, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    fixed = _fixed_state(model)

    def loss(flat: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        """Mean loss of the model with weights `flat` on (inputs, targets)."""
        _check_flat(flat, sum(sizes))
        chunks = zip(names, flat.split(sizes), shapes, strict=True)
        params = {name: chunk.reshape(shape) for name, chunk, shape in chunks}
        state = {**{name: _like(t, flat) for name, t in fixed.items()}, **params}
        value = loss_fn(functional_call(model, state, (inputs,)), targets)
        if value.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar mean loss (reduction='mean'), got shape "
                             f"{tuple(value.shape)}")
        return value

    return loss


def _float64(tensor: Tensor) -> Tensor:
    """`tensor` in float64 when it is floating point (class-index targets stay integer)."""
    return tensor.double() if tensor.is_floating_point() else tensor


# ---------------------------------------------------------------- gradient norm and batch averaging


def _batch_mean(fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor,
                batch_size: int | None) -> Tensor:
    """Sum over consecutive batches of fn(batch) * len(batch) / N: the full-data value of a mean quantity."""
    n = len(inputs)
    if len(targets) != n:
        raise ValueError(f"inputs and targets differ in length ({n} vs {len(targets)})")
    if batch_size is None:
        return fn(inputs, targets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None (all data at once), got {batch_size!r}")
    parts = [fn(inputs[i:i + batch_size], targets[i:i + batch_size]) * (len(inputs[i:i + batch_size]) / n)
             for i in range(0, n, batch_size)]
    return torch.stack(parts).sum(dim=0)


def grad_norm(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor,
              batch_size: int | None = None) -> float:
    """2-norm over all parameter gradients of the full-data mean loss (batches weighted by their size)."""
    loss, flat = functional_loss(model, loss_fn), flat_params(model)
    gradient = _batch_mean(lambda x, t: grad(loss)(flat, x, t), inputs, targets, batch_size)
    return float(gradient.norm())


# ---------------------------------------------------------------- exact Hessian


def _format_bytes(n_bytes: float) -> str:
    """A byte count in GiB (from 1 GiB up) or MiB."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _check_hessian_size(n_params: int, max_params: int, members: int = 1) -> None:
    """Raise ValueError, with the memory it would take, when a (P, P) Hessian is too large to form."""
    if n_params <= max_params:
        return
    matrix = members * n_params**2 * 8
    raise ValueError(
        f"refusing an exact Hessian: the model has P = {n_params:,} trainable parameters, above "
        f"max_params = {max_params:,}. {members} x (P, P) float64 matri{'x' if members == 1 else 'ces'} "
        f"alone need{'s' if members == 1 else ''} {_format_bytes(matrix)}, and the forward-over-reverse "
        f"computation holds P tangent copies of the gradient and the activations on top (at least "
        f"{_format_bytes(3 * matrix)} in all). For the largest eigenvalue use "
        f"top_hessian_eigenvalue(...) (Lanczos on Hessian-vector products); or raise max_params if "
        f"that memory is available.")


def _symmetrise(matrix: Tensor) -> Tensor:
    """(H + H^T) / 2 over the last two dimensions."""
    return (matrix + matrix.transpose(-1, -2)) / 2


def hessian(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor,
            max_params: int = 4000) -> Tensor:
    """Exact (P, P) float64 Hessian of the mean loss w.r.t. the flat trainable parameters, symmetrised.

    Computed by torch.func.hessian of `functional_loss` on float64 copies of the parameters, inputs and
    float targets. Refuses P > max_params (ValueError with the memory it would need).
    """
    _check_hessian_size(_n_params(model), max_params)
    loss = functional_loss(model, loss_fn)
    matrix = torch.func.hessian(loss)(flat_params(model).double(), _float64(inputs), _float64(targets))
    return _symmetrise(matrix)


def _gradient_row(entry: Tensor, params: list[Tensor]) -> Tensor:
    """d(entry)/d(params) flattened; zeros where `entry` does not depend on the parameters."""
    if not entry.requires_grad:
        return torch.zeros(sum(p.numel() for p in params), dtype=entry.dtype, device=entry.device)
    rows = torch.autograd.grad(entry, params, retain_graph=True, allow_unused=True)
    filled = [torch.zeros_like(p) if r is None else r for r, p in zip(rows, params, strict=True)]
    return torch.cat([r.reshape(-1) for r in filled])


def hessian_by_double_backward(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                               targets: Tensor, max_params: int = 4000) -> Tensor:
    """Exact float64 Hessian, row by row by autograd.grad of each gradient entry on a float64 copy of
    the model: slow (P backward passes), meant as an independent check of `hessian`."""
    _check_hessian_size(_n_params(model), max_params)
    twin = copy.deepcopy(model).double()
    params = [p for p in twin.parameters() if p.requires_grad]
    loss = loss_fn(twin(_float64(inputs)), _float64(targets))
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=True)])
    return _symmetrise(torch.stack([_gradient_row(entry, params) for entry in gradient]))


# ---------------------------------------------------------------- minimal ratio


def _eigenvalue_vector(eigenvalues: Tensor) -> Tensor:
    """Eigenvalues (tensor, array or list) as a non-empty 1-D float64 tensor."""
    values = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array (one Hessian's spectrum), got shape "
                         f"{tuple(values.shape)}; for a (K, P) stack, call once per row")
    return values


def relative_tol(eigenvalues: Tensor, rel: float) -> float:
    """The absolute tolerance rel * max|lambda|, to pass as `tol` to minimal_ratio."""
    if rel < 0:
        raise ValueError(f"rel must be >= 0, got {rel}")
    return rel * float(_eigenvalue_vector(eigenvalues).abs().max())


def minimal_ratio(eigenvalues: Tensor, tol: float = 0.0) -> float:
    """Fraction of eigenvalues strictly above the ABSOLUTE tolerance `tol` (>= 0).

    Eigenvalues within tol of zero have no reliable sign and count as not positive, so a minimum with
    flat directions scores below 1. State a relative tolerance with `tol=relative_tol(eigs, 1e-6)`.
    """
    if tol < 0:
        raise ValueError(f"tol must be >= 0 (an absolute threshold on the eigenvalues), got {tol}")
    return float((_eigenvalue_vector(eigenvalues) > tol).double().mean())


def _unit_directions(n_samples: int, n_params: int, seed: int, like: Tensor) -> Tensor:
    """(n_samples, n_params) rows uniform on the unit sphere, drawn on the CPU from `seed`, moved to like."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_samples, n_params, generator=generator, dtype=torch.float64)
    return (directions / directions.norm(dim=1, keepdim=True)).to(device=like.device, dtype=like.dtype)


def sampled_minimal_ratio(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                          targets: Tensor, radius: float, n_samples: int, seed: int) -> float:
    """Fraction of nearby weights theta + radius * u (u uniform on the unit sphere) whose loss is
    strictly higher than at theta; float64, all samples through one vmap; the model is untouched."""
    if radius <= 0 or n_samples < 1:
        raise ValueError(f"need radius > 0 and n_samples >= 1, got radius={radius}, n_samples={n_samples}")
    loss = functional_loss(model, loss_fn)
    flat, x, t = flat_params(model).double(), _float64(inputs), _float64(targets)
    nearby = flat + radius * _unit_directions(n_samples, flat.numel(), seed, flat)
    losses = vmap(loss, in_dims=(0, None, None), chunk_size=SAMPLE_CHUNK)(nearby, x, t)
    return float((losses > loss(flat, x, t)).double().mean())


# ---------------------------------------------------------------- Hessian-vector products and Lanczos


def _hvp_operator(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                  targets: Tensor, batch_size: int | None) -> Callable[[Tensor], Tensor]:
    """v -> H v of the full-data mean loss, in the model's dtype, batches weighted by their size.

    Reverse-over-reverse, grad of <grad L, v>: forward-over-reverse (jvp of grad) fails on
    nn.MSELoss in torch 2.x ("ZeroTensors are immutable") and was not faster on CPU.
    """
    loss, flat = functional_loss(model, loss_fn), flat_params(model)
    gradient = grad(loss)

    def product(vector: Tensor) -> Tensor:
        """H @ vector."""
        tangent = vector.to(device=flat.device, dtype=flat.dtype)
        directional = grad(lambda p, x, t: torch.dot(gradient(p, x, t), tangent))
        return _batch_mean(lambda x, t: directional(flat, x, t), inputs, targets, batch_size)

    return product


def hessian_vector_product(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                           targets: Tensor, vector: Tensor, batch_size: int | None = None) -> Tensor:
    """H @ vector for the full-data mean loss, in the model's dtype (batches weighted by their size)."""
    _check_flat(vector, _n_params(model), name="vector")
    return _hvp_operator(model, loss_fn, inputs, targets, batch_size)(vector)


def _tridiagonal(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    """The symmetric tridiagonal Lanczos matrix T from its diagonal and off-diagonal."""
    matrix = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.diag(torch.stack(betas), 1)
        matrix = matrix + off + off.T
    return matrix


def _lanczos_top(matvec: Callable[[Tensor], Tensor], start: Tensor, iters: int, tol: float) -> Tensor:
    """Largest Ritz value of symmetric `matvec` by Lanczos with full reorthogonalisation (float64).

    Stops after `iters` steps, when the top Ritz pair's residual beta * |s_last| <= tol * max|theta|,
    or when the Krylov space is exhausted (then the Ritz values are exact eigenvalues).
    """
    basis = [start / start.norm()]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for _ in range(min(iters, start.numel())):
        w = matvec(basis[-1]).to(start.dtype)
        alphas.append(torch.dot(w, basis[-1]))
        q = torch.stack(basis)
        for _ in range(2):  # classical Gram-Schmidt twice against every basis vector
            w = w - q.T @ (q @ w)
        ritz, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
        beta, scale = w.norm(), ritz.abs().max().clamp_min(torch.finfo(start.dtype).tiny)
        if beta * vectors[-1, -1].abs() <= tol * scale or beta <= torch.finfo(start.dtype).eps * scale:
            break
        betas.append(beta)
        basis.append(w / beta)
    return ritz[-1]


def top_hessian_eigenvalue(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                           targets: Tensor, iters: int = 30, batch_size: int | None = None, seed: int = 0,
                           tol: float = 1e-6) -> float:
    """Largest ALGEBRAIC Hessian eigenvalue of the full-data mean loss, by Lanczos on Hessian-vector
    products (model dtype; Lanczos basis in float64). A lower bound that tightens with `iters`."""
    if iters < 1 or tol < 0:
        raise ValueError(f"need iters >= 1 and tol >= 0, got iters={iters}, tol={tol}")
    product = _hvp_operator(model, loss_fn, inputs, targets, batch_size)
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(_n_params(model), generator=generator, dtype=torch.float64)
    return float(_lanczos_top(product, start.to(flat_params(model).device), iters, tol))


# ---------------------------------------------------------------- stacks of same-shaped nets (1-2c)


def stacked_loss_fn(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> FlatLoss:
    """`f(flats (K, P), inputs, targets) -> (K,)` mean losses of K weight vectors of model's architecture."""
    return vmap(functional_loss(model, loss_fn), in_dims=(0, None, None))


def _check_stack(model: nn.Module, flats: Tensor) -> int:
    """Number of parameters P; ValueError unless flats is a (K, P) tensor."""
    n_params = _n_params(model)
    if not isinstance(flats, Tensor) or flats.dim() != 2 or flats.shape[1] != n_params:
        shape = tuple(flats.shape) if isinstance(flats, Tensor) else type(flats).__name__
        raise ValueError(f"flats must be a (K, {n_params}) tensor: one flat parameter vector per row "
                         f"(torch.stack of flat_params), got {shape}")
    return n_params


def _stacked_grad(loss: FlatLoss, flats: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """(K, P) gradients of the K members."""
    return vmap(grad(loss), in_dims=(0, None, None))(flats, inputs, targets)


def _member_chunk(flats: Tensor, inputs: Tensor) -> int | None:
    """Members per vmap(hessian) chunk: all at once on accelerators, cache-sized blocks on the CPU."""
    if flats.device.type != "cpu":
        return None
    return max(1, CPU_HESSIAN_BLOCK // (flats.shape[1] * max(len(inputs), 1)))


def _stacked_hessian(loss: FlatLoss, flats: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """(K, P, P) symmetrised Hessians of the K members."""
    per_member = vmap(torch.func.hessian(loss), in_dims=(0, None, None), chunk_size=_member_chunk(flats, inputs))
    return _symmetrise(per_member(flats, inputs, targets))


def stacked_hessian_eigenvalues(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], flats: Tensor,
                                inputs: Tensor, targets: Tensor, max_params: int = 4000) -> Tensor:
    """(K, P) ascending float64 Hessian eigenvalues of each row of `flats` (model's architecture)."""
    _check_hessian_size(_check_stack(model, flats), max_params, members=len(flats))
    loss = functional_loss(model, loss_fn)
    matrices = _stacked_hessian(loss, flats.double(), _float64(inputs), _float64(targets))
    return torch.linalg.eigvalsh(matrices)


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
    """(K, C, P): -(H^2 + mu I)^{-1} H r for each member k, residual r[k, c] and damping mu = grid[k, c],
    through H = V diag(lam) V^T: -V diag(lam / (lam^2 + mu)) V^T r."""
    in_eigenbasis = torch.einsum("kpq,kcp->kcq", eigenvectors, residuals)
    scaled = eigenvalues[:, None, :] / (eigenvalues[:, None, :] ** 2 + grid[:, :, None]) * in_eigenbasis
    return -torch.einsum("kpq,kcq->kcp", eigenvectors, scaled)


def _grads_of_rows(loss: FlatLoss, points: Tensor, data: tuple[Tensor, Tensor]) -> Tensor:
    """Gradients at a (K, C, P) block of weight vectors, as one (K * C)-row vmap."""
    return _stacked_grad(loss, points.reshape(-1, points.shape[-1]), *data).reshape(points.shape)


def _lm_trials(loss: FlatLoss, flats: Tensor, grads: Tensor, spectrum: tuple[Tensor, Tensor], grid: Tensor,
               data: tuple[Tensor, Tensor], max_accel_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Geodesic-accelerated LM steps for every damping in grid (K, C): (trial points, their gradients,
    valid) where valid marks steps whose acceleration is small enough, all shaped (K, C, ...)."""
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
    """One Hessian per member; try the dampings mu * MU_GRID at once and keep, per member, the step
    with the smallest damping among those that lower ||g|| (mu becomes that damping). Members with no
    such step retry with the grid shifted up (max_tries times); returns (flats, grads, mu)."""
    spectrum = torch.linalg.eigh(_stacked_hessian(loss, flats, *data))
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
    _check_hessian_size(_check_stack(model, flats), max_params, members=len(flats))
    if steps < 0 or mu_init <= 0:
        raise ValueError(f"need steps >= 0 and mu_init > 0, got steps={steps}, mu_init={mu_init}")
    settings = settings or LMSettings()
    loss, data = functional_loss(model, loss_fn), (_float64(inputs), _float64(targets))
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
