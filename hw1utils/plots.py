"""One function per kind of figure, grouped by kind; each takes ax=None (where it draws one panel) and returns the
figure, never showing it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------------------
# Building blocks: axes, bands over seeds, curves, tables
# ---------------------------------------------------------------------------------------------------------


def axes(ax: Axes | None = None, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    """The given axes and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def band(x: Sequence[float], runs: np.ndarray, label: str, ax: Axes | None = None, color=None,
         quantiles: tuple[float, float] = (0.25, 0.75), **line_kw) -> Figure:
    """Median over runs (rows of `runs`) as a line, with a shaded inter-quantile band."""
    fig, ax = axes(ax)
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    (line,) = ax.plot(x, np.nanmedian(runs, axis=0), label=label, color=color, **line_kw)
    if len(runs) > 1:
        lo, hi = np.nanquantile(runs, quantiles, axis=0)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return fig


def curves(x: Sequence[float], series: Mapping[str, np.ndarray], ax: Axes | None = None, logy: bool = False,
           xlabel: str = "epoch", ylabel: str = "", title: str = "", logx: bool = False) -> Figure:
    """One median-and-band line per named (runs x points) array, on shared axes."""
    fig, ax = axes(ax)
    for label, runs in series.items():
        band(x, runs, label, ax=ax)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def twin_axes(x: Sequence[float], left: Mapping[str, Sequence[float]], right: Mapping[str, Sequence[float]],
              left_label: str, right_label: str, xlabel: str, ax: Axes | None = None, logx: bool = False,
              logy_left: bool = False, title: str = "") -> Figure:
    """The course's two-y-axis style: `left` series solid (blue axis), `right` series dashed (red axis).

    Train/test pairs are told apart by the word in their labels; each side keeps its own colour.
    """
    fig, ax = axes(ax)
    other = ax.twinx()
    for side, series, color, style in ((ax, left, "tab:blue", "-"), (other, right, "tab:red", "--")):
        for i, (label, values) in enumerate(series.items()):
            side.plot(x, values, style if i == 0 else ":", color=color, label=label, marker=".", markersize=4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(left_label, color="tab:blue")
    other.set_ylabel(right_label, color="tab:red")
    ax.tick_params(axis="y", colors="tab:blue")
    other.tick_params(axis="y", colors="tab:red")
    if logx:
        ax.set_xscale("log")
    if logy_left:
        ax.set_yscale("log")
    lines = ax.get_lines() + other.get_lines()
    other.legend(lines, [line.get_label() for line in lines], fontsize="small", loc="best")  # on top of both
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def seed_band(stats, metric: str, label: str, ax: Axes, color=None) -> None:
    """Mean over seeds of `metric` against the parameter count (the index of `stats`), min-max band (1-3b)."""
    params, column = stats.index.to_numpy(), stats[metric]
    (line,) = ax.plot(params, column["mean"], "o-", markersize=4, color=color, label=f"{label}, mean")
    ax.fill_between(params, column["min"], column["max"], color=line.get_color(), alpha=0.2, linewidth=0,
                    label=f"{label}, min-max over seeds")


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred mean over `window` neighbours (fewer at the ends), the same length as `values`."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(len(values))
    lo, hi = np.maximum(index - window // 2, 0), np.minimum(index + (window - 1) // 2 + 1, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)


def formatted_table(table, formats: dict[str, str]):
    """`table` with the named columns turned into strings by their format ("{:.3g}"), for a stable display."""
    return table.apply(lambda column: column.map(formats[column.name].format) if column.name in formats else column)


def labelled_table(summaries: Mapping[str, Mapping[str, float]], rows: Mapping[str, str]):
    """Summaries of several cases side by side: one row per key of `rows`, labelled by its value, .3g ('–' for nan)."""
    table = pd.DataFrame(summaries).loc[list(rows)].rename(index=rows)
    return table.map(lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}")


KIND_STYLES = {"minimum": dict(color="tab:blue", marker="o"), "saddle": dict(color="tab:red", marker="^")}
STALLED_STYLE = dict(color="0.6", marker="x")  # every stalled run, whatever its cause (1-2c)


# ---------------------------------------------------------------------------------------------------------
# Training curves: loss, accuracy and gradient norm against the steps or epochs (1-1, 1-2b, 1-3a)
# ---------------------------------------------------------------------------------------------------------


def step_curves(step_loss: Sequence[float], step_grad_norm: Sequence[float], steps_per_epoch: int,
                epochs: Sequence[int] = (), epoch_loss: Sequence[float] = (),
                epoch_grad_norm: Sequence[float] = (), window: int = 1, axs: Sequence[Axes] | None = None,
                log_loss: bool = True, log_grad: bool = True, title: str = "") -> Figure:
    """Loss (top) and gradient norm (bottom) at every iteration, on a shared iteration axis.

    Per-step values are thin lines (with a `window`-step moving average when window > 1); values
    measured at epoch ends (`epochs`, `epoch_loss`, `epoch_grad_norm`) are markers at iteration
    epoch * steps_per_epoch. Iteration i is the step taken from the weights after i updates, so an
    epoch-end value lines up with the step that follows it.
    """
    if len(step_loss) != len(step_grad_norm):
        raise ValueError("step_loss and step_grad_norm differ in length: "
                         f"{len(step_loss)} vs {len(step_grad_norm)}")
    if axs is None:
        fig, axs = plt.subplots(2, 1, figsize=(8.0, 6.0), sharex=True, layout="constrained")
    fig = axs[0].figure
    iteration = np.arange(len(step_loss))  # step i starts from the weights after i updates
    at_epoch = np.asarray(epochs, dtype=float) * steps_per_epoch
    panels = ((axs[0], step_loss, epoch_loss, "loss", "tab:blue", log_loss),
              (axs[1], step_grad_norm, epoch_grad_norm, "gradient 2-norm", "tab:red", log_grad))
    for ax, per_step, per_epoch, name, color, log in panels:
        ax.plot(iteration, per_step, color=color, linewidth=0.6, alpha=0.45 if window > 1 else 0.9,
                label=f"{name} of the step's mini-batch")
        if window > 1:
            ax.plot(iteration, moving_average(per_step, window), color=color, linewidth=1.6,
                    label=f"centred moving average ({window} steps)")
        if len(per_epoch):
            ax.plot(at_epoch, per_epoch, "o", color="k", markersize=3.5,
                    label=f"{name} on all training data (epoch end)")
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper right")
    axs[1].set_xlabel(f"iteration ({steps_per_epoch} per epoch)")
    axs[0].set_title(title)
    return fig


def training_steps(history, title: str = "", window: int = 1) -> Figure:
    """`step_curves` of a History recorded with record_steps and a whole-data gradient hook (1-2b)."""
    return step_curves(history.step_loss, history.step_grad_norm, history.steps_per_epoch, epochs=history.epoch,
                       epoch_loss=history.train_loss, epoch_grad_norm=history.extra["full_grad_norm"],
                       window=window, title=title)


def family_training(runs, title: str = "", window: int = 25) -> Figure:
    """Training loss (log), training accuracy and test accuracy against optimiser steps of every model of a `TaskRuns`.

    One colour per model, solid for the first family and dashed for the next. Left: the mini-batch loss of
    every step, as a moving average over `window` steps; middle and right: the accuracy on the evaluated
    training images and on the test set after each epoch (the untrained start is left out). The line is the
    median over seeds and the band the seeds' range.
    """
    fig, (ax_loss, ax_train, ax_test) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for style, (family, ensembles) in zip(("-", "--", ":"), runs.ensembles.items()):
        for name, ensemble in ensembles.items():
            color, label, histories = next(colors), f"{family} {name}", ensemble.histories
            loss = np.array([moving_average(h.step_loss, window) for h in histories])
            trained = slice(1, None)  # the evaluations after the first epoch (chance level at step 0 is left out)
            evaluated = np.asarray(histories[0].epoch[trained]) * histories[0].steps_per_epoch
            for ax, x, values, marker in (
                    (ax_loss, np.arange(1, loss.shape[1] + 1), loss, None),
                    (ax_train, evaluated, np.array([h.train_acc[trained] for h in histories]), "."),
                    (ax_test, evaluated, np.array([h.test_acc[trained] for h in histories]), ".")):
                ax.plot(x, np.median(values, axis=0), style, color=color, marker=marker, label=label)
                ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.15, linewidth=0)
    ax_loss.set(yscale="log", xlabel="optimiser step", ylabel="training loss (mini-batch, cross-entropy)",
                title=f"Training loss, moving average over {window} steps")
    ax_train.set(xlabel="optimiser step", ylabel="training accuracy (evaluated training images)",
                 title="Training accuracy")
    ax_test.set(xlabel="optimiser step", ylabel="test accuracy (whole test set)", title="Test accuracy")
    for ax in (ax_loss, ax_train, ax_test):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    fig.suptitle(title, fontsize="medium")
    return fig


def function_fits(fits: Mapping[str, object], title: str = "") -> Figure:
    """One row per function (key: row title) of deep_shallow.FunctionFit (1-1a).

    Left: every seed's training loss, one thin line each (failed seeds dashed, ending in x), and the
    failure threshold. Right: the ground truth and, per model, the prediction of its median seed.
    """
    fig, axs = plt.subplots(len(fits), 2, figsize=(12.5, 3.9 * len(fits)), layout="constrained", squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (ax_loss, ax_fit), (row_title, fit) in zip(axs, fits.items()):
        ax_fit.plot(fit.plot_x, fit.truth, color="black", linewidth=2.5, alpha=0.35, label="ground truth")
        for (model, m), color in zip(fit.models.items(), colors):
            for loss, failed in zip(m.loss, m.failed):
                ax_loss.plot(m.epoch, loss, color=color, linewidth=0.7, alpha=0.7, linestyle="--" if failed else "-")
                if failed:
                    ax_loss.plot(m.epoch[-1], loss[-1], color=color, marker="x", markersize=8)
            ax_loss.plot([], [], color=color, label=f"{model}, lr {m.lr:g}: {int(m.failed.sum())} of "
                                                    f"{len(m.failed)} seeds failed")
            ax_fit.plot(fit.plot_x, m.prediction, color=color, linewidth=1.3,
                        label=f"{model}, median seed (final loss {m.final[m.shown]:.2g})")
        ax_loss.axhline(fit.threshold, color="0.3", linestyle=":", linewidth=1.2,
                        label=f"failure threshold ({fit.threshold / fit.constant_loss:.0%} of the constant fit's)")
        ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (MSE)", title=f"{row_title}: training loss")
        ax_fit.set(xlabel="x", ylabel="y", title=f"{row_title}: predictions")
        for ax in (ax_loss, ax_fit):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


SPLIT_COLORS = {"train": "tab:blue", "test": "tab:orange"}  # 1-3b


def label_fit_curves(runs: Mapping[str, Sequence], chance: float, title: str = "") -> Figure:
    """Training (solid) and test (dashed) loss and accuracy against epochs, median over seeds with min-max band."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for name, histories in runs.items():
        epochs = histories[0].epoch
        for split, style in (("train", "-"), ("test", "--")):
            for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
                values = np.array([getattr(h, f"{split}_{metric}") for h in histories])
                band(epochs, values, f"{name}, {split}", ax=ax, color=LABEL_COLORS.get(name), quantiles=(0, 1),
                     linestyle=style)
    ax_acc.axhline(chance, color="grey", linewidth=0.8, linestyle=":", label="chance")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------------------------
# Weight space: trajectories, loss surfaces and lines through it (1-2a, 1-3c)
# ---------------------------------------------------------------------------------------------------------


def _metric_norm(values: np.ndarray, log: bool) -> Normalize:
    """A colour scale over the finite values: logarithmic when asked and all values are positive."""
    finite = values[np.isfinite(values)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    return LogNorm(lo, hi) if log and lo > 0 else Normalize(lo, hi)


def trajectory_scatter(coords: np.ndarray, run: np.ndarray, values: np.ndarray, ax: Axes | None = None,
                       value_label: str = "loss", log_color: bool = True, xlabel: str = "PC 1",
                       ylabel: str = "PC 2", title: str = "", cmap: str = "viridis") -> Figure:
    """2-D weight trajectories: one line per run (run colours, in row order), points coloured by `values`.

    Each run's first point is a square, its last point a star labelled with the run and its value; the
    markers' edges carry the run colour.
    """
    fig, ax = axes(ax, figsize=(7.0, 5.0))
    coords, run, values = np.asarray(coords, dtype=float), np.asarray(run), np.asarray(values, dtype=float)
    norm = _metric_norm(values, log_color)
    run_colors = plt.get_cmap("tab10")
    for k, r in enumerate(dict.fromkeys(run.tolist())):
        xy, v = coords[run == r], values[run == r]
        color = run_colors(k % 10)
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, linewidth=1.6, alpha=0.9, label=f"run {r}")
        ax.scatter(xy[1:-1, 0], xy[1:-1, 1], c=v[1:-1], cmap=cmap, norm=norm, s=28, edgecolors="none",
                   zorder=3)
        ax.scatter(*xy[0], c=v[:1], cmap=cmap, norm=norm, marker="s", s=50, edgecolors=[color], linewidths=1.8,
                   zorder=3)
        ax.scatter(*xy[-1], c=v[-1:], cmap=cmap, norm=norm, marker="*", s=170, edgecolors=[color],
                   linewidths=1.4, zorder=4)
        ax.annotate(f"run {r}: {v[-1]:.3g}", xy[-1], textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color=color)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=value_label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="x-small", ncol=2, title="square: start, star: end", title_fontsize="x-small")
    ax.grid(alpha=0.3)
    return fig


def loss_contours(a_grid: np.ndarray, b_grid: np.ndarray, losses: np.ndarray,
                  paths: Mapping[str, np.ndarray] | None = None, ax: Axes | None = None, log: bool = True,
                  levels: int = 25, xlabel: str = "direction 1", ylabel: str = "direction 2",
                  title: str = "") -> Figure:
    """Filled contours of a loss surface (log-spaced levels by default) with (N, 2) paths drawn on top.

    Each path is a line with markers, a square at its start and a star at its end; the grid centre
    (a, b) = (0, 0) is marked with a cross when it lies inside the grid.
    """
    fig, ax = axes(ax, figsize=(6.4, 5.0))
    losses = np.asarray(losses, dtype=float)
    positive = losses[np.isfinite(losses) & (losses > 0)]
    if log and len(positive):
        bounds = np.geomspace(positive.min(), positive.max(), levels)
        norm = LogNorm(bounds[0], bounds[-1])
    else:
        bounds, norm = np.linspace(np.nanmin(losses), np.nanmax(losses), levels), None
    filled = ax.contourf(a_grid, b_grid, losses, levels=bounds, norm=norm, cmap="viridis", extend="both")
    ax.contour(a_grid, b_grid, losses, levels=bounds[::3], colors="white", linewidths=0.5, alpha=0.6)
    colorbar = fig.colorbar(filled, ax=ax, label="loss", format="%.3g")
    colorbar.set_ticks(bounds[:: max(1, len(bounds) // 6)])
    colorbar.minorticks_off()
    path_colors = plt.get_cmap("tab10")
    for k, (label, path) in enumerate((paths or {}).items()):
        xy = np.asarray(path, dtype=float)
        color = path_colors((k + 1) % 10)
        ax.plot(xy[:, 0], xy[:, 1], ".-", color=color, label=label, markersize=5)
        ax.plot(*xy[0], "s", color=color, markeredgecolor="k")
        ax.plot(*xy[-1], "*", color=color, markeredgecolor="k", markersize=12)
    if a_grid.min() <= 0 <= a_grid.max() and b_grid.min() <= 0 <= b_grid.max():
        ax.plot(0, 0, "x", color="red", markersize=9, label="centre")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="x-small", loc="upper right")
    return fig


def trajectory_views(views: Mapping[str, tuple[np.ndarray, Sequence[float]]], run: np.ndarray,
                     metrics: Mapping[str, tuple[np.ndarray, bool]], title: str = "") -> Figure:
    """A grid of trajectory_scatter panels: one column per PCA view (name -> (coords, explained ratio)),
    one row per colouring metric (label -> (values, log scale))."""
    fig, grid = plt.subplots(len(metrics), len(views), figsize=(6.6 * len(views), 5 * len(metrics)),
                             layout="constrained", squeeze=False)
    for row, (label, (values, log)) in zip(grid, metrics.items(), strict=True):
        for ax, (view, (coords, ratio)) in zip(row, views.items(), strict=True):
            trajectory_scatter(np.asarray(coords), run, values, ax=ax, value_label=label, log_color=log,
                               xlabel=f"PC 1 ({float(ratio[0]):.1%} of variance)",
                               ylabel=f"PC 2 ({float(ratio[1]):.1%} of variance)", title=f"{view}: {label}")
    fig.suptitle(title)
    return fig


def surface_pair(pca, random, ratio: Sequence[float], label: str = "run", title: str = "") -> Figure:
    """Contours of two PlaneSurfaces side by side, the PCA plane (left) and the random plane, the path on each."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    loss_contours(pca.a_grid, pca.b_grid, pca.losses, paths={label: pca.path}, ax=left,
                  xlabel=f"PC 1 of {label} ({float(ratio[0]):.1%} of its variance)",
                  ylabel=f"PC 2 ({float(ratio[1]):.1%})", title="PCA plane of the trajectory (centre: final weights)")
    loss_contours(random.a_grid, random.b_grid, random.losses, paths={label: random.path}, ax=right,
                  xlabel="filter-normalised direction 1", ylabel="filter-normalised direction 2",
                  title="random plane (centre: final weights)")
    fig.suptitle(title)
    return fig


def loss_cuts(cuts: Mapping[str, np.ndarray], ylabel: str = "loss", title: str = "") -> Figure:
    """Train and test loss along the random direction (left) and the initial -> final line (right), log y."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for ax, key, xlabel in ((left, "random", "alpha along filter-normalised direction 1 (0 = final weights)"),
                            (right, "line", "alpha: (1 - alpha) initial + alpha final weights")):
        for split, style in (("train", "-"), ("test", "--")):
            if f"{key}_{split}" in cuts:
                ax.plot(cuts[f"{key}_alpha"], cuts[f"{key}_{split}"], style, marker=".", label=f"{split} loss")
        ax.set(yscale="log", xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for alpha, name in ((0, "initial"), (1, "final")):
        right.axvline(alpha, color="grey", linewidth=0.8)
        right.annotate(f"{name} weights", (alpha, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                       fontsize=8, color="grey", xytext=(3, 0), textcoords="offset points")
    fig.suptitle(title)
    return fig


def interpolation_line(train_curve: Mapping[str, np.ndarray], test_curve: Mapping[str, np.ndarray],
                       end_names: tuple[str, str], title: str = "", ax: Axes | None = None) -> Figure:
    """The course's figure of one line: cross-entropy (log, left) and accuracy (right) against alpha, ends marked."""
    fig = twin_axes(train_curve["alpha"], {"train loss": train_curve["loss"], "test loss": test_curve["loss"]},
                    {"train accuracy": train_curve["accuracy"], "test accuracy": test_curve["accuracy"]},
                    left_label="cross-entropy (log scale)", right_label="accuracy", xlabel=r"$\alpha$", ax=ax,
                    logy_left=True, title=title)
    axis = fig.axes[0] if ax is None else ax
    for alpha in (0.0, 1.0):
        axis.axvline(alpha, color="gray", linewidth=0.8)
    ends = axis.secondary_xaxis("top")
    ends.set_xticks([0.0, 1.0], labels=[f"$\\theta_1$: {end_names[0]}", f"$\\theta_2$: {end_names[1]}"],
                    fontsize="small", color="gray")
    return fig


def filter_normalized_profiles(steps: Sequence[float], profiles: Mapping[str, np.ndarray], rise: float,
                               title: str = "", ax: Axes | None = None) -> Figure:
    """Training loss along filter-normalised directions through each model: median and min-max band over directions.

    A dotted line per model marks its loss at t = 0 plus `rise`, the level that defines its radius.
    """
    fig, ax = axes(ax)
    zero = int(np.flatnonzero(np.asarray(steps) == 0)[0])
    for label, runs in profiles.items():
        band(steps, runs, label, ax=ax, quantiles=(0.0, 1.0))
        ax.axhline(np.median(runs[:, zero]) + rise, color=ax.get_lines()[-1].get_color(), linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set(xlabel="step t along the direction (units of each weight row's own norm)",
           ylabel="training cross-entropy (log scale)", title=title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Critical points: gradient norms, spectra and minimal ratio (1-2c)
# ---------------------------------------------------------------------------------------------------------


def final_grad_norms(runs, history: Mapping[int, Sequence[float]], criterion: float, floor: float = 1e-20) -> Figure:
    """Histogram of the final gradient norms per start epoch (log x, exact zeros at floor), and phase 2 per step."""
    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    bins = np.arange(np.log10(floor), 1.01, 0.5)
    stages = runs.groupby("start_epochs")
    for (epochs, group), color in zip(stages, plt.cm.viridis(np.linspace(0, 0.9, stages.ngroups))):
        ax.hist(np.log10(np.clip(group["grad_norm"], floor, None)), bins=bins, alpha=0.6, color=color,
                label=f"phase 2 after {epochs} Adam epochs ({len(group)} runs)")
        ax_steps.semilogy(history[epochs], color=color, marker=".", label=f"after {epochs} Adam epochs")
    for axis in (ax, ax_steps):
        axis.grid(alpha=0.3)
    ax.axvline(np.log10(criterion), color="k", ls="--", lw=1, label=f"criterion {criterion:g}")
    ax.set(xlabel=f"$\\log_{{10}} \\|\\nabla L\\|$ at the end (exact zeros drawn at {np.log10(floor):.0f})",
           ylabel="runs", title="Final gradient norms")
    ax_steps.axhline(criterion, color="k", ls="--", lw=1)
    ax_steps.set(xlabel="Levenberg-Marquardt step", ylabel="median $\\|\\nabla L\\|$ over the runs",
                 title="Phase 2: median gradient norm per step")
    ax.legend(fontsize="small")
    ax_steps.legend(fontsize="small")
    return fig


def spectrum_and_tolerance(relative: np.ndarray, sweep, rel_tol: float, gap: tuple[float, float],
                           floor: float = 1e-20) -> Figure:
    """Pooled |lambda|/max|lambda| with the spectral gap, and saddles / median ratio against the tolerance (1-2c)."""
    fig, (ax, ax_tol) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    ax.hist(np.log10(np.clip(relative.ravel(), floor, None)), bins=np.arange(np.log10(floor), 0.51, 0.5), color="0.4")
    ax_tol.plot(np.log10(sweep["rel_tol"]), sweep["saddles"], color="tab:red", marker=".", label="saddles")
    ratio_axis = ax_tol.twinx()
    ratio_axis.plot(np.log10(sweep["rel_tol"]), sweep["median_ratio"], color="tab:blue", marker=".")
    ratio_axis.set_ylabel("median Hessian minimal ratio", color="tab:blue")
    for axis in (ax, ax_tol):
        axis.axvspan(*np.log10(gap), color="tab:green", alpha=0.15, label="widest gap of the spectra")
        axis.axvline(np.log10(rel_tol), color="k", ls="--", lw=1, label=f"tol = {rel_tol:g} max|$\\lambda$|")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    ax.set(xlabel=f"$\\log_{{10}}(|\\lambda| / \\max|\\lambda|)$ (exact zeros at {np.log10(floor):.0f})",
           ylabel="eigenvalues (all critical runs)", title="Hessian eigenvalue magnitudes")
    ax_tol.set(xlabel="$\\log_{10}$(relative tolerance)", ylabel="critical runs with an eigenvalue < -tol",
               title="The count of saddles against the tolerance")
    return fig


def minimal_ratio_panels(runs, criterion: float, title: str = "") -> Figure:
    """Both minimal ratios (Hessian, sampled) against the loss (1-2c): the fitted minima and saddles filled, the
    critical points at the constant fit hollow on their own line, stalled runs grey."""
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, layout="constrained")
    at_fit = runs["constant_fit"] & runs["kind"].isin(list(KIND_STYLES))
    for ax, column, name in ((axs[0], "ratio_hessian", "Hessian: fraction of eigenvalues > tol"),
                             (axs[1], "ratio_sampled", "sampled: fraction of nearby points with higher loss")):
        for kind, group in runs[~at_fit].groupby("kind"):
            style = KIND_STYLES.get(kind, STALLED_STYLE)
            label = kind if kind in KIND_STYLES else f"stalled, not critical ({kind.split(': ')[-1]})"
            ax.scatter(group["loss"], group[column], s=36, alpha=0.5, label=f"{label} ({len(group)})", **style)
        for kind, group in runs[at_fit].groupby("kind"):
            ax.scatter(group["loss"], group[column], s=90, facecolors="none", edgecolors=KIND_STYLES[kind]["color"],
                       marker=KIND_STYLES[kind]["marker"], label=f"{kind} at the constant fit ({len(group)})")
        if at_fit.any():
            ax.axvline(runs.loc[at_fit, "loss"].median(), color="k", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="training loss (MSE) at the final point", ylabel="minimal ratio", title=name)
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize="small", title=f"critical: $\\|\\nabla L\\|$ < {criterion:g}", title_fontsize="small")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Measures against a design variable and the generalisation gap (1-3a, 1-3b, 1-3d)
# ---------------------------------------------------------------------------------------------------------


def memorisation_growth(table, curves: Mapping[int, Sequence], threshold: float, title: str = "") -> Figure:
    """Epochs to memorise against the training-set size (log x, one dot per seed, mean line) and the
    random-label training accuracy per size (median over seeds, min-max band)."""
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    means = table.groupby("n_train")["epochs"].mean()
    ax.plot(means.index, means.to_numpy(), color="k", marker="o", label="mean over seeds")
    ax.scatter(table["n_train"], table["epochs"], color="tab:red", alpha=0.6, label="one seed")
    ax.set(xscale="log", xlabel="training images (random labels)", ylim=(0, None),
           ylabel=f"first epoch with training accuracy $\\geq$ {threshold:.0%}", title="Epochs to memorise")
    ax.set_xticks(means.index, [f"{n:,}" for n in means.index])
    ax.minorticks_off()
    for n, histories in curves.items():
        band(histories[0].epoch, np.array([h.train_acc for h in histories]), f"{n:,} images", ax=ax_acc,
             quantiles=(0, 1))
    ax_acc.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy (random labels)", ylim=(0, 1.02),
               title="Training accuracy per training-set size")
    for axis in (ax, ax_acc):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(title, fontsize="small")
    return fig


