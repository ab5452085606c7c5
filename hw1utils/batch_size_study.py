"""Models that differ only in their batch size, each trained to the same training-loss target (1-3d).

Every (batch size, seed) model is stopped at the first check where its loss on the whole training set
is at most `target`, so that models are compared at the same training loss rather than after the same
number of steps or epochs (which would leave the small batches far further along). The seeds of one
batch size train together (`train.fit_ensemble`); an epoch budget only bounds the cost, and a model
that has not reached the target within it is an error, not a silent under-trained row.
Then every model is measured by functions of the model (`measure_models`), and every measure is
related to the batch size and the generalisation gap by rank correlations with bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import train, uncertainty
from .weight_vector import flat_params, set_flat_params


def check_batch_sizes(batch_sizes: Sequence[int], n_train: int) -> list[int]:
    """The batch sizes as a list, checked: increasing positive integers, none larger than the training set.

    A batch size equal to n_train is full batch (one step per epoch on all the data).
    """
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be positive integers, got {sizes!r}")
    if sizes != sorted(set(sizes)):
        raise ValueError(f"batch sizes must be strictly increasing, got {sizes}")
    if sizes[-1] > n_train:
        raise ValueError(f"batch size {sizes[-1]} is larger than the {n_train:,} training images; the largest "
                         f"possible is {n_train:,} (full batch): drop the larger ones or train on more images")
    return sizes


def steps_per_epoch(batch_size: int, n_train: int) -> int:
    """Optimiser steps in one pass over n_train examples (the last batch may be smaller)."""
    return math.ceil(n_train / batch_size)


def step_budget(batch_size: int, smallest: int, steps_at_smallest: int, floor: int) -> int:
    """The cap on a model's steps: steps_at_smallest * sqrt(smallest / batch_size), at least `floor`."""
    return max(floor, math.ceil(steps_at_smallest * math.sqrt(smallest / batch_size)))


def check_every(batch_size: int, n_train: int, check_steps: int) -> int:
    """Epochs between two checks of the training loss: about `check_steps` steps, at least one epoch."""
    return max(1, check_steps // steps_per_epoch(batch_size, n_train))


def first_crossing_hook(target: float, members: int, x: Tensor, y: Tensor) -> train.EpochHook:
    """An on_epoch hook that returns a member's weights once, at its first check with training loss <= target.

    fit_ensemble calls the hook for members 0..K-1 in turn at every check, which is how a call is
    matched to its member. Returns {"stop_epoch", "stop_weights"} at the crossing, {} otherwise.
    """
    crossed: set[int] = set()
    calls = [0]

    def record_first_crossing(epoch: int, model: nn.Module) -> dict:
        """The weights of this member at its first check below the target."""
        member = calls[0] % members
        calls[0] += 1
        if member in crossed or train.evaluate(model, x, y)[0] > target:
            return {}
        crossed.add(member)
        return {"stop_epoch": epoch, "stop_weights": flat_params(model).detach().cpu().clone()}

    return record_first_crossing


def train_to_target(build: Callable[[], nn.Module], batch_sizes: Sequence[int], seeds: Sequence[int],
                    x: Tensor, y: Tensor, *, target: float, lr: float, steps_at_smallest: int, step_floor: int,
                    check_steps: int, device: torch.device | None = None,
                    cache: str | None = None) -> tuple[pd.DataFrame, dict[tuple[int, int], nn.Module]]:
    """Train build() with Adam (lr) for every batch size and seed until its training loss is <= target.

    Returns one row per model (batch_size, seed, epochs and steps to the target, the budget) and the
    models at their stopping points, keyed by (batch_size, seed). RuntimeError if a model misses the
    target within its budget (`step_budget`).
    """
    sizes = check_batch_sizes(batch_sizes, len(x))
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"the training-loss target must be positive and finite, got {target}")
    rows, trained = [], {}
    for batch_size in sizes:
        per_epoch = steps_per_epoch(batch_size, len(x))
        budget = math.ceil(step_budget(batch_size, sizes[0], steps_at_smallest, step_floor) / per_epoch)
        ensemble = train.fit_ensemble(build, seeds, (x, y), epochs=budget, lr=lr, batch_size=batch_size,
                                      eval_every=check_every(batch_size, len(x), check_steps),
                                      on_epoch=first_crossing_hook(target, len(seeds), x, y), progress=False,
                                      device=device, cache=cache and f"{cache}-b{batch_size}")
        for seed, history in zip(seeds, ensemble.histories):
            if "stop_epoch" not in history.extra:
                raise RuntimeError(f"batch size {batch_size}, seed {seed}: the training loss stayed above {target:g} "
                                   f"for all {budget} epochs ({budget * per_epoch:,} steps); raise the step budget")
            model = ensemble.model(0)
            set_flat_params(model, history.extra["stop_weights"][0])
            trained[batch_size, seed] = model
            epochs = history.extra["stop_epoch"][0]
            rows.append({"batch_size": batch_size, "seed": seed, "epochs": epochs, "steps": epochs * per_epoch,
                         "budget_steps": budget * per_epoch,
                         "check_steps": check_every(batch_size, len(x), check_steps) * per_epoch})
    return pd.DataFrame(rows), trained


