"""Deep vs shallow (HW1-1): model families of equal size, learning-rate searches, per-run metric matrices."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from . import models, uncertainty
from .train import Ensemble, History, fit_ensemble


@dataclass(frozen=True)
class Architecture:
    """A named model shape: an MLP (hidden widths, no channels) or a CNN (conv channels, linear head)."""

    name: str  # label in legends and tables, e.g. "3 hidden" or "4 conv"
    input_shape: tuple[int, ...]  # shape of one example, e.g. (1,) or (1, 28, 28)
    hidden: tuple[int, ...]  # widths of the hidden Linear layers (empty for a CNN)
    n_out: int  # outputs (1 for regression, classes for classification)
    channels: tuple[int, ...] = ()  # conv channels; empty for an MLP
    activation: str = "relu"

    def build(self) -> nn.Sequential:
        """A freshly initialised model (seed torch first for a reproducible initialisation)."""
        if self.channels:
            return models.cnn(self.input_shape, self.channels, self.n_out, self.activation)
        return models.mlp(math.prod(self.input_shape), self.hidden, self.n_out, self.activation)

    @property
    def params(self) -> int:
        """Trainable parameter count."""
        return models.count_params(self.build())


def _widths(model: nn.Module, layer: type[nn.Module]) -> tuple[int, ...]:
    """Output widths of every `layer` (nn.Linear or nn.Conv2d) of `model`, in order."""
    return tuple(m.out_features if layer is nn.Linear else m.out_channels
                 for m in model.modules() if isinstance(m, layer))


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
            hidden = _widths(models.mlp_with_params(n_in, depth, n_out, target, activation), nn.Linear)[:-1]
        family.append(Architecture(f"{depth} hidden", tuple(input_shape), hidden, n_out, (), activation))
    return family


def cnn_family(depths: Sequence[int], target: int, input_shape: Sequence[int], n_classes: int = 10,
               activation: str = "relu") -> list[Architecture]:
    """One `models.cnn` per depth (conv layers of one width, the last adjusted), each within 1% of `target`."""
    return [Architecture(f"{depth} conv", tuple(input_shape), (), n_classes,
                         _widths(models.cnn_with_params(input_shape, depth, n_classes, target, activation), nn.Conv2d),
                         activation) for depth in depths]


def family_table(family: Sequence[Architecture]) -> pd.DataFrame:
    """One row per model: its layers in one line, its parameters and (CNNs) the fraction in convolutions."""
    rows = []
    for a in family:
        model = a.build()
        convs = f"conv {'-'.join(map(str, a.channels))}, global average pool, " if a.channels else ""
        layers = f"{convs}linear {'-'.join(map(str, (*a.hidden, a.n_out)))}"
        rows.append({"model": a.name, "layers (widths)": layers, "parameters": a.params,
                     "in convolutions": models.conv_fraction(model)})
    table = pd.DataFrame(rows).set_index("model")
    return table if any(a.channels for a in family) else table.drop(columns="in convolutions")


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


def tail_loss(history: History, fraction: float = 0.1, key: str = "train_loss") -> float:
    """Geometric mean of loss `key` (the training loss; "test_loss": held-out data) over the last `fraction` of the
    evaluations (at least one).

    A single last value would reward a run that happens to sit in a dip of an oscillation; the tail
    mean charges an unstable learning rate for its spikes.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = getattr(history, key)
    losses = np.asarray(values[1:] or values, dtype=float)
    tail = losses[-max(1, math.ceil(fraction * len(losses))):]
    return float(np.exp(np.mean(np.log(np.maximum(tail, np.finfo(float).tiny)))))


