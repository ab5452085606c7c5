"""Tests of hw1utils.gradient_norm (1-2b) and hw1utils.checks: recorded steps, whole-data gradients, summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hw1utils import checks, gradient_norm, models, plots, train


@pytest.fixture
def regression():
    """A small MLP and 40 points of a smooth 1-D target."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 40).unsqueeze(1)
    return models.mlp(1, [8], 1), x, torch.sin(3 * x)


def test_hook_is_the_gradient_of_the_whole_data_mean_loss(regression):
    model, x, y = regression
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])).item()
    hook = gradient_norm.whole_data_gradient_hook("mse", x, y, chunk=16)  # chunks weighted by their size
    assert hook(0, model)["full_grad_norm"] == pytest.approx(expected, rel=1e-5)


def test_record_training_records_every_step_and_every_epoch_end(regression):
    model, x, y = regression
    history = gradient_norm.record_training(model, (x, y), loss="mse", epochs=3, lr=1e-2, batch_size=16,
                                            progress=False)
    assert len(history.step_loss) == len(history.step_grad_norm) == 3 * math.ceil(40 / 16)
    assert len(history.extra["full_grad_norm"]) == len(history.epoch) == 4


def test_full_batch_epoch_end_gradient_is_the_next_steps_gradient(regression):
    model, x, y = regression
    history = gradient_norm.record_training(model, (x, y), loss="mse", epochs=5, lr=1e-2, batch_size=None,
                                            progress=False)
    np.testing.assert_allclose(history.extra["full_grad_norm"][:5], history.step_grad_norm, rtol=1e-5)


def synthetic_history(steps_per_epoch: int) -> train.History:
    """A History with known per-step values: the gradient norm triples once, at step 3."""
    return train.History(epoch=[0, 1, 2], train_loss=[2.0, 1.0, 0.5], step_loss=[2.0, 1.5, 1.0, 0.8, 0.6, 0.5],
                         step_grad_norm=[1.0, 0.9, 0.8, 3.0, 2.0, 2.0], steps_per_epoch=steps_per_epoch,
                         extra={"full_grad_norm": [1.0, 1.5, 1.0]})


def test_step_summary_of_known_values():
    s = gradient_norm.step_summary(synthetic_history(steps_per_epoch=3))
    assert (s["first_loss"], s["peak_grad"], s["peak_iteration"], s["loss_at_peak"]) == (2.0, 3.0, 3, 0.8)
    assert s["end_loss"] == pytest.approx(0.8 / 3 + 0.6 / 3 + 0.5 / 3)
    rms = math.sqrt((9 + 4 + 4) / 3)
    assert s["end_grad_rms"] == pytest.approx(rms) and s["noise_share"] == pytest.approx(1 - (1 / rms) ** 2)
    assert s["tripling_steps"] == 1
    assert math.isnan(gradient_norm.step_summary(synthetic_history(steps_per_epoch=1))["noise_share"])


def test_the_end_is_the_last_percent_of_the_steps_and_at_least_one_epoch():
    assert gradient_norm.end_window(3000, 1) == 30 and gradient_norm.end_window(960, 32) == 32
    assert gradient_norm.end_window(50, 1) == 1
    full_batch = gradient_norm.step_summary(synthetic_history(steps_per_epoch=1))
    assert full_batch["end_grad"] == 2.0  # one step of six is more than 1%


def test_labelled_table_has_one_labelled_row_per_number():
    table = plots.labelled_table({"task": gradient_norm.step_summary(synthetic_history(1))}, gradient_norm.SUMMARY_ROWS)
    assert list(table.index) == list(gradient_norm.SUMMARY_ROWS.values())
    assert table.loc["steps where the gradient norm more than tripled", "task"] == "1"
    assert table.loc[gradient_norm.SUMMARY_ROWS["noise_share"], "task"] == "–"


def test_training_steps_figure_puts_epoch_ends_on_the_iteration_axis():
    fig = plots.training_steps(synthetic_history(steps_per_epoch=3))
    np.testing.assert_array_equal(fig.axes[1].get_lines()[-1].get_xdata(), [0, 3, 6])


def test_formatted_table_formats_only_the_named_columns():
    table = plots.formatted_table(pd.DataFrame({"a": [0.123456], "b": [7]}), {"a": "{:.2g}"})
    assert table.to_dict("list") == {"a": ["0.12"], "b": [7]}


def test_confirm_names_every_contradicted_sentence(capsys):
    checks.confirm({"the loss falls": True})
    assert "all 1 claims" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"contradicts the text:\n- the gradient shrinks\n- it spikes"):
        checks.confirm({"the loss falls": True, "the gradient shrinks": False, "it spikes": False})
