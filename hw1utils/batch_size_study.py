"""Models that differ only in their batch size, each trained to the same training-loss target (1-3d; 1-3c
trains its three recipes with the same rule, `train_to_target`).

Every (batch size, seed) model is stopped at the first check where its loss on the whole training set
is at most `target`, so that models are compared at the same training loss rather than after the same
number of steps or epochs (which would leave the small batches far further along). The seeds of one
batch size train together (`train.fit_ensemble`) until all of them have reached it, each keeping the
weights of its own first crossing (snapshots at the checks); an epoch budget only bounds the cost, and a model
that has not reached the target within it is an error, not a silent under-trained row.
Then every model is measured by functions of the model (`measure_models`), and every measure is
related to the batch size and the generalisation gap by rank correlations with bootstrap intervals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import input_sensitivity, sharpness, train, uncertainty
from .interpolation import per_example_scores
from .weight_vector import flat_params, set_flat_params

GAPS = {"loss_gap": "loss gap (test - train)", "acc_gap": "accuracy gap (train - test)"}  # column -> label
BATCH = {"batch_size": "batch size"}
TRENDS = {"test_loss": "test loss", "test_acc": "test accuracy", **GAPS}
SENSITIVITY = {"jacobian": "Jacobian sensitivity (test)", "grad_train": "loss-gradient sensitivity (train)"}
CIRCULAR = {"grad_test": "loss-gradient sensitivity (test)"}  # holds the test residual: shown, never a predictor
FLATNESS = {"pacbayes_flatness": "PAC-Bayes flatness 1/sigma'^2", "param_norm": "parameter norm"}
TRAINING_PANELS = [("optimiser steps to the target", {"steps": "steps"}, True),  # plots.batch_size_panels specs
                   ("epochs to the target", {"epochs": "epochs"}, True),
                   ("training loss at the stop", {"train_loss": "training loss"}, False)]
GENERALISATION_PANELS = [("cross-entropy", {"train_loss": "train", "test_loss": "test"}, True),
                         ("accuracy", {"train_acc": "train", "test_acc": "test"}, False),
                         ("test - train loss", {"loss_gap": "loss gap"}, False),
                         ("train - test accuracy", {"acc_gap": "accuracy gap"}, False)]
SENSITIVITY_PANELS = [(label, {column: label}, True) for column, label in {**SENSITIVITY, **CIRCULAR}.items()]


def sharpness_labels(keskar_eps: Sequence[float], course_eps: float) -> dict[str, str]:
    """Column -> label of every sharpness value `sharpness_measures` returns, the first-order term aside."""
    return {**{f"keskar_{eps:.0e}": f"Keskar sharpness, eps {eps:.0e} (x100)" for eps in keskar_eps},
            "course_estimate": f"course's estimate, eps {course_eps:.0e}",
            "course_ascent": f"course's projected ascent, eps {course_eps:.0e}"}


def sharpness_panels(keskar_eps: Sequence[float], course_eps: float) -> list[tuple[str, dict[str, str], bool]]:
    """plots.batch_size_panels specs: Keskar's at each eps; the course's estimate, ascent and first-order term."""
    return [("Keskar sharpness (x100)", {f"keskar_{eps:.0e}": f"eps {eps:.0e}" for eps in keskar_eps}, True),
            (f"course's sharpness, eps {course_eps:g}", {"course_estimate": "Hessian estimate",
                                                        "course_ascent": "projected ascent",
                                                        "course_first_order": "first-order term"}, True)]


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


def first_crossing(history: train.History, target: float) -> int | None:
    """The first evaluated epoch whose whole-training-set loss is at most `target` (None: never)."""
    return next((epoch for epoch, loss in zip(history.epoch, history.train_loss) if loss <= target), None)


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
        per_epoch, every = steps_per_epoch(batch_size, len(x)), check_every(batch_size, len(x), check_steps)
        budget = math.ceil(step_budget(batch_size, sizes[0], steps_at_smallest, step_floor) / per_epoch)
        ensemble = train.fit_ensemble(build, seeds, (x, y), epochs=budget, lr=lr, batch_size=batch_size,
                                      eval_every=every, snapshot_every=every, target_loss=target, progress=False,
                                      device=device, cache=cache and f"{cache}-b{batch_size}")
        for k, (seed, history) in enumerate(zip(seeds, ensemble.histories)):
            epochs = first_crossing(history, target)
            if epochs is None:
                raise RuntimeError(f"batch size {batch_size}, seed {seed}: the training loss stayed above {target:g} "
                                   f"for all {budget} epochs ({budget * per_epoch:,} steps); raise the step budget")
            model = ensemble.model(k)
            if epochs in history.snapshots:  # else the crossing is the last epoch, the model's final weights
                set_flat_params(model, history.snapshots[epochs])
            trained[batch_size, seed] = model
            rows.append({"batch_size": batch_size, "seed": seed, "epochs": epochs, "steps": epochs * per_epoch,
                         "budget_steps": budget * per_epoch, "check_steps": every * per_epoch})
    return pd.DataFrame(rows), trained


def generalisation(model: nn.Module, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, float]:
    """Training and test cross-entropy and accuracy, and the gaps (test - train loss, train - test accuracy)."""
    (train_loss, train_acc), (test_loss, test_acc) = train.evaluate(model, x, y), train.evaluate(model, x_test, y_test)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "loss_gap": test_loss - train_loss, "acc_gap": train_acc - test_acc}


def sensitivities(model: nn.Module, x_jacobian: Tensor, train_set: tuple[Tensor, Tensor],
                  test_set: tuple[Tensor, Tensor]) -> dict[str, float]:
    """Novak et al.'s Jacobian norm on x_jacobian; the course's loss-gradient norm on the training and test sets."""
    return {"jacobian": input_sensitivity.jacobian_sensitivity(model, x_jacobian),
            "grad_train": input_sensitivity.sensitivity(model, *train_set),
            "grad_test": input_sensitivity.sensitivity(model, *test_set)}


def sharpness_measures(model: nn.Module, x: Tensor, y: Tensor, keskar_eps: Sequence[float], course_eps: float,
                       ascent_steps: int, seed: int = 0) -> dict[str, float]:
    """Keskar's sharpness at each eps (x100), and the course's lambda_max, Hessian estimate and ascent (float64).

    `seed` draws Keskar's random starts and the course's power-iteration and ascent starts."""
    model64, cross_entropy = copy.deepcopy(model).double(), nn.CrossEntropyLoss()
    keskar = {f"keskar_{eps:.0e}": sharpness.keskar_sharpness(model64, cross_entropy, x, y, eps, seed=seed)["sharpness"]
              for eps in keskar_eps}
    course = sharpness.sharpness(model64, cross_entropy, x, y, eps=course_eps, ascent_steps=ascent_steps, seed=seed)
    return {**keskar, "lambda_max": course["lambda_max"], "course_estimate": course["estimate"],
            "course_first_order": course["first_order"], "course_ascent": course["ascent"]}


def flatness_measures(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> dict[str, float]:
    """PAC-Bayes magnitude-aware flatness of the training error (Jiang et al.; noise seeded by `seed`), and the norm."""
    result = sharpness.pacbayes_mag_flatness(model, sharpness.error_rate, x, y, seed=seed)
    return {"pacbayes_flatness": result["flatness"], "pacbayes_bracketed": result["bracketed"],
            "param_norm": flat_params(model).norm().item()}


def measure_models(models: Mapping[tuple[int, int], nn.Module],
                   measure: Callable[[nn.Module], Mapping[str, float]]) -> pd.DataFrame:
    """One row per model: batch_size, seed and the values `measure(model)` returns."""
    return pd.DataFrame([{"batch_size": b, "seed": s, **measure(model)} for (b, s), model in models.items()])


def by_batch_size(runs: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, min and max over seeds of each column (default: every measure), one row per batch size."""
    columns = [c for c in runs if c not in ("batch_size", "seed")] if columns is None else list(columns)
    return runs.groupby("batch_size")[columns].agg(["mean", "min", "max"])


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
    table = pd.DataFrame.from_dict(rows, orient="index")  # per-column dtypes: rho, low, high stay floats
    return table.rename_axis(["measure", "against"])


