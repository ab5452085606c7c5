"""Fitting random and partly corrupted labels (1-3a): label corruption, epochs to memorise and their growth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .data import ImageDataset, random_labels
from .train import History

CHOICE_STREAM = 1  # second entry of the NumPy seed that picks which labels are corrupted (the classes come from torch)


def check_sizes(sizes: Sequence[int], section_size: int) -> None:
    """ValueError unless `sizes` are distinct, ascending and include `section_size` (1-3a's SIZES, SECTION_1_SIZE)."""
    if list(sizes) != sorted(set(sizes)) or section_size not in sizes:
        raise ValueError(f"SIZES must be distinct, ascending and include SECTION_1_SIZE; got {tuple(sizes)} and "
                         f"{section_size}")


def first_images(dataset: ImageDataset, n: int) -> ImageDataset:
    """The first `n` training images and their labels (test split kept); ValueError if there are fewer."""
    if not 0 < n <= len(dataset.y_train):
        raise ValueError(f"asked for the first {n} training images of {len(dataset.y_train)}; "
                         "choose a size between 1 and the training set's size")
    if n == len(dataset.y_train):
        return dataset
    return replace(dataset, x_train=dataset.x_train[:n], y_train=dataset.y_train[:n], is_subset=True,
                   source=f"{dataset.source}; its first {n:,} training images")


def corrupt_labels(dataset: ImageDataset, fraction: float, seed: int) -> ImageDataset:
    """A copy in which each training label is, with probability `fraction`, replaced by a uniform random class.

    Zhang et al. (2017)'s corruption: a replaced label may by chance equal the true one, and fraction 1 gives
    exactly `data.random_labels(dataset, seed)`. The replacement classes and the uniform draws deciding which
    labels are replaced are the same for every fraction, so a higher fraction corrupts a superset of the labels.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (the share of labels redrawn); got {fraction!r}")
    replacement = random_labels(dataset, seed).y_train
    draws = np.random.default_rng([seed, CHOICE_STREAM]).random(len(dataset.y_train))
    chosen = torch.from_numpy(draws < fraction).to(dataset.y_train.device)
    labels = torch.where(chosen, replacement, dataset.y_train)
    note = f"; each training label redrawn uniformly with probability {fraction:g} (seed {seed}), test labels kept"
    return replace(dataset, y_train=labels, source=dataset.source + note)


def first_epoch_at(history: History, threshold: float) -> int | None:
    """The first evaluated epoch whose training accuracy is at least `threshold`, or None when none is."""
    return next((epoch for epoch, acc in zip(history.epoch, history.train_acc) if acc >= threshold), None)


def fit_summary(histories: Sequence[History], threshold: float) -> dict[str, float]:
    """Numbers of one label condition over its seeds: when they first reach `threshold`, where they end, dips after."""
    firsts = [first_epoch_at(h, threshold) for h in histories]
    reached = [f for f in firsts if f is not None]
    after = [min(a for e, a in zip(h.epoch, h.train_acc) if e >= f) for h, f in zip(histories, firsts) if f is not None]
    return {"seeds_memorised": len(reached), "first_epoch_min": min(reached, default=np.nan),
            "first_epoch_max": max(reached, default=np.nan), "lowest_after": min(after, default=np.nan),
            "final_train_acc_min": min(h.train_acc[-1] for h in histories),
            "final_train_loss_max": max(h.train_loss[-1] for h in histories),
            "final_test_acc_mean": float(np.mean([h.test_acc[-1] for h in histories])),
            "test_loss_start": float(np.mean([h.test_loss[0] for h in histories])),
            "test_loss_min": float(np.mean([min(h.test_loss) for h in histories])),
            "test_loss_end": float(np.mean([h.test_loss[-1] for h in histories]))}


def epochs_table(epochs_by_size: Mapping[int, Sequence[int | None]], seeds: Sequence[int],
                 batch_size: int) -> pd.DataFrame:
    """One row per (training-set size, seed): epochs, steps and examples seen until memorised (NaN: never)."""
    rows = []
    for n, epochs in epochs_by_size.items():
        for seed, epoch in zip(seeds, epochs):
            value = np.nan if epoch is None else float(epoch)
            rows.append({"n_train": n, "seed": seed, "epochs": value, "steps": value * -(-n // batch_size),
                         "examples_seen": value * n})
    return pd.DataFrame(rows)


def _slope(sizes: np.ndarray, epochs: np.ndarray) -> float:
    """Least-squares slope of log(epochs) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(epochs), 1)[0])


