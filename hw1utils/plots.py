"""Plot helpers shared by the notebooks: each takes ax=None and returns the figure (never shows it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure


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
           xlabel: str = "epoch", ylabel: str = "", title: str = "") -> Figure:
    """One median-and-band line per named (runs x points) array, on shared axes."""
    fig, ax = axes(ax)
    for label, runs in series.items():
        band(x, runs, label, ax=ax)
    if logy:
        ax.set_yscale("log")
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


# ---------------------------------------------------------------------------------------------------------
# Weight trajectories, loss surfaces and per-step curves (1-2a, 1-2b)
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


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred mean over `window` neighbours (fewer at the ends), the same length as `values`."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(len(values))
    lo, hi = np.maximum(index - window // 2, 0), np.minimum(index + (window - 1) // 2 + 1, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)


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


def formatted_table(table, formats: dict[str, str]):
    """`table` with the named columns turned into strings by their format ("{:.3g}"), for a stable display."""
    return table.apply(lambda column: column.map(formats[column.name].format) if column.name in formats else column)


def labelled_table(summaries: Mapping[str, Mapping[str, float]], rows: Mapping[str, str]):
    """Summaries of several cases side by side: one row per key of `rows`, labelled by its value, .3g ('–' for nan)."""
    table = pd.DataFrame(summaries).loc[list(rows)].rename(index=rows)
    return table.map(lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}")


KIND_STYLES = {"minimum": dict(color="tab:blue", marker="o"), "saddle": dict(color="tab:red", marker="^")}
STALLED_STYLE = dict(color="0.6", marker="x")  # every stalled run, whatever its cause (1-2c)


def minimal_ratio_panels(runs, criterion: float, title: str = "") -> Figure:
    """Both minimal ratios (Hessian, sampled) against the loss: minima, saddles, stalled runs grey (1-2c)."""
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, layout="constrained")
    for ax, column, name in ((axs[0], "ratio_hessian", "Hessian: fraction of eigenvalues > tol"),
                             (axs[1], "ratio_sampled", "sampled: fraction of nearby points with higher loss")):
        for kind, group in runs.groupby("kind"):
            style = KIND_STYLES.get(kind, STALLED_STYLE)
            label = kind if kind in KIND_STYLES else f"stalled, not critical ({kind.split(': ')[-1]})"
            ax.scatter(group["loss"], group[column], s=36, alpha=0.5, label=f"{label} ({len(group)})", **style)
        ax.set(xscale="log", xlabel="training loss (MSE) at the final point", ylabel="minimal ratio", title=name)
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize="small", title=f"critical: $\\|\\nabla L\\|$ < {criterion:g}", title_fontsize="small")
    fig.suptitle(title)
    return fig


def final_grad_norms(runs, history: Mapping[int, Sequence[float]], criterion: float, floor: float = 1e-20) -> Figure:
    """Histogram of the final gradient norms per start epoch (log x, exact zeros at floor), and phase 2 per step."""
    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    bins = np.arange(np.log10(floor), 1.01, 0.5)
    for (epochs, group), color in zip(runs.groupby("start_epochs"), ("tab:purple", "tab:green", "tab:orange")):
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
