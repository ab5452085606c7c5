"""Deep vs shallow (HW1-1): model families of equal size, learning-rate searches, per-run metric matrices."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from . import models
from .train import Ensemble, History, fit_ensemble


@dataclass(frozen=True)
class Architecture:
    """A named model shape: an MLP (no channels) or a CNN (conv channels, then an MLP head)."""

    name: str  # label in legends and tables, e.g. "3 hidden" or "deep (4 conv)"
    input_shape: tuple[int, ...]  # shape of one example, e.g. (1,) or (1, 28, 28)
    hidden: tuple[int, ...]  # widths of the hidden Linear layers
    n_out: int  # outputs (1 for regression, classes for classification)
    channels: tuple[int, ...] = ()  # conv channels; empty for an MLP
    activation: str = "relu"

    def build(self) -> nn.Sequential:
        """A freshly initialised model (seed torch first for a reproducible initialisation)."""
        if self.channels:
            return models.cnn(self.input_shape, self.channels, self.hidden, self.n_out, self.activation)
        return models.mlp(math.prod(self.input_shape), self.hidden, self.n_out, self.activation)

    @property
    def params(self) -> int:
        """Trainable parameter count."""
        return models.count_params(self.build())


def _linear_widths(model: nn.Module) -> tuple[int, ...]:
    """Output widths of every Linear layer but the last (the hidden widths of an MLP)."""
    return tuple(m.out_features for m in model.modules() if isinstance(m, nn.Linear))[:-1]


def mlp_family(depths: Sequence[int], target: int, input_shape: Sequence[int], n_out: int,
               equal_widths: bool = False, activation: str = "relu") -> list[Architecture]:
    """One MLP per depth (hidden layers), each within 1% of `target` parameters.

    equal_widths=True gives every hidden layer one width (ValueError when no width lands within 1%);
    otherwise models.mlp_with_params may adjust the first hidden width to land closer.
    """
    n_in = math.prod(input_shape)
    family = []
    for depth in depths:
        if equal_widths:
            width = models.match_width(lambda w, d=depth: models.mlp(n_in, [w] * d, n_out, activation), target)
            hidden = (width,) * depth
        else:
            hidden = _linear_widths(models.mlp_with_params(n_in, depth, n_out, target, activation))
        family.append(Architecture(f"{depth} hidden", tuple(input_shape), hidden, n_out, (), activation))
    return family


def cnn_family(channel_lists: Mapping[str, Sequence[int]], target: int, input_shape: Sequence[int],
               n_classes: int = 10, activation: str = "relu") -> list[Architecture]:
    """One CNN per named channel list, its one hidden head layer sized so the count is within 1% of `target`."""
    family = []
    for name, channels in channel_lists.items():
        def build(width: int, channels: Sequence[int] = channels) -> nn.Module:
            """The CNN with a head of one hidden layer of `width` units."""
            return models.cnn(input_shape, channels, [width], n_classes, activation)

        width = models.match_width(build, target)
        family.append(Architecture(name, tuple(input_shape), (width,), n_classes, tuple(channels), activation))
    return family


def family_table(family: Sequence[Architecture]) -> pd.DataFrame:
    """One row per model: conv channels, hidden widths, layer counts and parameters."""
    rows = [{"model": a.name, "conv layers": len(a.channels), "channels": "-".join(map(str, a.channels)) or "-",
             "hidden layers": len(a.hidden), "hidden widths": "-".join(map(str, a.hidden)),
             "parameters": a.params} for a in family]
    return pd.DataFrame(rows).set_index("model")


def check_same_size(family: Sequence[Architecture]) -> list[int]:
    """The parameter counts; ValueError unless all lie within 1% of their mean."""
    counts = [a.params for a in family]
    if not models.same_size(counts):
        raise ValueError(f"parameter counts {dict(zip([a.name for a in family], counts))} differ by more "
                         f"than {models.PARAM_TOLERANCE:.0%}; choose another target or other depths")
    return counts


def lr_grid(lrs: Sequence[float], seeds: Sequence[int]) -> tuple[list[float], list[int]]:
    """Member learning rates and seeds of a search ensemble: every lr with every seed, lr-major."""
    if not lrs or not seeds:
        raise ValueError(f"need at least one learning rate and one seed, got {list(lrs)} and {list(seeds)}")
    return [float(lr) for lr in lrs for _ in seeds], [int(s) for _ in lrs for s in seeds]


def tail_loss(history: History, fraction: float = 0.1) -> float:
    """Geometric mean of the training loss over the last `fraction` of the evaluations (at least one).

    A single last value would reward a run that happens to sit in a dip of an oscillation; the tail
    mean charges an unstable learning rate for its spikes.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    losses = np.asarray(history.train_loss[1:] or history.train_loss, dtype=float)
    tail = losses[-max(1, math.ceil(fraction * len(losses))):]
    return float(np.exp(np.mean(np.log(np.maximum(tail, np.finfo(float).tiny)))))


