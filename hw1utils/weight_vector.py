"""A model's trainable weights as one flat vector, and the mean loss and its gradient norm as functions of
that vector (for one vector, or for K stacked vectors of the same architecture at once).

Every `loss_fn(outputs, targets) -> scalar` must return a MEAN over the examples (e.g. `nn.MSELoss()`);
batch-wise results are combined weighted by batch size. The caller's model is never changed: the loss
goes through `torch.func.functional_call` on the flat vector.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

LossFn = Callable[[Tensor, Tensor], Tensor]
FlatLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


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


def float64(tensor: Tensor) -> Tensor:
    """`tensor` in float64 when it is floating point (class-index targets stay integer)."""
    return tensor.double() if tensor.is_floating_point() else tensor


# ---------------------------------------------------------------- the loss as a function of the flat vector


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


def stacked_loss_fn(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> FlatLoss:
    """`f(flats (K, P), inputs, targets) -> (K,)` mean losses of K weight vectors of model's architecture."""
    return vmap(functional_loss(model, loss_fn), in_dims=(0, None, None))


def check_stack(model: nn.Module, flats: Tensor) -> int:
    """Number of parameters P; ValueError unless flats is a (K, P) tensor."""
    n_params = _n_params(model)
    if not isinstance(flats, Tensor) or flats.dim() != 2 or flats.shape[1] != n_params:
        shape = tuple(flats.shape) if isinstance(flats, Tensor) else type(flats).__name__
        raise ValueError(f"flats must be a (K, {n_params}) tensor: one flat parameter vector per row "
                         f"(torch.stack of flat_params), got {shape}")
    return n_params


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
