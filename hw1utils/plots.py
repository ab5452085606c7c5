"""Plot helpers shared by the notebooks: each takes ax=None and returns the figure (never shows it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
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
    ax.legend(lines, [line.get_label() for line in lines], fontsize="small", loc="best")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig
