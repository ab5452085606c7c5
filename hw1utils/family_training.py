"""Equal-size model families trained for one epoch budget on an image task (HW1-1b): runs, finals, paired tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import torch

from . import config, data, uncertainty
from .deep_shallow import Architecture, best_lr, search_lr
from .interpolation import per_example_scores
from .train import CONV_EVAL_BATCH, Ensemble, fit_ensemble

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")  # final values kept per seed
SEARCH_SUMMARY = ["best", "common", "common / best"]  # `search_table`'s columns after the one per searched rate


@dataclass
class TaskRuns:
    """Every model of every family trained on one data set with the same budget."""

    task: str  # the data set's title, e.g. "MNIST"
    dataset: data.ImageDataset
    epochs: int  # passes over the training set, the same for every model
    steps: int  # optimiser steps every model took
    ensembles: dict[str, dict[str, Ensemble]]  # family -> model name -> its seeds, trained together

    def finals(self, metric: str) -> dict[tuple[str, str], np.ndarray]:
        """(family, model) -> the final value of `metric` of each seed."""
        return {(family, name): np.array([h.final()[metric] for h in ensemble.histories])
                for family, models in self.ensembles.items() for name, ensemble in models.items()}


def dnn_target(input_shape: Sequence[int], target: int, n_classes: int = 10) -> int:
    """The parameter count of the 1-hidden-layer MLP nearest `target` on this input shape.

    A 1-hidden MLP's count moves in steps of (inputs + classes + 1), 3,083 on CIFAR-10's 3x32x32, more
    than 1% of a small target; a DNN family has to sit on one of those steps to include that member.
    """
    n_in = math.prod(input_shape)
    width = max(1, round((target - n_classes) / (n_in + n_classes + 1)))
    return width * (n_in + n_classes + 1) + n_classes


TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def is_synthetic(dataset: data.ImageDataset) -> bool:
    """True for the CIFAR-shaped stand-in that `data.write_cifar_like` writes."""
    return dataset.source.startswith(data.SYNTHETIC_CIFAR)


def task_title(dataset: data.ImageDataset) -> str:
    """The data set's name for titles and tables ("CIFAR-shaped (synthetic)" for the stand-in)."""
    return "CIFAR-shaped (synthetic)" if is_synthetic(dataset) else TITLES[dataset.name.split("+")[0]]


def second_task(download: bool = True) -> tuple[data.ImageDataset, str]:
    """CIFAR-10 when its files are present (or downloadable), else full Fashion-MNIST; and one line saying which."""
    try:
        cifar = data.load_dataset("cifar10", download=download)
        if is_synthetic(cifar):
            return cifar, ("The CIFAR-10 folder holds synthetic CIFAR-shaped data (hw1utils.data.write_cifar_like), "
                           "so the second task is that stand-in, not CIFAR-10.")
        return cifar, "CIFAR-10 was found, so the second task is CIFAR-10."
    except FileNotFoundError:
        folder = config.shown_path(config.data_dir() / "cifar-10-batches-py")
        tried = f"no files in {folder}" + (" and no download" if download else "")
    return data.load_dataset("fashion-mnist"), (f"CIFAR-10 is not available here ({tried}), so the second task "
                                                "is the full Fashion-MNIST.")