def lr_search_table(histories: Sequence[History], member_lrs: Sequence[float],
                    fraction: float = 0.1) -> pd.DataFrame:
    """Per learning rate: median, min and max over seeds of the tail loss (`tail_loss`), and the choice.

    The chosen lr has the lowest median; ties go to the smaller lr.
    """
    if len(histories) != len(member_lrs):
        raise ValueError(f"{len(histories)} histories but {len(member_lrs)} learning rates; give one per member")
    frame = pd.DataFrame({"lr": list(map(float, member_lrs)), "tail loss": [tail_loss(h, fraction) for h in histories]})
    table = frame.groupby("lr")["tail loss"].agg(["median", "min", "max"]).sort_index()
    table["chosen"] = table.index == table["median"].idxmin()
    return table


def best_lr(table: pd.DataFrame) -> float:
    """The chosen learning rate of an `lr_search_table`."""
    return float(table.index[table["chosen"]][0])


@dataclass
class Tuned:
    """A learning-rate search and the runs trained at the chosen rate."""

    search: pd.DataFrame  # lr_search_table of the search ensemble
    lr: float  # the chosen learning rate
    ensemble: Ensemble  # the final runs (their own seeds) at `lr`


def tune_and_train(build: Callable[[], nn.Module], data: Any, *, lrs: Sequence[float], search_seeds: Sequence[int],
                   seeds: Sequence[int], search_epochs: int, max_epochs: int, tail_fraction: float = 0.1,
                   **fit_kw: Any) -> Tuned:
    """Search `lrs` x `search_seeds` for `search_epochs` (one ensemble), pick the lr by `lr_search_table`,
    then train `seeds` at that lr for up to `max_epochs` (one ensemble; pass patience to stop on a plateau).

    The final seeds must differ from the search seeds, so the reported runs are not the ones the
    learning rate was picked on. Other keyword arguments go to both `fit_ensemble` calls.
    """
    if set(search_seeds) & set(seeds):
        raise ValueError(f"final seeds {list(seeds)} overlap the search seeds {list(search_seeds)}; use disjoint "
                         "seeds so the reported runs are not those the learning rate was chosen on")
    member_lrs, member_seeds = lr_grid(lrs, search_seeds)
    search_kw = {k: v for k, v in fit_kw.items() if k != "patience"}
    search = fit_ensemble(build, member_seeds, data, epochs=search_epochs, lr=member_lrs, **search_kw)
    table = lr_search_table(search.histories, member_lrs, tail_fraction)
    lr = best_lr(table)
    return Tuned(table, lr, fit_ensemble(build, list(seeds), data, epochs=max_epochs, lr=lr, **fit_kw))


def runs(histories: Sequence[History], key: str = "train_loss") -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values): the evaluated epochs and a (members x evaluations) matrix of `key`.

    Members of one ensemble share their evaluation epochs; histories of different lengths are padded with nan.
    """
    if not histories:
        raise ValueError("no histories given")
    if not isinstance(getattr(histories[0], key, None), list):
        raise ValueError(f"History has no per-evaluation list {key!r}; use e.g. 'train_loss' or 'test_acc'")
    longest = max(histories, key=lambda h: len(h.epoch))
    values = np.full((len(histories), len(longest.epoch)), np.nan)
    for row, h in zip(values, histories):
        row[:len(h.epoch)] = getattr(h, key)
    return np.asarray(longest.epoch), values


def median_member(scores: Sequence[float]) -> int:
    """Index of the median of per-member `scores` (the lower middle one for an even count)."""
    if len(scores) == 0:
        raise ValueError("no scores given")
    return int(np.argsort(np.asarray(scores, dtype=float), kind="stable")[(len(scores) - 1) // 2])