def lr_search_table(histories: Sequence[History], member_lrs: Sequence[float],
                    fraction: float = 0.1, key: str = "train_loss") -> pd.DataFrame:
    """Per learning rate: median, min and max over seeds of the tail loss (`tail_loss` of `key`), and the choice.

    The chosen lr has the lowest median; ties go to the smaller lr.
    """
    if len(histories) != len(member_lrs):
        raise ValueError(f"{len(histories)} histories but {len(member_lrs)} learning rates; give one per member")
    frame = pd.DataFrame({"lr": list(map(float, member_lrs)),
                          "tail loss": [tail_loss(h, fraction, key) for h in histories]})
    table = frame.groupby("lr")["tail loss"].agg(["median", "min", "max"]).sort_index()
    table["chosen"] = table.index == table["median"].idxmin()
    return table


def best_lr(table: pd.DataFrame) -> float:
    """The chosen learning rate of an `lr_search_table`."""
    return float(table.index[table["chosen"]][0])


def ladder_step(lr: float, direction: int, per_decade: int = 2) -> float:
    """The next learning rate beyond `lr` on the ladder 10**(k / per_decade), rounded to one significant digit.

    Two points per decade give 1, 3, 10, 30, ... (x 10**j); three give 1, 2, 5, 10, ...; direction +1 goes
    up, -1 down. More than three per decade would merge points when rounded, so they are refused.
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 (up) or -1 (down), got {direction!r}")
    if per_decade not in (1, 2, 3):
        raise ValueError(f"per_decade must be 1, 2 or 3 (one-digit rounding merges finer ladders), got {per_decade!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"a learning rate must be positive and finite, got {lr!r}")
    k = round(math.log10(lr) * per_decade) + direction
    return float(f"{10 ** (k / per_decade):.1g}")


def _edge(grid: Sequence[float], lr: float) -> int:
    """-1 when `lr` is the smallest of `grid`, +1 when the largest, 0 when strictly inside."""
    return -1 if lr == min(grid) else 1 if lr == max(grid) else 0


def search_lr(build: Callable[[], nn.Module], data: Any, *, lrs: Sequence[float], seeds: Sequence[int], epochs: int,
              per_decade: int = 2, max_extensions: int = 3, tail_fraction: float = 0.1, key: str = "train_loss",
              cache: str | None = None, **fit_kw: Any) -> pd.DataFrame:
    """`lr_search_table` (of loss `key`) of a grid grown until the chosen learning rate lies strictly inside it.

    Every lr of `lrs` trains with every seed for `epochs` (one ensemble). While the chosen lr is the
    smallest or largest of the grid, the next rate beyond it (`ladder_step`) trains with the same seeds
    and the choice is made again; after `max_extensions` such steps RuntimeError names the edge. Members
    train independently, so the added runs leave the earlier ones as they were. The table's column
    `added` marks the rates the extensions added. Other keyword arguments go to `fit_ensemble`.
    """
    start = sorted({float(lr) for lr in lrs})
    if len(start) < 2:
        raise ValueError(f"need at least two distinct learning rates, so that one can lie inside the grid; "
                         f"got {list(lrs)}")
    if not isinstance(max_extensions, int) or max_extensions < 0:
        raise ValueError(f"max_extensions must be a non-negative integer, got {max_extensions!r}")
    histories: list[History] = []
    member_lrs: list[float] = []
    new = start
    for _ in range(max_extensions + 1):
        lrs_k, seeds_k = lr_grid(new, seeds)
        histories += fit_ensemble(build, seeds_k, data, epochs=epochs, lr=lrs_k, cache=cache, **fit_kw).histories
        member_lrs += lrs_k
        table = lr_search_table(histories, member_lrs, tail_fraction, key)
        side = _edge(table.index, best_lr(table))
        if side == 0:
            return table.assign(added=~table.index.isin(start))
        new = [ladder_step(best_lr(table), side, per_decade)]
    raise RuntimeError(f"after {max_extensions} extension(s) the chosen learning rate {best_lr(table):g} is still the "
                       f"{'smallest' if side < 0 else 'largest'} of the grid {list(table.index)}; start from a grid "
                       "that reaches further that way or allow more extensions")


@dataclass
class Tuned:
    """A learning-rate search and the runs trained at the chosen rate."""

    search: pd.DataFrame  # search_lr's table over the final grid
    lr: float  # the chosen learning rate
    ensemble: Ensemble  # the final runs (their own seeds) at `lr`


def tune_and_train(build: Callable[[], nn.Module], data: Any, *, lrs: Sequence[float], search_seeds: Sequence[int],
                   seeds: Sequence[int], search_epochs: int, max_epochs: int, per_decade: int = 2,
                   max_extensions: int = 3, tail_fraction: float = 0.1, cache: str | None = None,
                   **fit_kw: Any) -> Tuned:
    """Search the learning rate (`search_lr` over `lrs` x `search_seeds` for `search_epochs`), then train
    `seeds` at the chosen rate for up to `max_epochs` (one ensemble; pass patience to stop on a plateau).

    The final seeds must differ from the search seeds, so the reported runs are not the ones the
    learning rate was picked on. `cache` names the disk-cache entries (`<cache>-search`, `<cache>-final`),
    so an interrupted run resumes; other keyword arguments go to every `fit_ensemble` call.
    """
    if set(search_seeds) & set(seeds):
        raise ValueError(f"final seeds {list(seeds)} overlap the search seeds {list(search_seeds)}; use disjoint "
                         "seeds so the reported runs are not those the learning rate was chosen on")
    search_kw = {k: v for k, v in fit_kw.items() if k != "patience"}
    table = search_lr(build, data, lrs=lrs, seeds=search_seeds, epochs=search_epochs, per_decade=per_decade,
                      max_extensions=max_extensions, tail_fraction=tail_fraction,
                      cache=cache and f"{cache}-search", **search_kw)
    lr = best_lr(table)
    final = fit_ensemble(build, list(seeds), data, epochs=max_epochs, lr=lr, cache=cache and f"{cache}-final", **fit_kw)
    return Tuned(table, lr, final)


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


def constant_fit_loss(y: Any) -> float:
    """MSE of the best constant prediction (the mean of `y`): the loss of a model that learned nothing."""
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        raise ValueError("no targets given")
    return float(np.mean((y - y.mean()) ** 2))


@dataclass
class ModelFit:
    """One tuned model's final runs on one function, as plain arrays for tables, figures and results.json."""

    search: pd.DataFrame  # search_lr's table over the final grid
    lr: float  # the chosen learning rate
    epoch: np.ndarray  # evaluated epochs of the final runs (shared by the seeds, which stop together)
    loss: np.ndarray  # (seeds, evaluations) training loss
    final: np.ndarray  # per seed: the final loss, `tail_loss` of its run
    failed: np.ndarray  # per seed: final loss above the failure threshold
    shown: int  # the seed (index) whose prediction is drawn: the median final loss
    prediction: np.ndarray  # that seed's outputs at the plot inputs

    def to_dict(self) -> dict[str, Any]:
        """The numbers for results.json (no curves)."""
        return {"lr": self.lr, "grid": list(self.search.index), "added": list(self.search.index[self.search["added"]]),
                "search_median": list(self.search["median"]), "epochs": int(self.epoch[-1]),
                "final": self.final.tolist(), "failed": self.failed.tolist(), "n_failed": int(self.failed.sum()),
                "final_median": float(np.median(self.final)), "best": float(self.final.min())}


