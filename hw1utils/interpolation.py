"""Linear interpolation between two trained models: the blended model, and the cross-entropy loss and
accuracy at points of the line from one to the other (Goodfellow et al. 2015; notebook 1-3c)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from hw1utils._evaluation import _dataset_mean, _device_of, _stateless


def _blend(start: Tensor, end: Tensor, alpha: Tensor | float) -> Tensor:
    """(1 - alpha) * start + alpha * end, exact at alpha = 0 and 1."""
    return (1 - alpha) * start + alpha * end


def _check_interpolable(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise unless the two models are distinct objects with the same state_dict names and shapes."""
    if model_a is model_b:
        raise ValueError("model_a and model_b are the same object, so the line between them is one point; "
                         "pass the two differently trained models (e.g. a copy saved before retraining)")
    shapes_a = {k: tuple(v.shape) for k, v in model_a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in model_b.state_dict().items()}
    if shapes_a != shapes_b:
        differ = sorted(k for k in shapes_a.keys() | shapes_b.keys() if shapes_a.get(k) != shapes_b.get(k))
        raise ValueError("the models have different architectures; entries that differ (name: shape a vs b): "
                         + ", ".join(f"{k}: {shapes_a.get(k)} vs {shapes_b.get(k)}" for k in differ[:5]))


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A new model (copy of model_a) with parameters and float buffers (1 - alpha) theta_a + alpha theta_b."""
    _check_interpolable(model_a, model_b)
    mixed = copy.deepcopy(model_a)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    with torch.no_grad():
        for name, tensor in mixed.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(_blend(state_a[name], state_b[name].to(tensor.device), float(alpha)))
    return mixed


def interpolation_curve(model_a: nn.Module, model_b: nn.Module, alphas: Sequence[float] | np.ndarray | Tensor,
                        x: Tensor, y: Tensor, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Cross-entropy loss and accuracy on (x, y) at every alpha of the line from model_a to model_b.

    All alphas are evaluated at once (vmap over stacked interpolated parameters), data in chunks of
    `batch_size` examples: memory grows with len(alphas) * batch_size. Models are run in eval mode.
    Returns numpy arrays `alpha`, `loss` (mean cross-entropy) and `accuracy` (fraction correct).
    """
    _check_interpolable(model_a, model_b)
    template, state_a = _stateless(model_a)
    state_b = model_b.state_dict()
    device = _device_of(model_a)
    alpha = torch.as_tensor(alphas, dtype=torch.float64, device=device).reshape(-1)
    if alpha.numel() == 0:
        raise ValueError("alphas is empty; pass at least one alpha")
    stacked, fixed = {}, {}
    for name, ta in state_a.items():
        if ta.is_floating_point():
            weight = alpha.to(ta.dtype).view(-1, *[1] * ta.dim())
            stacked[name] = _blend(ta, state_b[name].to(device), weight)
        else:
            fixed[name] = ta
    forward = vmap(lambda params, xb: functional_call(template, (params, fixed), (xb,)), in_dims=(0, None))

    def chunk_means(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Per-alpha mean loss and accuracy on one chunk."""
        logits = forward(stacked, xb)  # (alphas, batch, classes)
        losses = F.cross_entropy(logits.transpose(1, 2), yb.expand(len(alpha), -1), reduction="none")
        correct = (logits.argmax(-1) == yb).to(torch.float64)
        return losses.to(torch.float64).mean(1), correct.mean(1)

    with torch.no_grad():
        loss, accuracy = _dataset_mean(chunk_means, batch_size, device, x, y)
    return {"alpha": alpha.cpu().numpy(), "loss": loss.cpu().numpy(), "accuracy": accuracy.cpu().numpy()}
