"""Loss and gradient norm at every training iteration (1-2b), and the numbers that summarise both curves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from . import train, weight_vector


def whole_data_gradient_hook(loss: str, x, y, chunk: int) -> Callable[[int, nn.Module], dict[str, float]]:
    """An `on_epoch` hook recording the 2-norm of the gradient of the mean loss over all of (x, y)."""
    per_example = train.loss_function(loss)

    def mean_loss(out, target):
        """The mean of the per-example loss."""
        return per_example(out, target).mean()

    def hook(epoch: int, model: nn.Module) -> dict[str, float]:
        """The whole-data gradient norm of `model` at this epoch end."""
        return {"full_grad_norm": weight_vector.grad_norm(model, mean_loss, x, y, batch_size=chunk)}

    return hook


def record_training(model: nn.Module, data: tuple, *, loss: str, chunk: int = 2048, **fit_options: Any
                    ) -> train.History:
    """Train `model` with `train.fit`, recording every step's loss and gradient norm and, at each
    evaluated epoch end, the gradient norm on the whole training set (History.extra["full_grad_norm"])."""
    hook = whole_data_gradient_hook(loss, data[0], data[1], chunk)
    return train.fit(model, data, loss=loss, record_steps=True, on_epoch=hook, **fit_options)


def end_window(n_steps: int, steps_per_epoch: int) -> int:
    """Steps that summarise the end of training: the last 1% of them, at least one epoch."""
    return max(steps_per_epoch, -(-n_steps // 100))


def step_summary(history: train.History) -> dict[str, float]:
    """First, peak and end (`end_window`) values of the per-step loss and gradient norm; the whole-data gradient.

    With full batches an epoch is one step, and one step of a spiking gradient norm says little; the
    window's mean does not hang on one step.
    """
    loss, grad = np.asarray(history.step_loss), np.asarray(history.step_grad_norm)
    end = slice(-end_window(len(grad), history.steps_per_epoch), None)
    peak = int(grad.argmax())
    full = history.extra["full_grad_norm"]
    return {
        "first_loss": float(loss[0]), "end_loss": float(loss[end].mean()),
        "first_grad": float(grad[0]), "peak_grad": float(grad[peak]), "peak_iteration": peak,
        "loss_at_peak": float(loss[peak]),
        "end_grad": float(grad[end].mean()),
        "end_grad_rms": float(np.sqrt((grad[end] ** 2).mean())),
        "full_grad_first": float(full[0]), "full_grad_last": float(full[-1]),
        "noise_share": (float(1 - (full[-1] / np.sqrt((grad[end] ** 2).mean())) ** 2)
                        if history.steps_per_epoch > 1 else float("nan")),  # full batch: no sampling noise
        "tripling_steps": int((grad[1:] > 3 * grad[:-1]).sum()),
    }


SUMMARY_ROWS = {  # step_summary key -> row label of the notebook's table
    "first_loss": "loss, first step", "end_loss": "loss, mean over the end (last 1% of steps, >= 1 epoch)",
    "first_grad": "gradient norm, first step", "peak_grad": "gradient norm, peak",
    "peak_iteration": "iteration of the peak", "loss_at_peak": "loss at the peak",
    "end_grad": "gradient norm, mean over the end",
    "end_grad_rms": "gradient norm, RMS over the end",
    "full_grad_last": "whole-data gradient norm, last epoch end",
    "noise_share": "share of the squared step gradient that is batch noise",
    "tripling_steps": "steps where the gradient norm more than tripled",
}

