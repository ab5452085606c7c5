"""Plumbing shared by the weight-space modules: example-weighted means over chunks of the data, and
eval-mode copies of a model (deep, or parameter-free on the meta device) so the caller's model is untouched."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (error if it has none)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters; pass a model with at least one parameter") from None


def check_batch_size(batch_size: int | None) -> None:
    """Reject chunk sizes below 1 (None means one chunk)."""
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")


def chunks(batch_size: int | None, device: torch.device, *tensors: Tensor,
            dtype: torch.dtype | None = None) -> Iterator[tuple[Tensor, ...]]:
    """Slices of `batch_size` rows (None: all) of each tensor, on `device`, floating ones cast to `dtype`."""
    check_batch_size(batch_size)
    n = len(tensors[0])
    if n == 0 or any(len(t) != n for t in tensors):
        raise ValueError(f"need non-empty data tensors of equal length, got {[len(t) for t in tensors]}")
    step = n if batch_size is None else int(batch_size)
    for start in range(0, n, step):
        yield tuple(t[start:start + step].to(device, dtype if t.is_floating_point() else None)
                    for t in tensors)


def dataset_mean(fn: Callable[..., tuple[Tensor, ...]], batch_size: int | None, device: torch.device,
                  *data: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, ...]:
    """Example-weighted mean over data chunks of each tensor that `fn(*chunk)` returns as a chunk mean."""
    totals: list[Tensor] | None = None
    for chunk in chunks(batch_size, device, *data, dtype=dtype):
        weighted = [value * len(chunk[0]) for value in fn(*chunk)]
        totals = weighted if totals is None else [t + w for t, w in zip(totals, weighted, strict=True)]
    return tuple(t / len(data[0]) for t in totals)


def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode (dropout off, batch norm on running statistics)."""
    return copy.deepcopy(model).eval()


def stateless(model: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """An eval-mode meta-device copy of `model` (no storage) and its detached parameters and buffers."""
    template = copy.deepcopy(model).to("meta").eval()
    return template, dict(model.state_dict())