def _exponents(sizes: np.ndarray, epochs: np.ndarray) -> list[float]:
    """Exponent b of epochs ~ n^b fitted to all sizes, then between each pair of neighbouring sizes."""
    return [_slope(sizes, epochs), *(np.diff(np.log(epochs)) / np.diff(np.log(sizes)))]


def _power_law_at(sizes: np.ndarray, epochs: np.ndarray, n: float) -> float:
    """Epochs at size n from the least-squares line of log(epochs) against log(size)."""
    slope, intercept = np.polyfit(np.log(sizes), np.log(epochs), 1)
    return float(np.exp(intercept + slope * np.log(n)))


def _size_means(table: pd.DataFrame, bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(sizes, per-size mean epochs, (bootstrap, sizes) means of seeds resampled within each size).

    None when fewer than two sizes or some run did not memorise.
    """
    sizes = np.array(sorted(table["n_train"].unique()))
    per_size = [table.loc[table["n_train"] == n, "epochs"].to_numpy() for n in sizes]
    if len(sizes) < 2 or any(np.isnan(values).any() for values in per_size):
        return None
    rng = np.random.default_rng(seed)
    resampled = np.array([[rng.choice(values, len(values)).mean() for values in per_size] for _ in range(bootstrap)])
    return sizes, np.array([values.mean() for values in per_size]), resampled


def growth(table: pd.DataFrame, bootstrap: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Exponent b of epochs ~ n^b (per-size mean epochs) over all sizes and between neighbouring sizes, with
    bootstrap intervals that resample the seeds within each size; NaN when some run did not memorise."""
    sizes = sorted(table["n_train"].unique())
    labels = ["all sizes", *(f"{a} to {b}" for a, b in zip(sizes, sizes[1:]))]
    means = _size_means(table, bootstrap, seed)
    if means is None:
        return pd.DataFrame(np.nan, index=labels, columns=["exponent", "low", "high"])
    sizes, mean, resampled = means
    spread = np.array([_exponents(sizes, row) for row in resampled])
    low, high = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"exponent": _exponents(sizes, mean), "low": low, "high": high}, index=labels)


def extrapolated_epochs(table: pd.DataFrame, n: int, bootstrap: int, seed: int, level: float = 0.95) -> dict:
    """Epochs to memorise n images by the power law fitted to all sizes, with the interval of `growth`'s bootstrap.

    An extrapolation: it assumes the power law holds beyond the largest size measured. NaN when `growth` is.
    """
    means = _size_means(table, bootstrap, seed)
    if means is None:
        return {"n_train": n, "epochs": np.nan, "low": np.nan, "high": np.nan}
    sizes, mean, resampled = means
    spread = [_power_law_at(sizes, row, n) for row in resampled]
    low, high = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2])
    return {"n_train": n, "epochs": _power_law_at(sizes, mean, n), "low": float(low), "high": float(high)}


def sweep_table(histories: Mapping[float, Sequence[History]], seeds: Sequence[int],
                changed: Mapping[float, float]) -> pd.DataFrame:
    """One row per (corruption fraction, seed): final training and test error, and the share of labels changed."""
    rows = [{"fraction": fraction, "seed": seed, "labels_changed": changed[fraction],
             "train_error": 1 - history.train_acc[-1], "test_error": 1 - history.test_acc[-1],
             "train_loss": history.train_loss[-1], "test_loss": history.test_loss[-1]}
            for fraction, runs in histories.items() for seed, history in zip(seeds, runs)]
    return pd.DataFrame(rows)


def paired_steps(table: pd.DataFrame, column: str = "test_error") -> pd.DataFrame:
    """Change of `column` from each corruption fraction to the next, seed by seed (the seeds are paired)."""
    wide = table.pivot(index="seed", columns="fraction", values=column)
    steps = wide.diff(axis=1).iloc[:, 1:]
    return pd.DataFrame({"from": wide.columns[:-1], "to": wide.columns[1:], "smallest": steps.min().to_numpy(),
                         "mean": steps.mean().to_numpy(), "largest": steps.max().to_numpy()})