@dataclass
class FunctionFit:
    """Every model of a family tuned and trained on one function (`fit_function`)."""

    constant_loss: float  # MSE of the best constant fit of the training targets
    threshold: float  # a seed fails when its final loss is above this
    plot_x: np.ndarray  # inputs of the prediction curves
    truth: np.ndarray  # the function at plot_x
    models: dict[str, ModelFit]


def fit_function(family: Sequence[Architecture], data: tuple[Any, Any], plot_data: tuple[Any, Any], *,
                 fail_fraction: float, tail_fraction: float = 0.1, cache: str | None = None,
                 **tune_kw: Any) -> FunctionFit:
    """`tune_and_train` every model of `family` on data = (x, y); predictions at plot_data = (x, truth).

    A seed **fails** when its final loss (`tail_loss`) is above `fail_fraction` times the loss of the
    best constant fit: it explains less than 1 - fail_fraction of the targets' variance. `cache`
    prefixes the disk-cache entries (one per model); other keyword arguments go to `tune_and_train`.
    """
    if not 0 < fail_fraction <= 1:
        raise ValueError(f"fail_fraction must be in (0, 1], got {fail_fraction}")
    constant = constant_fit_loss(data[1].cpu())
    plot_x, truth = plot_data
    models_fit = {}
    for arch in family:
        tuned = tune_and_train(arch.build, data, tail_fraction=tail_fraction,
                               cache=cache and f"{cache}-{arch.name.replace(' ', '')}", **tune_kw)
        epoch, loss = runs(tuned.ensemble.histories)
        final = np.array([tail_loss(h, tail_fraction) for h in tuned.ensemble.histories])
        shown = median_member(final)
        prediction = tuned.ensemble.forward(plot_x.to(data[0].device))[shown].flatten().cpu().numpy()
        models_fit[arch.name] = ModelFit(tuned.search, tuned.lr, epoch, loss, final, final > fail_fraction * constant,
                                         shown, prediction)
    return FunctionFit(constant, fail_fraction * constant, plot_x.flatten().cpu().numpy(),
                       truth.flatten().cpu().numpy(), models_fit)


