"""Tests of the trajectory, loss-surface and per-step plot helpers in hw1utils.plots (1-2a, 1-2b)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from hw1utils import plots


@pytest.mark.parametrize("window", [4, 5])
def test_moving_average_matches_a_plain_loop(window):
    values = np.random.default_rng(0).normal(size=23)
    before, after = window // 2, (window - 1) // 2  # centred: 2 before and 1 after for window 4
    expected = [np.mean(values[max(0, i - before):i + after + 1]) for i in range(len(values))]
    np.testing.assert_allclose(plots.moving_average(values, window), expected, rtol=1e-12)
    np.testing.assert_allclose(plots.moving_average(values, 1), values)
    with pytest.raises(ValueError, match="window"):
        plots.moving_average(values, 0)


def test_step_curves_draws_both_panels_with_epoch_markers_at_epoch_iterations():
    fig = plots.step_curves(np.linspace(2, 0.1, 30), np.linspace(1, 3, 30), steps_per_epoch=10,
                            epochs=[0, 1, 2, 3], epoch_loss=[2, 1, 0.5, 0.1], epoch_grad_norm=[1, 2, 2.5, 3],
                            window=4)
    top, bottom = fig.axes
    assert top.get_yscale() == "log" and bottom.get_yscale() == "log"
    assert [len(ax.get_lines()) for ax in (top, bottom)] == [3, 3]
    np.testing.assert_array_equal(bottom.get_lines()[-1].get_xdata(), [0, 10, 20, 30])
    plt.close(fig)
    with pytest.raises(ValueError, match="differ in length"):
        plots.step_curves([1, 2], [1], steps_per_epoch=1)


def test_trajectory_scatter_and_loss_contours_draw_one_line_per_run_or_path():
    coords = np.arange(12, dtype=float).reshape(6, 2)
    fig = plots.trajectory_scatter(coords, np.array([0, 0, 0, 1, 1, 1]), np.linspace(1, 0.1, 6))
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["run 0", "run 1"]
    plt.close(fig)
    a, b = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), indexing="ij")
    fig = plots.loss_contours(a, b, 1 + a**2 + b**2, paths={"run 0": coords[:3] / 10})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "run 0" in labels and "centre" in labels
    plt.close(fig)


def test_trajectory_views_surface_pair_and_loss_cuts_draw_every_panel():
    coords, run = np.arange(12, dtype=float).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1])
    views = {"layer": (coords, [0.5, 0.2]), "whole model": (-coords, [0.4, 0.3])}
    metrics = {"loss": (np.linspace(1, 0.1, 6), True), "acc": (np.linspace(0, 1, 6), False)}
    fig = plots.trajectory_views(views, run, metrics)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["layer: loss", "whole model: loss", "layer: acc", "whole model: acc"]
    assert panels[1].get_xlabel() == "PC 1 (40.0% of variance)"
    plt.close(fig)
    a, b = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), indexing="ij")
    surface = type("Surface", (), {"a_grid": a, "b_grid": b, "losses": 1 + a**2 + b**2, "path": coords[:3] / 10})
    fig = plots.surface_pair(surface, surface, [0.8, 0.1], label="run 0")
    assert sum("run 0" in [line.get_label() for line in ax.get_lines()] for ax in fig.axes) == 2
    plt.close(fig)
    alphas = np.linspace(-1, 1, 5)
    cuts = {"random_alpha": alphas, "line_alpha": alphas, **{f"{k}_{s}": 1 + alphas**2 for k in ("random", "line")
                                                              for s in ("train", "test")}}
    fig = plots.loss_cuts(cuts)
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 4]  # the right panel adds the alpha = 0, 1 markers
    plt.close(fig)