def search_rates(dataset: data.ImageDataset, families: Mapping[str, Sequence[Architecture]], *, lrs: Sequence[float],
                 seeds: Sequence[int], search_train: int, held_out: int, epochs: int, batch_size: int,
                 lr_schedule: str, device: torch.device, per_decade: int = 2, max_extensions: int = 2,
                 cache: str | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """Family -> model -> its learning-rate search (`deep_shallow.search_lr`), scored on held-out training images.

    Every rate trains `seeds` on the first `search_train` training images for `epochs` (the reported runs' batch
    size and schedule) and is scored by its loss, at the end, on the last `held_out` training images, which no
    search run trains on; the grid grows until the chosen rate lies inside it. The test set takes no part.
    """
    x, y, _, _ = dataset.float_tensors(device)
    if search_train < 1 or held_out < 1 or search_train + held_out > len(y):
        raise ValueError(f"search_train ({search_train}) and held_out ({held_out}) must be positive and together at "
                         f"most the {len(y):,} training images, so that no search run trains on its scoring images")
    split = (x[:search_train], y[:search_train], x[-held_out:], y[-held_out:])
    return {family: {a.name: search_lr(
        a.build, split, lrs=lrs, seeds=seeds, epochs=epochs, per_decade=per_decade, max_extensions=max_extensions,
        key="test_loss", batch_size=batch_size, lr_schedule=lr_schedule, eval_every=epochs,
        eval_train_examples=held_out, device=device, cache=cache and f"{cache}-{family}-{a.name}".replace(" ", "_"))
        for a in archs} for family, archs in families.items()}


def _family_rate(models: Mapping[str, pd.DataFrame]) -> float:
    """The rate of one family's searches whose held-out loss, over the family's models, is at most the fewest times
    each model's best (a rate not searched for a model counts as infinitely far); ties go to the smaller rate."""
    losses = pd.DataFrame({model: table["median"] for model, table in models.items()})
    worst = (losses / losses.min()).max(axis=1, skipna=False).fillna(np.inf)
    return float(worst.idxmin())


def common_rates(searches: Mapping[str, Mapping[str, pd.DataFrame]]) -> dict[str, dict[str, float]]:
    """Family -> model -> the family's one rate (`_family_rate`): `search_rates`'s result in, `train_families`'s out.

    One rate per family keeps depth the only thing that changes inside it; it is the rate nearest every depth's
    best in the worst case, so a rate at which one depth fails is not chosen for the others.
    """
    return {family: dict.fromkeys(models, _family_rate(models)) for family, models in searches.items()}


def search_table(searches: Mapping[str, Mapping[str, Mapping[str, pd.DataFrame]]]) -> pd.DataFrame:
    """Per (task, family, model): the held-out loss at every rate searched (nan: not searched), the model's own best
    rate, its family's common rate (`common_rates`) and the held-out loss there in multiples of the model's best."""
    rows = {}
    for task, per_family in searches.items():
        for family, models in per_family.items():
            common = _family_rate(models)
            for model, table in models.items():
                rows[(task, family, model)] = {**{f"{lr:g}": loss for lr, loss in table["median"].items()},
                                               "best": best_lr(table), "common": common,
                                               "common / best": table["median"][common] / table["median"].min()}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(["task", "family", "model"])
    rates = sorted((c for c in table.columns if c not in SEARCH_SUMMARY), key=float)
    return table[[*rates, *SEARCH_SUMMARY]]


def rate_trade_offs(search: pd.DataFrame) -> pd.DataFrame:
    """The `search_table` rows whose own best rate is not their family's, with what that best rate does to the
    family: the highest held-out loss it gives a model, and whether it is worse than the family's rate for one."""
    losses = search.drop(columns=SEARCH_SUMMARY).sort_index()  # sorted: fast, warning-free .loc
    rows = {}
    for (task, family, model), row in search[search["best"] != search["common"]].iterrows():
        at_best, at_common = (losses.loc[(task, family), f"{row[rate]:g}"] for rate in ("best", "common"))
        rows[(task, family, model)] = {"best": row["best"], "common": row["common"], "worst at best": at_best.max(),
                                       "worse for another": bool((at_best > at_common).any())}
    index = pd.MultiIndex.from_tuples(list(rows), names=["task", "family", "model"])
    columns = ["best", "common", "worst at best", "worse for another"]
    return pd.DataFrame(list(rows.values()), index=index, columns=columns)


def train_families(task: str, dataset: data.ImageDataset, families: Mapping[str, Sequence[Architecture]], *,
                   epochs: int, batch_size: int, lrs: Mapping[str, Mapping[str, float]], seeds: Sequence[int],
                   lr_schedule: str = "constant", eval_train_examples: int | None = None, device: torch.device,
                   cache: str | None = None) -> TaskRuns:
    """Train every model of `families` on `dataset` for the same `epochs` (Adam, mini-batches of `batch_size`).

    Model `name` of `family` trains at learning rate lrs[family][name] under `lr_schedule`. The seeds of one
    model train together (one `fit_ensemble`); every step's mini-batch loss is recorded, and loss and accuracy
    on the whole test set and on the first `eval_train_examples` training images (None: all of them) are
    measured after every epoch. `cache` prefixes the cache entry names.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    missing = [f"{family} {a.name}" for family, archs in families.items() for a in archs
               if a.name not in lrs.get(family, {})]
    if missing:
        raise ValueError(f"no learning rate for {', '.join(missing)}; give lrs[family][model] for every model")
    tensors = dataset.float_tensors(device)
    ensembles = {family: {a.name: fit_ensemble(
        a.build, seeds, tensors, epochs=epochs, lr=lrs[family][a.name], batch_size=batch_size,
        lr_schedule=lr_schedule, eval_every=1, record_steps=True, eval_train_examples=eval_train_examples,
        device=device, cache=cache and f"{cache}-{task}-{family}-{a.name}".replace(" ", "_")) for a in archs}
        for family, archs in families.items()}
    return TaskRuns(task, dataset, epochs, epochs * math.ceil(len(dataset.y_train) / batch_size), ensembles)


def final_table(runs: Sequence[TaskRuns]) -> pd.DataFrame:
    """Per (task, family, model): mean over seeds of the final metrics, and the test accuracy's seed range."""
    rows = {}
    for run in runs:
        finals = {metric: run.finals(metric) for metric in METRICS}
        for key in finals["train_loss"]:
            means = {metric.replace("_", " "): float(finals[metric][key].mean()) for metric in METRICS}
            rows[(run.task, *key)] = {**means, "test acc min": float(finals["test_acc"][key].min()),
                                      "test acc max": float(finals["test_acc"][key].max())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["task", "family", "model"])


def _verdict(test: dict[str, float], deeper: str, shallower: str, alpha: float) -> str:
    """Which model McNemar's test puts ahead at level `alpha`, or "not separated"."""
    if test["p_value"] >= alpha:
        return "not separated"
    return f"{deeper} ahead" if test["difference"] > 0 else f"{shallower} ahead"


def _pair_row(deeper_scores: dict, shallower_scores: dict, deeper: str, shallower: str, resamples: int, seed: int,
              alpha: float) -> dict[str, float | str]:
    """One seed pair's table row: test and training accuracy (McNemar, paired bootstrap), training loss."""
    test = uncertainty.paired_comparison(deeper_scores["test"]["correct"], shallower_scores["test"]["correct"],
                                         resamples, seed)
    train = uncertainty.paired_comparison(deeper_scores["train"]["correct"], shallower_scores["train"]["correct"],
                                          resamples, seed, deeper_scores["train"]["loss"],
                                          shallower_scores["train"]["loss"])
    return {"test acc diff": test["difference"], "test low": test["difference_low"],
            "test high": test["difference_high"], "test p": test["p_value"],
            "test verdict": _verdict(test, deeper, shallower, alpha),
            "train acc diff": train["difference"], "train p": train["p_value"],
            "train verdict": _verdict(train, deeper, shallower, alpha),
            "train loss diff": train["loss_difference"], "train loss low": train["loss_difference_low"],
            "train loss high": train["loss_difference_high"]}


def paired_depth_tests(run: TaskRuns, eval_train_examples: int | None, resamples: int, seed: int,
                       alpha: float = 0.01) -> pd.DataFrame:
    """Every deeper-vs-shallower pair of each family, seed by seed, on the same images (McNemar, paired bootstrap).

    Seed k of one model is compared with seed k of the other on the whole test set and on the first
    `eval_train_examples` training images (the ones the training curves use): accuracy difference
    (deeper - shallower) with its paired-bootstrap interval and McNemar p-value, and the training
    images' mean loss difference with its interval. The verdict names the model ahead where p < `alpha`.
    """
    x_train, y_train, x_test, y_test = run.dataset.float_tensors(torch.device("cpu"))
    images = {"test": (x_test, y_test), "train": (x_train[:eval_train_examples], y_train[:eval_train_examples])}
    rows = {}
    for family, models in run.ensembles.items():
        scores = {(name, k): {part: per_example_scores(ensemble.model(k), *xy, batch_size=CONV_EVAL_BATCH)
                              for part, xy in images.items()}
                  for name, ensemble in models.items() for k in range(len(ensemble))}
        for shallower, deeper in combinations(models, 2):
            for k, member_seed in enumerate(models[deeper].seeds):
                rows[(run.task, family, f"{deeper} vs {shallower}", member_seed)] = _pair_row(
                    scores[deeper, k], scores[shallower, k], deeper, shallower, resamples, seed, alpha)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["task", "family", "pair", "seed"])