def within_batch_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Every measure as its rank over all models minus the mean rank at its batch size (batch_size kept as is).

    A rank correlation of these residuals credits a measure only with what it tells about a model beyond
    its batch size (a stratified rank correlation)."""
    ranks = runs.select_dtypes("number").drop(columns=["batch_size", "seed"]).rank()
    return ranks.sub(ranks.groupby(runs["batch_size"]).transform("mean")).assign(batch_size=runs["batch_size"])


def resolved(table: pd.DataFrame, measure: str, against: str, sign: int = 0) -> bool:
    """Whether a `correlations` row's interval excludes zero (and, with sign +1 or -1, rho has that sign)."""
    row = table.loc[measure, against]
    return bool(row["claim"]) and (sign == 0 or np.sign(row["rho"]) == sign)


def rho(table: pd.DataFrame, measure: str, against: str) -> float:
    """The rank correlation of one `correlations` row."""
    return float(table.loc[(measure, against), "rho"])


def check_runs(runs: pd.DataFrame, target: float) -> None:
    """AssertionError unless every model reached the target within its budget and every measure is finite."""
    assert runs["train_loss"].le(target).all(), "a model stopped above the training-loss target"
    assert (runs["steps"] <= runs["budget_steps"]).all(), "a model trained past its step budget"
    assert np.isfinite(runs.select_dtypes("number").to_numpy(float)).all(), "a measure is not finite"
    assert runs["pacbayes_bracketed"].all(), "a PAC-Bayes bisection did not bracket its noise scale"


