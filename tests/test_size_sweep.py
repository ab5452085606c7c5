"""The 1-3b sweep over model sizes: final metrics, the fitting size, regimes, trends, its plots."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from hw1utils import models, plots, size_sweep, train

matplotlib.use("Agg")


def tiny_data(n_train=96, n_test=40, seed=0):
    """Two-class 'images' of shape (1, 2, 4) whose label is the sign of one pixel."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, 2, 4, generator=generator)
    y = (x[:, 0, 0, 0] > 0).long()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def runs_table(train_acc_by_size, seeds=2):
    """Runs of sizes 10, 20, ... whose training accuracy per size is the given value for every seed."""
    rows = [{"parameters": 10 * (i + 1), "seed": s, "train_acc": acc}
            for i, acc in enumerate(train_acc_by_size) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_member_metrics_match_each_member_evaluated_alone():
    x, y, x_test, y_test = tiny_data()
    ensemble = train.fit_ensemble(lambda: models.mlp(8, [5], 2), (0, 1, 2), (x, y, x_test, y_test), epochs=3,
                                  lr=1e-2, batch_size=16, eval_every=0, progress=False, device=torch.device("cpu"))
    losses, accuracies = size_sweep.member_metrics(ensemble, x_test, y_test)
    for k in range(3):
        loss, accuracy = train.evaluate(ensemble.model(k), x_test, y_test)
        assert losses[k] == pytest.approx(loss, rel=1e-5) and accuracies[k] == pytest.approx(accuracy)
    assert len(set(losses.round(8))) == 3, "the members should differ"


def test_member_metrics_rejects_empty_or_unpaired_data():
    x, y, *_ = tiny_data()
    ensemble = train.fit_ensemble(lambda: models.mlp(8, [3], 2), (0, 1), (x, y), epochs=1, lr=1e-2,
                                  eval_every=0, progress=False, device=torch.device("cpu"))
    with pytest.raises(ValueError):
        size_sweep.member_metrics(ensemble, x[:0], y[:0])
    with pytest.raises(ValueError):
        size_sweep.member_metrics(ensemble, x, y[:-1])


def test_train_sizes_scores_every_width_and_seed():
    data = tiny_data()
    widths, seeds = [2, 4, 8], (0, 1)
    runs = size_sweep.train_sizes(lambda w: models.mlp(8, [w, w], 2), widths, seeds, data, epochs=2, lr=1e-2,
                                  lr_schedule="constant", batch_size=32, device=torch.device("cpu"))
    assert list(runs["width"]) == [w for w in widths for _ in seeds] and list(runs["seed"]) == list(seeds) * 3
    assert list(runs["parameters"].unique()) == [models.count_params(models.mlp(8, [w, w], 2)) for w in widths]
    assert np.allclose(runs["loss_gap"], runs["test_loss"] - runs["train_loss"])
    assert np.allclose(runs["acc_gap"], runs["train_acc"] - runs["test_acc"])
    stats = size_sweep.by_size(runs)
    assert list(stats.index) == sorted(runs["parameters"].unique())
    assert (stats.xs("min", axis=1, level=1) <= stats.xs("mean", axis=1, level=1) + 1e-12).all().all()


@pytest.mark.parametrize(("accuracies", "expected"), [
    ([0.9, 1.0, 0.9, 1.0], 40),  # a size that fits before an unfit one does not count
    ([1.0, 1.0, 1.0], 10),
    ([0.9, 0.99, 0.995], 30),  # the threshold itself fits
    ([1.0, 0.9], None),
])
def test_fitting_size_is_where_every_larger_model_fits(accuracies, expected):
    assert size_sweep.fitting_size(runs_table(accuracies), 0.995) == expected


def test_fitting_size_needs_every_seed():
    runs = runs_table([0.9, 1.0, 1.0])
    runs.loc[(runs["parameters"] == 20) & (runs["seed"] == 1), "train_acc"] = 0.98
    assert size_sweep.fitting_size(runs, 0.995) == 30


def test_fitting_size_rejects_a_threshold_outside_0_1():
    with pytest.raises(ValueError):
        size_sweep.fitting_size(runs_table([1.0]), 99.5)


def test_regimes_split_the_runs_at_the_fitting_size():
    runs = runs_table([0.9, 0.9, 1.0, 1.0])
    parts = size_sweep.regime_runs(runs, 30)
    assert list(parts) == list(size_sweep.REGIMES)
    assert parts["before the fit"]["parameters"].max() == 20 and parts["fitted"]["parameters"].min() == 30
    assert len(parts["before the fit"]) + len(parts["fitted"]) == len(parts["all sizes"]) == len(runs)
    nothing_fits = size_sweep.regime_runs(runs, None)
    assert nothing_fits["fitted"].empty and len(nothing_fits["before the fit"]) == len(runs)


def test_trends_match_spearman_and_skip_regimes_of_under_three_sizes():
    rng = np.random.default_rng(0)
    runs = runs_table([0.9] * 5 + [1.0] * 2, seeds=3)
    runs["up"] = runs["parameters"] + rng.normal(0, 5, len(runs))
    table = size_sweep.trends(runs, ["up"], 60, resamples=200, seed=0)
    whole = table.loc[("up", "all sizes")]
    assert whole["rho"] == pytest.approx(spearmanr(runs["parameters"], runs["up"]).statistic)
    assert whole["low"] <= whole["rho"] <= whole["high"] and whole["sizes"] == 7
    assert table.loc[("up", "before the fit"), "sizes"] == 5 and table.loc[("up", "before the fit"), "rho"] > 0.8
    assert table.loc[("up", "fitted"), "sizes"] == 2 and math.isnan(table.loc[("up", "fitted"), "rho"])


def test_sweep_plots_draw_every_series_and_the_fitting_line():
    runs = runs_table([0.5, 0.9, 1.0, 1.0], seeds=2)
    for metric in size_sweep.METRICS:
        runs[metric] = np.linspace(0.1, 0.9, len(runs))
    stats = size_sweep.by_size(runs)
    fig = plots.params_vs_metrics(stats, fitting=30, title="t")
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]  # train, test, the fitting line
    assert all(ax.get_xscale() == "log" for ax in fig.axes) and fig.axes[0].get_yscale() == "log"
    fig = plots.params_vs_gap(stats)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]  # the gap and the zero line