def corruption_sweep(table, chance_error: float, title: str = "") -> Figure:
    """Training and test error against the fraction of corrupted labels: one dot per seed, mean line (Zhang Fig. 1c)."""
    fig, ax = axes(figsize=(6.4, 4.2))
    for column, color, name in (("train_error", "tab:blue", "training error"), ("test_error", "tab:red", "test error")):
        means = table.groupby("fraction")[column].mean()
        ax.plot(means.index, means.to_numpy(), color=color, marker="o", label=f"{name}, mean over seeds")
        ax.scatter(table["fraction"], table[column], color=color, alpha=0.5, s=16)
    ax.axhline(chance_error, color="grey", linewidth=0.8, linestyle=":", label="chance error")
    ax.set(xlabel="label corruption (probability each training label is redrawn)", ylabel="error",
           ylim=(-0.02, 1.0), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _params_axes(axs, ylabels: Sequence[str], titles: Sequence[str], fitting: int | None) -> None:
    """Log parameter axis, labels, grid, legend and the size from which every seed fits the training set (1-3b)."""
    for ax, ylabel, title in zip(axs, ylabels, titles):
        if fitting is not None:
            ax.axvline(fitting, color="0.4", ls="--", lw=1, label="every seed fits the training set from here")
        ax.set(xscale="log", xlabel="number of parameters", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")


def params_vs_metrics(stats, fitting: int | None = None, title: str = "") -> Figure:
    """Training and test loss (log) and accuracy against the parameter count, mean and seed band (1-3b)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for split, color in SPLIT_COLORS.items():
        seed_band(stats, f"{split}_loss", split, ax_loss, color)
        seed_band(stats, f"{split}_acc", split, ax_acc, color)
    ax_loss.set_yscale("log")
    _params_axes((ax_loss, ax_acc), ("cross-entropy loss", "accuracy"),
                 ("Loss vs parameters", "Accuracy vs parameters"), fitting)
    fig.suptitle(title)
    return fig


def params_vs_gap(stats, fitting: int | None = None, title: str = "") -> Figure:
    """The generalisation gap in loss (test - train) and accuracy (train - test) against the parameter count (1-3b)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    seed_band(stats, "loss_gap", "test - train loss", ax_loss, "tab:purple")
    seed_band(stats, "acc_gap", "train - test accuracy", ax_acc, "tab:purple")
    for ax in (ax_loss, ax_acc):
        ax.axhline(0, color="k", lw=0.8)
    _params_axes((ax_loss, ax_acc), ("loss gap", "accuracy gap"), ("Gap in loss", "Gap in accuracy"), fitting)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Random and corrupted labels (1-3a)
# ---------------------------------------------------------------------------------------------------------

LABEL_COLORS = {"random labels": "tab:red", "true labels": "tab:blue"}


def _batch_size_axes(ax: Axes, ylabel: str, logy: bool) -> None:
    """Log2 batch-size axis, y label and scale, grid and legend (1-3d)."""
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size", ylabel=ylabel, yscale="log" if logy else "linear")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")


def batch_size_panels(stats, panels: Sequence[tuple[str, Mapping[str, str], bool]], title: str = "",
                      columns: int = 3) -> Figure:
    """One panel per (y label, {column: label}, log y): seed means with min-max bands against the batch size (1-3d)."""
    rows = math.ceil(len(panels) / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), layout="constrained", squeeze=False)
    for ax, (ylabel, series, logy) in zip(grid.flat, panels):
        for column, label in series.items():
            seed_band(stats, column, label, ax)
        _batch_size_axes(ax, ylabel, logy)
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def measures_vs_gap(runs, measures: Mapping[str, str], gaps: Mapping[str, str], rho, title: str = "") -> Figure:
    """Each measure (rows) against each gap (columns), one dot per model coloured by log2 batch size (1-3d).

    `rho` is a correlations table indexed by (measure label, gap label) with rho, low and high, shown in
    each panel's title.
    """
    fig, grid = plt.subplots(len(measures), len(gaps), figsize=(4.6 * len(gaps), 3.9 * len(measures)),
                             layout="constrained", squeeze=False)
    colour = np.log2(runs["batch_size"].to_numpy(float))
    for row, (column, label) in zip(grid, measures.items()):
        for ax, (gap, gap_label) in zip(row, gaps.items()):
            points = ax.scatter(runs[gap], runs[column], c=colour, cmap="viridis", s=28)
            r = rho.loc[(label, gap_label)]
            ax.set(xlabel=gap_label, ylabel=label,
                   title=f"Spearman {r['rho']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]")
            ax.grid(alpha=0.3)
    fig.colorbar(points, ax=grid, label="log2 batch size")
    fig.suptitle(title)
    return fig
