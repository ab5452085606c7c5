"""Tests of hw1utils.interpolation against hand-blended state dicts and ordinary eval-mode forward passes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_classifiers import _assert_state_equal, _data, _net, _snapshot
from torch import nn

from hw1utils import interpolation


def _bn_net(seed: int) -> nn.Sequential:
    """A tiny float64 MLP with batch norm and non-trivial running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(seed + 1)
    return net


# --------------------------------------------------------------------------------------------- interpolate


def test_interpolate_endpoints_reproduce_models_exactly_and_leave_inputs_unchanged():
    a, b = _net(0), _net(1)
    saved_a, saved_b = _snapshot(a), _snapshot(b)
    x, _ = _data()
    start, end = interpolation.interpolate(a, b, 0.0), interpolation.interpolate(a, b, 1.0)
    assert start is not a and end is not b
    assert torch.equal(start(x), a(x)) and torch.equal(end(x), b(x))
    _assert_state_equal(a, saved_a)
    _assert_state_equal(b, saved_b)


def test_interpolate_midpoint_equals_hand_average_including_buffers():
    a, b = _bn_net(0), _bn_net(1)
    mixed = interpolation.interpolate(a, b, 0.5)
    state_a, state_b = a.state_dict(), b.state_dict()
    for name, value in mixed.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (state_a[name] + state_b[name]) / 2, rtol=1e-15, atol=0)
        else:  # num_batches_tracked is an integer count: kept from model_a
            assert torch.equal(value, state_a[name])
    assert not torch.equal(state_a["1.running_mean"], state_b["1.running_mean"])


def test_interpolate_outside_unit_interval_extrapolates():
    a, b = _net(0), _net(1)
    beyond = interpolation.interpolate(a, b, 1.5)
    for pa, pb, p in zip(a.parameters(), b.parameters(), beyond.parameters(), strict=True):
        torch.testing.assert_close(p, pb + 0.5 * (pb - pa))


def test_interpolate_rejects_same_object_and_different_architectures():
    a = _net(0)
    x, y = _data()
    with pytest.raises(ValueError, match="same object"):
        interpolation.interpolate(a, a, 0.5)
    with pytest.raises(ValueError, match="different architectures"):
        interpolation.interpolate(a, _net(1, hidden=7), 0.5)
    with pytest.raises(ValueError, match="same object"):
        interpolation.interpolation_curve(a, a, [0.0], x, y)


# ------------------------------------------------------------------------------------- interpolation_curve