def search_overview(fits: Mapping[str, FunctionFit]) -> pd.DataFrame:
    """Per (function, model): the median search tail loss at every lr tried ('*' chosen, '+' added by an extension)."""
    rows = {(name, model): {lr: f"{row['median']:.2e}{' *' if row['chosen'] else ''}{' +' if row['added'] else ''}"
                            for lr, row in m.search.iterrows()}
            for name, fit in fits.items() for model, m in fit.models.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").sort_index(axis=1).fillna("")
    return table.rename(columns=lambda lr: f"lr {lr:g}").rename_axis(["function", "model"])


def final_table(fits: Mapping[str, FunctionFit], max_epochs: int) -> pd.DataFrame:
    """Per (function, model): chosen lr, epochs, how training stopped, final loss over the seeds, failed seeds."""
    rows = {(name, model): {"lr": m.lr, "epochs": int(m.epoch[-1]),
                            "stopped by": "plateau" if m.epoch[-1] < max_epochs else "cap",
                            "final loss (median)": float(np.median(m.final)), "final loss (min)": float(m.final.min()),
                            "final loss (max)": float(m.final.max()),
                            "failed seeds": f"{int(m.failed.sum())} of {len(m.failed)}"}
            for name, fit in fits.items() for model, m in fit.models.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["function", "model"])


def depth_comparison(fits: Mapping[str, FunctionFit], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """`seed_pair_verdicts` of the models' final losses, per function (rows: function, "deeper vs shallower")."""
    return pd.concat({name: seed_pair_verdicts({m: model.final for m, model in fit.models.items()}, resamples, seed,
                                               level) for name, fit in fits.items()}, names=["function", "pair"])


def seed_pair_verdicts(finals: Mapping[str, Sequence[float]], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> pd.DataFrame:
    """For every pair of models (later in `finals`' order first): the fraction of seed pairs in which the later
    model's value is lower (`uncertainty.pair_win_fraction`, with its bootstrap interval), and the verdict:
    one model is lower only where the interval excludes 0.5."""
    names, rows = list(finals), {}
    for i, earlier in enumerate(names):
        for later in names[i + 1:]:
            w = uncertainty.pair_win_fraction(np.asarray(finals[later]), np.asarray(finals[earlier]), resamples, seed,
                                              level)
            verdict = f"{later} lower" if w["low"] > 0.5 else f"{earlier} lower" if w["high"] < 0.5 else "not separated"
            rows[f"{later} vs {earlier}"] = {**w, "verdict": verdict}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("pair")
