"""Tests of hw1utils.batch_size_study (1-3d): batch-size checks, the training-loss stopping rule, the
correlation table, and the two plot helpers of 1-3d."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from hw1utils import batch_size_study as study
from hw1utils import models, plots, train, uncertainty
from hw1utils.weight_vector import flat_params

TARGET = 0.3


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable-ish 3-class data: 8 features, labels from a fixed random linear map."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    return x, (x @ torch.randn(8, 3, generator=generator)).argmax(1)


def _build() -> torch.nn.Module:
    """A small MLP 8 -> 16 -> 3."""
    return models.mlp(8, [16], 3)


def test_check_batch_sizes_accepts_full_batch_and_refuses_larger_or_unordered():
    assert study.check_batch_sizes((4, 16, 64), 64) == [4, 16, 64]
    with pytest.raises(ValueError, match="larger than the 64 training images.*full batch"):
        study.check_batch_sizes((4, 128), 64)
    with pytest.raises(ValueError, match="increasing"):
        study.check_batch_sizes((16, 4), 64)
    with pytest.raises(ValueError, match="positive integers"):
        study.check_batch_sizes((0, 4), 64)


def test_step_budget_and_check_interval_follow_their_closed_forms():
    assert study.step_budget(8, 8, 2400, 450) == 2400
    assert study.step_budget(32, 8, 2400, 450) == 1200  # 2400 * sqrt(8 / 32)
    assert study.step_budget(1024, 8, 2400, 450) == 450  # the floor
    assert study.steps_per_epoch(8, 1024) == 128 and study.steps_per_epoch(1000, 1024) == 2
    assert study.check_every(8, 1024, 16) == 1 and study.check_every(512, 1024, 16) == 8


def test_train_to_target_stops_each_model_at_its_first_check_below_the_target():
    x, y = _data()
    schedule, trained = study.train_to_target(_build, [8, 64], [0, 1], x, y, target=TARGET, lr=1e-2,
                                              steps_at_smallest=80, step_floor=48, check_steps=4)
    assert len(schedule) == 4 and set(trained) == {(8, 0), (8, 1), (64, 0), (64, 1)}
    for row in schedule.itertuples():
        every = study.check_every(row.batch_size, len(x), 4)
        # the same training without a hook, for as long as the budget: the losses at every check
        reference = train.fit_ensemble(_build, [0, 1], (x, y), epochs=row.budget_steps // study.steps_per_epoch(
            row.batch_size, len(x)), lr=1e-2, batch_size=row.batch_size, eval_every=every, progress=False)
        history = reference.histories[[0, 1].index(row.seed)]
        first = next(e for e, loss in zip(history.epoch, history.train_loss) if loss <= TARGET)
        assert row.epochs == first and row.steps == first * study.steps_per_epoch(row.batch_size, len(x))
        loss, _ = train.evaluate(trained[row.batch_size, row.seed], x, y)
        assert loss <= TARGET < history.train_loss[history.epoch.index(first) - 1]
        # and its weights are those of a plain training for exactly that many epochs
        again = train.fit_ensemble(_build, [0, 1], (x, y), epochs=first, lr=1e-2, batch_size=row.batch_size,
                                   eval_every=0, progress=False)
        torch.testing.assert_close(flat_params(trained[row.batch_size, row.seed]),
                                   again.flat()[[0, 1].index(row.seed)], rtol=1e-5, atol=1e-6)


def test_train_to_target_says_when_the_budget_is_too_small():
    x, y = _data()
    with pytest.raises(RuntimeError, match="stayed above 1e-06.*raise the step budget"):
        study.train_to_target(_build, [64], [0], x, y, target=1e-6, lr=1e-3, steps_at_smallest=3, step_floor=3,
                              check_steps=1)
    with pytest.raises(ValueError, match="target must be positive"):
        study.train_to_target(_build, [64], [0], x, y, target=0.0, lr=1e-3, steps_at_smallest=3, step_floor=3,
                              check_steps=1)


def test_generalisation_gaps_are_test_minus_train_loss_and_train_minus_test_accuracy():
    x, y = _data()
    model = _build()
    out = study.generalisation(model, x[:40], y[:40], x[40:], y[40:])
    assert math.isclose(out["loss_gap"], out["test_loss"] - out["train_loss"])
    assert math.isclose(out["acc_gap"], out["train_acc"] - out["test_acc"])
    assert math.isclose(out["test_acc"], float((model(x[40:]).argmax(1) == y[40:]).double().mean()))


def _runs() -> pd.DataFrame:
    """12 fake models: a measure rising with the gap, and one unrelated to it."""
    rng = np.random.default_rng(1)
    gap = np.linspace(0.1, 0.5, 12)
    return pd.DataFrame({"batch_size": np.repeat([8, 32, 128, 512], 3), "seed": np.tile([0, 1, 2], 4),
                         "loss_gap": gap, "rising": gap + 0.01 * rng.normal(size=12), "noise": rng.normal(size=12)})


def test_correlations_match_rank_correlation_and_claim_only_intervals_that_exclude_zero():
    runs = _runs()
    table = study.correlations(runs, {"rising": "rising", "noise": "noise"}, {"loss_gap": "gap"}, 500, 0)
    expected = uncertainty.rank_correlation(runs["rising"].to_numpy(), runs["loss_gap"].to_numpy(), 500, 0)
    assert table.loc[("rising", "gap"), "rho"] == pytest.approx(expected["rho"])
    assert table.loc[("rising", "gap"), "claim"] and table.loc[("rising", "gap"), "low"] > 0
    noise = table.loc[("noise", "gap")]
    assert noise["claim"] == bool(noise["low"] > 0 or noise["high"] < 0)
    assert table[["rho", "low", "high"]].dtypes.eq(float).all(), "numeric columns, so that .round(2) rounds"
    assert table.round(2).loc[("rising", "gap"), "rho"] == round(expected["rho"], 2)
    stats = study.by_batch_size(runs, ["rising"])
    assert list(stats.index) == [8, 32, 128, 512]
    assert stats.loc[8, ("rising", "max")] == runs["rising"][:3].max()


def test_batch_size_plots_draw_one_panel_per_spec_and_one_dot_per_model():
    runs = _runs()
    stats = study.by_batch_size(runs, ["rising", "noise"])
    fig = plots.batch_size_panels(stats, [("a", {"rising": "rising"}, True), ("b", {"noise": "noise"}, False)],
                                  columns=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 and visible[0].get_yscale() == "log" and visible[0].get_xscale() == "log"
    plt.close(fig)
    table = study.correlations(runs, {"rising": "rising"}, {"loss_gap": "gap"}, 200, 0)
    fig = plots.measures_vs_gap(runs, {"rising": "rising"}, {"loss_gap": "gap"}, table)
    assert len(fig.axes[0].collections[0].get_offsets()) == len(runs)
    assert fig.axes[0].get_title().startswith("Spearman +")
    plt.close(fig)


def test_sharpness_labels_and_panels_name_every_value_sharpness_measures_returns():
    labels = study.sharpness_labels((1e-3, 5e-4), 1e-4)
    assert list(labels) == ["keskar_1e-03", "keskar_5e-04", "course_estimate", "course_ascent"]
    panels = study.sharpness_panels((1e-3, 5e-4), 1e-4)
    plotted = {column for _, series, _ in panels for column in series}
    torch.manual_seed(0)
    x, y = _data()
    measured = study.sharpness_measures(_build(), x.double(), y, (1e-3, 5e-4), 1e-4, 2)
    assert plotted == set(measured) - {"lambda_max"} and set(labels) < plotted
    assert {c for _, series, _ in study.SENSITIVITY_PANELS for c in series} == {"jacobian", "grad_train", "grad_test"}


def test_paired_accuracy_matches_mcnemar_and_the_paired_bootstrap_per_seed():
    x, y = _data(200)
    trained = {}
    for b, s in ((8, 0), (8, 1), (64, 0), (64, 1)):
        torch.manual_seed(10 * b + s)
        trained[b, s] = _build()
    table = study.paired_accuracy(trained, x, y, 8, 64, [0, 1], 300, 0)
    for s in (0, 1):
        right_8, right_64 = ((trained[b, s](x).argmax(1) == y).numpy() for b in (8, 64))
        exact = uncertainty.mcnemar(right_8, right_64)
        interval = uncertainty.paired_bootstrap_difference(right_8, right_64, 300, 0)
        assert table.loc[s, "b"] == exact["b"] and table.loc[s, "p_value"] == pytest.approx(exact["p_value"])
        assert table.loc[s, "difference_low"] == pytest.approx(interval["low"])
        assert table.loc[s, "difference"] == pytest.approx(right_8.mean() - right_64.mean())


def test_within_batch_size_removes_what_the_batch_size_explains():
    # the measure is the batch size plus a within-size part that follows the gap exactly
    runs = pd.DataFrame({"batch_size": [8, 8, 8, 64, 64, 64], "seed": [0, 1, 2, 0, 1, 2],
                         "measure": [1.0, 1.1, 1.2, 5.0, 5.1, 5.2], "gap": [0.3, 0.2, 0.1, 0.6, 0.5, 0.4]})
    within = study.within_batch_size(runs)
    assert list(within.columns) == ["measure", "gap", "batch_size"]
    np.testing.assert_allclose(within.groupby(runs["batch_size"])[["measure", "gap"]].mean().to_numpy(), 0)
    assert within["measure"].tolist() == [-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]
    pooled = study.correlations(runs, {"measure": "m"}, {"gap": "g"}, 200, 0)
    inside = study.correlations(within, {"measure": "m"}, {"gap": "g"}, 200, 0)
    assert study.rho(pooled, "m", "g") > 0 and study.rho(inside, "m", "g") == pytest.approx(-1.0)


def test_resolved_needs_an_interval_that_excludes_zero_and_the_asked_sign():
    table = pd.DataFrame({"rho": [0.8, -0.7, 0.3], "claim": [True, True, False]},
                         index=pd.MultiIndex.from_tuples([("m", "up"), ("m", "down"), ("m", "flat")]))
    assert study.resolved(table, "m", "up") and study.resolved(table, "m", "up", +1)
    assert not study.resolved(table, "m", "up", -1) and study.resolved(table, "m", "down", -1)
    assert not study.resolved(table, "m", "flat") and not study.resolved(table, "m", "flat", +1)


def test_check_runs_names_what_is_wrong():
    runs = pd.DataFrame({"train_loss": [0.01, 0.009], "steps": [10, 20], "budget_steps": [10, 30],
                         "measure": [1.0, 2.0], "pacbayes_bracketed": [True, True]})
    study.check_runs(runs, 0.01)
    with pytest.raises(AssertionError, match="above the training-loss target"):
        study.check_runs(runs.assign(train_loss=[0.02, 0.009]), 0.01)
    with pytest.raises(AssertionError, match="past its step budget"):
        study.check_runs(runs.assign(steps=[11, 20]), 0.01)
    with pytest.raises(AssertionError, match="not finite"):
        study.check_runs(runs.assign(measure=[1.0, float("nan")]), 0.01)
    with pytest.raises(AssertionError, match="bracket"):
        study.check_runs(runs.assign(pacbayes_bracketed=[True, False]), 0.01)


def test_the_measures_of_a_model_are_finite_and_named():
    torch.manual_seed(0)
    x, y = _data()
    model = _build()
    sens = study.sensitivities(model, x, (x, y), (x, y))
    assert set(sens) == {"jacobian", "grad_train", "grad_test"} and sens["grad_train"] == sens["grad_test"] > 0
    sharp = study.sharpness_measures(model, x.double(), y, (1e-3,), 1e-4, 2)
    assert set(sharp) == {"keskar_1e-03", "lambda_max", "course_estimate", "course_first_order", "course_ascent"}
    assert all(math.isfinite(v) and v >= 0 for k, v in sharp.items() if k != "lambda_max")
    flat = study.flatness_measures(model, x, y)
    assert flat["param_norm"] == pytest.approx(flat_params(model).norm().item()) and flat["pacbayes_flatness"] > 0


def test_results_record_holds_every_run_the_lengths_and_the_correlations():
    runs = pd.DataFrame({"batch_size": [8, 8, 64], "seed": [0, 1, 0], "steps": [100, 120, 20], "epochs": [2, 3, 20],
                         "check_steps": [8, 8, 1], "budget_steps": [200, 200, 40], "train_loss": [0.1, 0.2, 0.3],
                         "pacbayes_bracketed": [True] * 3})
    table = pd.DataFrame({"rho": [0.5], "claim": [False]}, index=pd.MultiIndex.from_tuples([("m", "gap")]))
    record = study.results_record(runs, {"trends": table})
    assert len(record["runs"]) == 3 and "pacbayes_bracketed" not in record["runs"][0]
    assert record["by_batch_size"]["8"]["steps"] == 110 and len(record["length"]) == 2
    assert record["correlations"]["trends"]["m vs gap"]["rho"] == 0.5


def test_training_lengths_summarise_each_batch_size():
    runs = pd.DataFrame({"batch_size": [8, 8, 64], "steps": [100, 120, 20], "epochs": [2, 3, 20],
                         "check_steps": [8, 8, 1], "budget_steps": [200, 200, 40], "train_loss": [0.1, 0.2, 0.3]})
    table = study.training_lengths(runs).set_index("batch_size")
    assert table.loc[8, "steps_min"] == 100 and table.loc[8, "steps_max"] == 120
    assert table.loc[8, "epochs_mean"] == 2.5 and table.loc[64, "train_loss_max"] == 0.3


def test_by_batch_size_defaults_to_every_measure_and_rho_reads_one_row():
    runs = pd.DataFrame({"batch_size": [8, 8, 64], "seed": [0, 1, 0], "loss": [1.0, 3.0, 5.0]})
    stats = study.by_batch_size(runs)
    assert list(stats.columns.get_level_values(0).unique()) == ["loss"] and stats.loc[8, ("loss", "mean")] == 2.0
    table = pd.DataFrame({"rho": [0.25], "claim": [False]}, index=pd.MultiIndex.from_tuples([("m", "gap")]))
    assert study.rho(table, "m", "gap") == 0.25