def _hand_loss_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Cross-entropy and accuracy by an ordinary eval-mode forward pass."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def _hand_blend(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """(1 - alpha) a + alpha b, written out on a copy of a."""
    mixed = copy.deepcopy(a)
    state_b = b.state_dict()
    mixed.load_state_dict({k: (1 - alpha) * v + alpha * state_b[k] if v.is_floating_point() else v
                           for k, v in a.state_dict().items()})
    return mixed


@pytest.mark.parametrize("build", [_net, _bn_net])
def test_interpolation_curve_matches_hand_evaluation(build):
    a, b = build(0), build(1)
    saved_a = _snapshot(a)
    x, y = _data(53)
    alphas = [0.0, 1.0, 0.5, -0.5, 1.7]
    curve = interpolation.interpolation_curve(a, b, alphas, x, y, batch_size=8)
    assert set(curve) == {"alpha", "loss", "accuracy"}
    np.testing.assert_array_equal(curve["alpha"], alphas)
    models = [a, b] + [_hand_blend(a, b, alpha) for alpha in alphas[2:]]
    for k, model in enumerate(models):
        loss, accuracy = _hand_loss_accuracy(model, x, y)
        assert curve["loss"][k] == pytest.approx(loss, rel=1e-12)
        assert curve["accuracy"][k] == pytest.approx(accuracy, abs=1e-12)
    assert a.training  # the caller's mode is left alone
    _assert_state_equal(a, saved_a)


# ------------------------------------------------------------------------------ endpoints and line scales


def test_endpoint_summary_matches_hand_losses_and_the_schedule_row():
    x, y = _data(64)
    model = _net(0, hidden=8)
    summary = interpolation.endpoint_summary(model, {"epochs": 3, "steps": 24, "batch_size": 8}, (x, y, x[:16], y[:16]))
    loss, accuracy = _hand_loss_accuracy(model, x, y)
    test_loss, test_accuracy = _hand_loss_accuracy(model, x[:16], y[:16])
    assert summary["epochs"] == 3 and summary["steps"] == 24
    assert summary["train_loss"] == pytest.approx(loss, rel=1e-5) and summary["train_acc"] == pytest.approx(accuracy)
    assert summary["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert summary["test_acc"] == pytest.approx(test_accuracy)
    assert summary["weight_norm"] == pytest.approx(torch.cat([p.flatten() for p in model.parameters()]).norm().item())


def test_line_scales_match_hand_norms():
    a, b = _net(0), _net(1)
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b)]
    scales = interpolation.line_scales(a, b)
    assert scales["norm_a"] == pytest.approx(flat[0].norm().item())
    assert scales["length"] == pytest.approx((flat[1] - flat[0]).norm().item())
    assert scales["length_per_norm_b"] == pytest.approx(scales["length"] / flat[1].norm().item())


def test_per_example_scores_match_an_ordinary_forward_pass_and_leave_the_model_alone():
    model, (x, y) = _net(2), _data(37)
    saved = _snapshot(model)
    scores = interpolation.per_example_scores(model, x, y, batch_size=10)
    logits = model(x).detach()
    np.testing.assert_allclose(scores["loss"], F.cross_entropy(logits, y, reduction="none").numpy(), rtol=1e-12)
    np.testing.assert_array_equal(scores["correct"], (logits.argmax(1) == y).numpy())
    assert model.training
    _assert_state_equal(model, saved)


def test_agreement_at_compares_the_blended_models_predictions():
    a, b = _net(0), _net(1)
    x, _ = _data(60)
    prediction_b = b(x).argmax(1).numpy()
    assert interpolation.agreement_at(a, b, 1.0, x, prediction_b) == 1.0
    blended = interpolation.interpolate(a, b, 2.0)(x).argmax(1).numpy()
    assert interpolation.agreement_at(a, b, 2.0, x, prediction_b) == pytest.approx((blended == prediction_b).mean())


def test_raw_view_reads_the_norm_the_length_and_the_loss_past_each_end():
    a, b = _net(0), _net(1)
    x, y = _data(40)
    view = interpolation.raw_view(a, b, 0.5, x, y)
    curve = interpolation.interpolation_curve(a, b, [-0.5, 1.5], x, y)
    assert (view["loss_beyond_a"], view["loss_beyond_b"]) == pytest.approx(tuple(curve["loss"]))
    assert view["length"] == pytest.approx(interpolation.line_scales(a, b)["length"])
    labels = interpolation.line_labels(0.5, (-1.0, 2.0))
    assert set(view) <= set(labels) and labels["loss_beyond_b"] == "train loss at α = 1.5"


def test_line_summary_reads_the_ends_the_peak_and_the_points_beyond():
    alpha = np.linspace(-1, 2, 13)  # 0.25 apart
    loss = 1 - (alpha - 0.5) ** 2 + 5 * (alpha < 0) + 3 * (alpha > 1)  # peak 1 at alpha 0.5
    train_curve = {"alpha": alpha, "loss": loss, "accuracy": np.where(alpha == 0.25, 0.8, 0.9)}
    test_curve = {"alpha": alpha, "loss": loss, "accuracy": np.linspace(0.1, 0.7, 13)}
    out = interpolation.line_summary(train_curve, test_curve, outside=0.5)
    assert out["train_loss_a"] == out["train_loss_b"] == 0.75 and out["peak_train_loss"] == 1.0
    assert out["peak_alpha"] == 0.5 and out["peak_over_higher_end"] == pytest.approx(4 / 3)
    assert out["train_acc_drop"] == pytest.approx(0.1)
    assert out["loss_beyond_a"] == 5 and out["loss_beyond_b"] == 3  # 1 - 1 plus the step
    assert (out["test_acc_first"], out["test_acc_last"]) == (0.1, 0.7)
    with pytest.raises(ValueError, match="not on the grid"):
        interpolation.line_summary(train_curve, test_curve, outside=0.3)


# ------------------------------------------------------------------------- scale-invariant flatness radius


def test_direction_profiles_start_at_the_model_and_ignore_a_function_preserving_rescaling():
    from hw1utils import sharpness

    model, (x, y) = _net(0), _data(40)
    steps = [-0.5, -0.1, 0.0, 0.2, 0.7]
    profiles = interpolation.direction_profiles(model, x, y, steps, seeds=[0, 1])
    assert profiles.shape == (2, 5)
    assert profiles[:, 2] == pytest.approx([_hand_loss_accuracy(model, x, y)[0]] * 2, rel=1e-12)
    rescaled = sharpness.rescale_relu_layers(model, 7.0)  # the same function (Dinh et al. 2017)
    np.testing.assert_allclose(interpolation.direction_profiles(rescaled, x, y, steps, seeds=[0, 1]), profiles,
                               rtol=1e-10)


def test_direction_profiles_match_hand_perturbed_weights():
    from hw1utils import landscape
    from hw1utils.weight_vector import flat_params, set_flat_params

    model, (x, y) = _net(1), _data(30)
    direction = landscape.filter_normalized_direction(model, seed=4)
    moved = copy.deepcopy(model)
    set_flat_params(moved, flat_params(model).detach() + 0.3 * direction)
    profile = interpolation.direction_profiles(model, x, y, [0.0, 0.3], seeds=[4])
    assert profile[0, 1] == pytest.approx(_hand_loss_accuracy(moved, x, y)[0], rel=1e-12)


def test_flatness_radius_is_exact_on_piecewise_linear_profiles_and_close_on_quadratics():
    t = np.linspace(-1, 1, 41)
    linear = np.stack([0.01 + np.where(t > 0, 2.0, 0.5) * np.abs(t), 0.2 + 4.0 * np.abs(t)])
    radii = interpolation.flatness_radius(t, linear, rise=0.1)  # rays: +0, +1, -0, -1
    np.testing.assert_allclose(radii, [0.05, 0.025, 0.2, 0.025], rtol=1e-12)
    fine = np.linspace(-1, 1, 2001)
    quadratic = interpolation.flatness_radius(fine, 3.0 * fine[None] ** 2, rise=0.12)
    np.testing.assert_allclose(quadratic, [0.2, 0.2], rtol=1e-4)
    assert np.isnan(interpolation.flatness_radius(t, 0.01 * np.abs(t)[None], rise=0.1)).all()
    with pytest.raises(ValueError, match="containing 0"):
        interpolation.flatness_radius(np.linspace(0.1, 1, 5), np.zeros((1, 5)), rise=0.1)
    with pytest.raises(ValueError, match="rise must be"):
        interpolation.flatness_radius(t, linear, rise=0.0)


def test_radius_ratio_is_the_geometric_mean_ratio_with_a_paired_interval():
    b = np.array([0.1, 0.2, 0.4, 0.3])
    out = interpolation.radius_ratio(2 * b, b, resamples=200, seed=0)
    assert out == pytest.approx({"ratio": 2.0, "low": 2.0, "high": 2.0})
    mixed = interpolation.radius_ratio(np.array([0.1, 0.4, 0.2, 0.2]), b, resamples=200, seed=0)
    assert mixed["low"] < mixed["ratio"] < mixed["high"]
    with pytest.raises(ValueError, match="positive and finite"):
        interpolation.radius_ratio(np.array([np.nan, 1, 1, 1]), b, resamples=200, seed=0)
    with pytest.raises(ValueError, match="paired"):
        interpolation.radius_ratio(b[:3], b, resamples=200, seed=0)


def test_radius_ratio_over_training_seeds_resamples_the_seeds_as_well_as_the_rays():
    # seed 0's pair differs by a factor of 2 on every ray, seed 1's not at all: the rays alone show no spread,
    # the seeds span the whole range between 1 and 2
    b = np.array([[0.1, 0.2, 0.4], [0.3, 0.3, 0.2]])
    out = interpolation.radius_ratio(b * np.array([[2.0], [1.0]]), b, resamples=2000, seed=0)
    assert out["ratio"] == pytest.approx(np.sqrt(2))
    assert out["low"] == pytest.approx(1.0) and out["high"] == pytest.approx(2.0)


def test_the_two_plot_functions_draw_on_log_axes():
    import matplotlib.pyplot as plt

    from hw1utils import plots

    alpha = np.linspace(-1, 2, 7)
    curve = {"alpha": alpha, "loss": np.exp(alpha), "accuracy": np.full(7, 0.9)}
    fig = plots.interpolation_line(curve, curve, ("one", "two"), title="t")
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].get_lines()) == 4  # 2 losses, 2 end markers
    steps = np.array([-1.0, 0.0, 1.0])
    fig2 = plots.filter_normalized_profiles(steps, {"m": np.array([[2.0, 1.0, 3.0], [2.5, 1.0, 2.0]])}, rise=0.1)
    assert fig2.axes[0].get_yscale() == "log"
    plt.close("all")


def test_alpha_grid_puts_both_models_on_it_or_names_the_rule():
    grid = interpolation.alpha_grid((-1.0, 2.0), 61)
    assert grid[20] == 0.0 and np.isclose(grid[40], 1.0) and len(grid) == 61
    with pytest.raises(ValueError, match=r"N_ALPHAS = 60 .* N_ALPHAS - 1 must be a multiple of 3 \(e.g. 61\)"):
        interpolation.alpha_grid((-1.0, 2.0), 60)
    with pytest.raises(ValueError, match="ALPHA_RANGE must contain"):
        interpolation.alpha_grid((0.5, 2.0), 61)