def generalisation(model: nn.Module, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, float]:
    """Training and test cross-entropy and accuracy, and the gaps (test - train loss, train - test accuracy)."""
    (train_loss, train_acc), (test_loss, test_acc) = train.evaluate(model, x, y), train.evaluate(model, x_test, y_test)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "loss_gap": test_loss - train_loss, "acc_gap": train_acc - test_acc}


def measure_models(models: Mapping[tuple[int, int], nn.Module],
                   measure: Callable[[nn.Module], Mapping[str, float]]) -> pd.DataFrame:
    """One row per model: batch_size, seed and the values `measure(model)` returns."""
    return pd.DataFrame([{"batch_size": b, "seed": s, **measure(model)} for (b, s), model in models.items()])


def by_batch_size(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean, min and max over seeds of each column, one row per batch size (columns: column, statistic)."""
    return runs.groupby("batch_size")[list(columns)].agg(["mean", "min", "max"])


def correlations(runs: pd.DataFrame, measures: Mapping[str, str], against: Mapping[str, str], resamples: int,
                 seed: int) -> pd.DataFrame:
    """Spearman rho of every measure with every column of `against`, 95% bootstrap interval over models.

    Rows are indexed by (measure label, against label); `claim` is True where the interval excludes zero.
    """
    rows = {}
    for column, label in measures.items():
        for other, other_label in against.items():
            result = uncertainty.rank_correlation(runs[column].to_numpy(float), runs[other].to_numpy(float),
                                                  resamples, seed)
            rows[label, other_label] = {**result, "claim": bool(result["low"] > 0 or result["high"] < 0)}
    return pd.DataFrame(rows).T.rename_axis(["measure", "against"])


def correctness(model: nn.Module, x: Tensor, y: Tensor) -> np.ndarray:
    """Boolean per-example correctness of the model's arg-max prediction on (x, y)."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).cpu().numpy()


def training_lengths(runs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the steps to the target (range), mean epochs, check interval, budget and final training loss."""
    return runs.groupby("batch_size").agg(
        steps_min=("steps", "min"), steps_max=("steps", "max"), epochs_mean=("epochs", "mean"),
        check_steps=("check_steps", "first"), budget_steps=("budget_steps", "first"),
        train_loss_min=("train_loss", "min"), train_loss_max=("train_loss", "max")).reset_index()


def paired_accuracy(correct: Mapping[tuple[int, int], np.ndarray], batch_a: int, batch_b: int, seeds: Sequence[int],
                    resamples: int, seed: int) -> pd.DataFrame:
    """Per seed: McNemar's test and a paired bootstrap interval of accuracy(batch_a) - accuracy(batch_b).

    `correct` maps (batch size, seed) to the per-test-image correctness; rows are indexed by seed.
    """
    rows = {}
    for s in seeds:
        a, b = correct[batch_a, s], correct[batch_b, s]
        interval = uncertainty.paired_bootstrap_difference(a, b, resamples, seed)
        rows[s] = {**uncertainty.mcnemar(a, b), "bootstrap_low": interval["low"], "bootstrap_high": interval["high"]}
    return pd.DataFrame(rows).T.rename_axis("seed").astype({"b": int, "c": int, "n": int})
