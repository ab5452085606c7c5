"""Curvature of the mean loss at a weight vector: exact Hessians, Hessian-vector products, the top
eigenvalue by Lanczos, and the minimal ratio (from Hessian eigenvalues, or from sampled nearby weights).

`loss_fn(outputs, targets)` returns the batch MEAN (see hw1utils.weight_vector). The caller's model is never
changed. Nets with dropout or batch norm should be put in `eval()` mode first (vmap refuses random ops, and
batch statistics would make the loss depend on the batch cut).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from hw1utils.weight_vector import (
    FlatLoss,
    _batch_mean,
    _check_flat,
    _n_params,
    check_stack,
    flat_params,
    float64,
    functional_loss,
)

# torch.func's forward-mode AD calls the deprecated torch.jit.script internally (torch 2.14): not ours to fix
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
SAMPLE_CHUNK = 256  # nearby weight vectors evaluated at once by sampled_minimal_ratio (bounds memory)
CPU_HESSIAN_BLOCK = 2**16  # (tangent, example) pairs per vmap(hessian) chunk on CPU: 2x faster than all


# ---------------------------------------------------------------- exact Hessian


def _format_bytes(n_bytes: float) -> str:
    """A byte count in GiB (from 1 GiB up) or MiB."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def check_hessian_size(n_params: int, max_params: int, members: int = 1) -> None:
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
    check_hessian_size(_n_params(model), max_params)
    loss = functional_loss(model, loss_fn)
    matrix = torch.func.hessian(loss)(flat_params(model).double(), float64(inputs), float64(targets))
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
    """Exact float64 Hessian by double backward, row by row: slow, an independent check of `hessian`.

    Each row is autograd.grad of one gradient entry on a float64 copy of the model (P backward passes).
    """
    check_hessian_size(_n_params(model), max_params)
    twin = copy.deepcopy(model).double()
    params = [p for p in twin.parameters() if p.requires_grad]
    loss = loss_fn(twin(float64(inputs)), float64(targets))
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
    """Fraction of nearby weights theta + radius * u (u uniform on the unit sphere) with a higher loss.

    Higher means strictly above the loss at theta; float64, all samples through one vmap; the model is
    untouched.
    """
    if radius <= 0 or n_samples < 1:
        raise ValueError(f"need radius > 0 and n_samples >= 1, got radius={radius}, n_samples={n_samples}")
    loss = functional_loss(model, loss_fn)
    flat, x, t = flat_params(model).double(), float64(inputs), float64(targets)
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
    """Largest ALGEBRAIC Hessian eigenvalue of the full-data mean loss, by Lanczos on Hessian-vector products.

    Products in the model dtype, Lanczos basis in float64. A lower bound that tightens with `iters`.
    """
    if iters < 1 or tol < 0:
        raise ValueError(f"need iters >= 1 and tol >= 0, got iters={iters}, tol={tol}")
    product = _hvp_operator(model, loss_fn, inputs, targets, batch_size)
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(_n_params(model), generator=generator, dtype=torch.float64)
    return float(_lanczos_top(product, start.to(flat_params(model).device), iters, tol))


# ---------------------------------------------------------------- Hessian spectra of stacks of same-shaped nets (1-2c)


def _member_chunk(flats: Tensor, inputs: Tensor) -> int | None:
    """Members per vmap(hessian) chunk: all at once on accelerators, cache-sized blocks on the CPU."""
    if flats.device.type != "cpu":
        return None
    return max(1, CPU_HESSIAN_BLOCK // (flats.shape[1] * max(len(inputs), 1)))


def stacked_hessian(loss: FlatLoss, flats: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """(K, P, P) symmetrised Hessians of the K members."""
    per_member = vmap(torch.func.hessian(loss), in_dims=(0, None, None), chunk_size=_member_chunk(flats, inputs))
    return _symmetrise(per_member(flats, inputs, targets))


def stacked_hessian_eigenvalues(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], flats: Tensor,
                                inputs: Tensor, targets: Tensor, max_params: int = 4000) -> Tensor:
    """(K, P) ascending float64 Hessian eigenvalues of each row of `flats` (model's architecture)."""
    check_hessian_size(check_stack(model, flats), max_params, members=len(flats))
    loss = functional_loss(model, loss_fn)
    matrices = stacked_hessian(loss, flats.double(), float64(inputs), float64(targets))
    return torch.linalg.eigvalsh(matrices)
