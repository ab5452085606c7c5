"""Sensitivity of a classifier to its input: the mean per-example norm of the loss gradient, and of the
softmax Jacobian (Novak et al. 2018), with respect to the input (notebook 1-3d)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from hw1utils.evaluation import dataset_mean, device_of, stateless


def sensitivity(model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int = 1024) -> float:
    """Mean over examples of ||d loss_i / d x_i||_2, each example's cross-entropy w.r.t. its own input.

    Per-example gradients via vmap(grad(...)), so the value does not depend on `batch_size` (unlike the
    gradient of a batch-mean loss, which is 1/batch as large). The model is run in eval mode.
    """
    template, state = stateless(model)

    def example_loss(x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of one example."""
        return F.cross_entropy(functional_call(template, state, (x.unsqueeze(0),)), y.unsqueeze(0))

    input_grads = vmap(grad(example_loss))

    def chunk_mean(xb: Tensor, yb: Tensor) -> tuple[Tensor]:
        """Mean input-gradient norm of one chunk."""
        return (input_grads(xb, yb).flatten(1).norm(dim=1).to(torch.float64).mean(),)

    with torch.no_grad():
        return float(dataset_mean(chunk_mean, batch_size, device_of(model), inputs, targets)[0])


def jacobian_sensitivity(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> float:
    """Mean over examples of ||d softmax(f(x)) / d x||_F, Novak et al. (2018), via vmap(jacrev). Eval mode."""
    template, state = stateless(model)

    def probabilities(x: Tensor) -> Tensor:
        """Class probabilities of one example."""
        return functional_call(template, state, (x.unsqueeze(0),)).softmax(-1).squeeze(0)

    jacobians = vmap(jacrev(probabilities))

    def chunk_mean(xb: Tensor) -> tuple[Tensor]:
        """Mean Jacobian Frobenius norm of one chunk."""
        return (jacobians(xb).flatten(1).norm(dim=1).to(torch.float64).mean(),)

    with torch.no_grad():
        return float(dataset_mean(chunk_mean, batch_size, device_of(model), inputs)[0])