def results_record(runs: pd.DataFrame, correlation_tables: Mapping[str, pd.DataFrame]) -> dict:
    """results.json's part for the models: every run, training lengths, means per batch size, correlations."""
    means = runs.groupby("batch_size").mean(numeric_only=True).drop(columns="seed")
    return {"runs": runs.drop(columns="pacbayes_bracketed").to_dict(orient="records"),
            "length": training_lengths(runs).to_dict(orient="records"),
            "by_batch_size": {str(b): row for b, row in means.to_dict(orient="index").items()},
            "correlations": {name: {f"{m} vs {a}": row for (m, a), row in table.to_dict(orient="index").items()}
                             for name, table in correlation_tables.items()}}


def training_lengths(runs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the steps to the target (range), mean epochs, check interval, budget and final training loss."""
    return runs.groupby("batch_size").agg(
        steps_min=("steps", "min"), steps_max=("steps", "max"), epochs_mean=("epochs", "mean"),
        check_steps=("check_steps", "first"), budget_steps=("budget_steps", "first"),
        train_loss_min=("train_loss", "min"), train_loss_max=("train_loss", "max")).reset_index()


def paired_accuracy(models: Mapping[tuple[int, int], nn.Module], x_test: Tensor, y_test: Tensor, batch_a: int,
                    batch_b: int, seeds: Sequence[int], resamples: int, seed: int) -> pd.DataFrame:
    """Per seed: McNemar's test and a paired bootstrap interval of accuracy(batch_a) - accuracy(batch_b).

    `models` maps (batch size, seed) to a trained model; both are scored on the same test images, and
    rows are indexed by seed.
    """
    correct = {key: per_example_scores(models[key], x_test, y_test)["correct"]
               for key in ((b, s) for b in (batch_a, batch_b) for s in seeds)}
    rows = {s: uncertainty.paired_comparison(correct[batch_a, s], correct[batch_b, s], resamples, seed) for s in seeds}
    return pd.DataFrame(rows).T.rename_axis("seed").astype({"b": int, "c": int, "n": int})
