"""Models of one shape at many sizes, each trained for the same number of epochs (1-3b).

One `train.fit_ensemble` per size trains its seeds together; sizes cannot share an ensemble, since
stacking needs equal shapes. Each member is scored once, at the end, on the whole training and test
sets. The generalisation gap is test minus training loss, and training minus test accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import models, train, uncertainty

METRICS = ("train_loss", "test_loss", "train_acc", "test_acc", "loss_gap", "acc_gap")
REGIMES = ("all sizes", "before the fit", "fitted")  # all runs; sizes below `fitting_size`; from it on


@torch.no_grad()
def member_metrics(ensemble: train.Ensemble, x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of every member on (x, y), as two (K,) arrays; batched forward passes."""
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need a non-empty data set with one label per input, got {len(x)} inputs, {len(y)} labels")
    logits = ensemble.forward(x)  # (K, N, classes)
    losses = torch.stack([F.cross_entropy(member, y, reduction="mean") for member in logits])
    accuracy = (logits.argmax(-1) == y).double().mean(1)
    return losses.double().cpu().numpy(), accuracy.cpu().numpy()


def train_sizes(build: Callable[[int], nn.Module], widths: Sequence[int], seeds: Sequence[int],
                tensors: tuple[Tensor, ...], *, epochs: int, lr: float, lr_schedule: str, batch_size: int,
                device: torch.device | None = None, cache: str | None = None) -> pd.DataFrame:
    """Train `build(width)` for every width and seed (seeds stacked); one row per (width, seed) of final metrics.

    Rows hold width, parameters, seed and METRICS; `cache` prefixes one disk-cache entry per width.
    """
    x, y, x_test, y_test = tensors
    rows = []
    for width in widths:
        ensemble = train.fit_ensemble(lambda w=width: build(w), seeds, tensors, epochs=epochs, lr=lr,
                                      lr_schedule=lr_schedule, batch_size=batch_size, eval_every=0, device=device,
                                      cache=cache and f"{cache}-w{width}")
        (train_loss, train_acc), (test_loss, test_acc) = (member_metrics(ensemble, x, y),
                                                          member_metrics(ensemble, x_test, y_test))
        rows += [{"width": width, "parameters": models.count_params(ensemble.template), "seed": seed,
                  "train_loss": train_loss[k], "test_loss": test_loss[k], "train_acc": train_acc[k],
                  "test_acc": test_acc[k]} for k, seed in enumerate(seeds)]
    runs = pd.DataFrame(rows)
    return runs.assign(loss_gap=runs["test_loss"] - runs["train_loss"], acc_gap=runs["train_acc"] - runs["test_acc"])


def by_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max over seeds of every metric, one row per parameter count (columns: metric, statistic)."""
    return runs.groupby("parameters")[list(METRICS)].agg(["mean", "min", "max"])


def fitting_size(runs: pd.DataFrame, fit_accuracy: float) -> int | None:
    """The smallest parameter count from which every model, every seed, has training accuracy >= fit_accuracy.

    None when the largest size does not fit (then no size does, in this sense).
    """
    if not 0 < fit_accuracy <= 1:
        raise ValueError(f"fit_accuracy is a training accuracy in (0, 1], got {fit_accuracy}")
    fits = runs.groupby("parameters")["train_acc"].min() >= fit_accuracy
    if not fits.iloc[-1]:
        return None
    unfit = fits.index[~fits.to_numpy()]
    return int(fits.index[0] if unfit.empty else fits.index[fits.index > unfit[-1]][0])


def regime_runs(runs: pd.DataFrame, fitting: int | None) -> dict[str, pd.DataFrame]:
    """The runs of each of REGIMES: all, the sizes below `fitting` and the sizes from it on (None: nothing fits)."""
    below = runs if fitting is None else runs[runs["parameters"] < fitting]
    return {REGIMES[0]: runs, REGIMES[1]: below, REGIMES[2]: runs.drop(below.index)}


def trends(runs: pd.DataFrame, metrics: Sequence[str], fitting: int | None, resamples: int, seed: int,
           level: float = 0.95) -> pd.DataFrame:
    """Spearman rho of each metric with the parameter count in each regime, with a bootstrap interval over runs.

    Rows (metric, regime) hold sizes, rho, low and high; a regime with fewer than 3 sizes gets NaN.
    Ranks do not change under log, so this is also the correlation with log parameters.
    """
    rows = []
    for metric in metrics:
        for regime, part in regime_runs(runs, fitting).items():
            sizes = part["parameters"].nunique()
            trend = (uncertainty.rank_correlation(part["parameters"].to_numpy(float), part[metric].to_numpy(),
                                                  resamples, seed, level)
                     if sizes >= 3 else dict.fromkeys(("rho", "low", "high"), math.nan))
            rows.append({"metric": metric, "regime": regime, "sizes": sizes, **trend})
    return pd.DataFrame(rows).set_index(["metric", "regime"])
