"""Tests of hw1utils.minimal_ratio_study: run classes, kink gaps, eigenvalue counts, spectral gap, tolerance sweep."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hw1utils import curvature, plots
from hw1utils import minimal_ratio_study as study
from hw1utils import weight_vector as wv


def test_stage_seeds_splits_the_runs_evenly():
    assert study.stage_seeds((10, 3000), 6) == {10: [0, 1, 2], 3000: [3, 4, 5]}
    assert study.stage_seeds((10, 3000), 4, first_seed=100) == {10: [100, 101], 3000: [102, 103]}
    with pytest.raises(ValueError, match="split evenly"):
        study.stage_seeds((10, 300, 3000), 10)


def test_classify_never_counts_a_run_above_the_criterion_as_critical():
    kinds = study.classify(np.array([1e-12, 1e-12, 1e-3, 1e-3]), np.array([0, 2, 0, 0]),
                           np.array([1.0, 1.0, 0.0, 1.0]), criterion=1e-8, pin_gap=1e-6)
    assert list(kinds) == ["minimum", "saddle", study.PINNED, study.FLAT]


def test_relu_gap_is_the_smallest_pre_activation_of_any_relu_unit():
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1))
    flat = torch.tensor([1.0, 2.0, -0.5, 0.25, 1.0, 1.0, 0.1, 3.0, 0.0])  # w1, b1, w2, b2, w3, b3
    x, before = torch.tensor([[0.5], [1.0]]), wv.flat_params(model).clone()
    # layer 1: (x - 0.5, 2x + 0.25) -> min |.| = 0 at x = 0.5; layer 2 pre-activation positive
    assert study.relu_gap(model, flat, x) == 0.0
    assert study.relu_gap(model, flat, x + 0.25) == pytest.approx(0.25)
    assert torch.equal(wv.flat_params(model), before)  # the model is untouched


def test_eigen_counts_and_the_spectral_gap():
    eigenvalues = torch.tensor([[-1.0, 1e-15, 2.0], [1e-17, 0.5, 1.0]], dtype=torch.float64)
    counts = study.eigen_counts(eigenvalues, 1e-10)
    assert counts.to_dict("list") == {"n_positive": [1, 2], "n_negative": [1, 0], "n_flat": [1, 1]}
    low, high = study.spectral_gap(study.relative_magnitudes(eigenvalues))
    assert low == pytest.approx(5e-16) and high == pytest.approx(0.5)
    sweep = study.tolerance_sweep(eigenvalues, [1e-18, 1e-10])
    assert list(sweep["saddles"]) == [1, 1] and sweep["median_ratio"].iloc[1] == pytest.approx(0.5)


def test_hessian_ratios_are_curvatures_minimal_ratio_per_run():
    eigenvalues = torch.tensor([[-1.0, 1e-14, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    ratios = study.hessian_ratios(eigenvalues, 1e-12)
    expected = [curvature.minimal_ratio(e, curvature.relative_tol(e, 1e-12)) for e in eigenvalues]
    assert ratios.tolist() == expected == [0.5, 1.0]


def _classified_runs() -> pd.DataFrame:
    """Six classified runs: two at the constant fit, three fitted critical points, one stalled."""
    return pd.DataFrame({"seed": range(6), "kind": ["minimum", "saddle", "minimum", "saddle", "minimum", study.PINNED],
                         "constant_fit": [True, True, False, False, False, False],
                         "loss": [0.086, 0.086, 0.01, 0.02, 0.03, 0.05], "index": [0, 1 / 33, 0, 2 / 33, 0, 0.1],
                         "ratio_hessian": [0.06, 0.06, 0.3, 0.2, 0.1, 0.5], "ratio_sampled": [1, 1, 1, 1, 0.9, 0.5]})


def test_nontrivial_points_leave_out_the_constant_fit_and_the_stalled_runs():
    runs = _classified_runs()
    assert study.nontrivial(runs)["seed"].tolist() == [2, 3, 4]
    table = study.constant_fit_table(runs).set_index("kind")
    assert table.loc["minimum", "runs"] == 1 and table.loc["saddle", "index_max"] == pytest.approx(1 / 33)


def test_rank_correlations_run_over_the_nontrivial_points_only():
    runs = _classified_runs()
    rho = study.rank_correlations(runs, 200, 0)
    assert rho["Hessian ratio vs loss"]["rho"] == pytest.approx(-1.0)  # 0.3, 0.2, 0.1 at losses 0.01, 0.02, 0.03
    assert rho["index vs loss"]["rho"] == pytest.approx(0.0)  # average ranks: the tied zeros flank the saddle
    few = study.rank_correlations(runs[runs["seed"] != 4], 200, 0)
    assert all(np.isnan(v["rho"]) for v in few.values())


def test_the_minimal_ratio_figure_draws_the_constant_fit_apart():
    fig = plots.minimal_ratio_panels(_classified_runs(), criterion=1e-8)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "minimum at the constant fit (1)" in labels and "saddle at the constant fit (1)" in labels
    assert "minimum (2)" in labels and "saddle (1)" in labels
    plt.close(fig)
