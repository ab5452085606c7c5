"""Equal-size model families, learning-rate search tables and run matrices of hw1utils.deep_shallow."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hw1utils import deep_shallow as ds
from hw1utils import train
from hw1utils.train import History


def _linear_count(widths: list[int]) -> int:
    """Parameters of an MLP with these layer widths (input, hidden..., output), by the closed form."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def test_equal_width_mlp_family_matches_closed_form():
    family = ds.mlp_family([1, 3, 5, 8], 660, (1,), 1, equal_widths=True)
    assert [a.hidden for a in family] == [(220,), (17,) * 3, (12,) * 5, (9,) * 8]
    counts = ds.check_same_size(family)
    assert counts == [_linear_count([1, *a.hidden, 1]) for a in family] == [661, 664, 661, 658]
    assert [a.name for a in family] == ["1 hidden", "3 hidden", "5 hidden", "8 hidden"]


def test_equal_widths_raise_when_no_width_fits():
    with pytest.raises(ValueError, match="within 1%"):
        ds.mlp_family([7], 600, (1,), 1, equal_widths=True)  # 6w^2+9w+1 jumps from 568 to 701


def test_mnist_mlp_family_within_one_percent():
    family = ds.mlp_family([1, 3, 6], 25_450, (1, 28, 28), 10)
    for arch in family:
        assert abs(_linear_count([784, *arch.hidden, 10]) - 25_450) <= 0.01 * 25_450
        assert len(arch.hidden) == int(arch.name.split()[0])
        assert arch.build()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_cnn_family_by_depth(shape):
    family = ds.cnn_family([2, 4], 6_000, shape)
    assert [a.name for a in family] == ["2 conv", "4 conv"]
    for arch in family:
        assert len(arch.channels) == int(arch.name.split()[0]) and arch.hidden == ()
        assert abs(arch.params - 6_000) <= 60
        assert arch.build()(torch.zeros(2, *shape)).shape == (2, 10)
    table = ds.family_table(family)
    assert list(table.index) == ["2 conv", "4 conv"]
    assert table.loc["4 conv", "layers (widths)"].startswith("conv " + "-".join(map(str, family[1].channels)))
    assert table.loc["4 conv", "in convolutions"] > 0.9
    assert table.loc["4 conv", "parameters"] == family[1].params


def test_check_same_size_rejects_unequal():
    family = [ds.Architecture("a", (1,), (10,), 1), ds.Architecture("b", (1,), (20,), 1)]
    with pytest.raises(ValueError, match="differ by more than 1%"):
        ds.check_same_size(family)


def test_build_is_fresh_and_seeded():
    arch = ds.Architecture("x", (1,), (5, 5), 1)
    torch.manual_seed(3)
    first = arch.build()
    torch.manual_seed(3)
    again = arch.build()
    torch.manual_seed(3)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 1))
    for a, b, c in zip(first.parameters(), again.parameters(), reference.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert first is not again


def test_lr_grid_is_lr_major():
    lrs, seeds = ds.lr_grid([1e-3, 1e-2], [0, 1, 2])
    assert lrs == [1e-3] * 3 + [1e-2] * 3
    assert seeds == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="at least one"):
        ds.lr_grid([], [0])


def _history(losses: list[float]) -> History:
    """A History with these training losses at epochs 0, 1, 2, ..."""
    return History(epoch=list(range(len(losses))), train_loss=list(losses))


def test_tail_loss_is_geometric_mean_of_last_evaluations():
    h = _history([100.0, 8.0, 4.0, 1.0, 2.0, 4.0])  # epoch 0 is left out: 5 evaluations remain
    assert ds.tail_loss(h, 0.4) == pytest.approx(math.sqrt(2.0 * 4.0))
    assert ds.tail_loss(h, 0.01) == pytest.approx(4.0)
    assert ds.tail_loss(h, 1.0) == pytest.approx((8 * 4 * 1 * 2 * 4) ** 0.2)
    assert ds.tail_loss(_history([3.0]), 0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="fraction"):
        ds.tail_loss(h, 0)


def test_lr_search_table_medians_and_choice():
    member_lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    finals = [1.0, 9.0, 0.5, 2.0, 3.0, 4.0]  # median 1.0 at lr 0.1 beats median 3.0 at lr 0.01
    table = ds.lr_search_table([_history([10.0, f]) for f in finals], member_lrs, fraction=1.0)
    assert list(table.index) == [0.01, 0.1]
    assert table.loc[0.1, "median"] == pytest.approx(1.0)
    assert table.loc[0.01, "median"] == pytest.approx(3.0)
    assert (table.loc[0.1, "min"], table.loc[0.1, "max"]) == pytest.approx((0.5, 9.0))
    assert ds.best_lr(table) == 0.1
    tie = ds.lr_search_table([_history([1.0, 2.0]), _history([1.0, 2.0])], [0.3, 0.03], fraction=1.0)
    assert ds.best_lr(tie) == 0.03
    with pytest.raises(ValueError, match="one per member"):
        ds.lr_search_table([_history([1.0])], [0.1, 0.2])


def test_runs_pads_and_median_member():
    hs = [_history([5.0, 3.0, 1.0]), _history([5.0, 2.0]), _history([5.0, 4.0, 3.0])]
    epochs, values = ds.runs(hs)
    np.testing.assert_array_equal(epochs, [0, 1, 2])
    np.testing.assert_array_equal(values, [[5, 3, 1], [5, 2, np.nan], [5, 4, 3]])
    assert ds.median_member([1.0, 2.0, 3.0]) == 1
    assert ds.median_member([5.0, 0.1, 9.0, 2.0]) == 3  # lower middle of 0.1, 2, 5, 9
    with pytest.raises(ValueError, match="no histories"):
        ds.runs([])
    with pytest.raises(ValueError, match="no per-evaluation list"):
        ds.runs(hs, "train_accuracy")
    with pytest.raises(ValueError, match="no scores"):
        ds.median_member([])


def _sine_problem():
    """A float64 8-unit MLP builder, sin(3x) on 32 points and the fit keywords of the tuning tests."""
    x = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(1)
    arch = ds.Architecture("t", (1,), (8,), 1)

    def build() -> nn.Module:
        """The test MLP in float64."""
        return arch.build().double()

    return build, (x, torch.sin(3 * x)), dict(batch_size=None, loss="mse", progress=False, device=torch.device("cpu"))


def test_tune_and_train_grows_the_grid_and_reruns_the_choice():
    build, data, kw = _sine_problem()
    # 60 steps on this problem: tail loss falls from lr 1e-4 to 0.1 and rises again at 0.3 (checked below)
    tuned = ds.tune_and_train(build, data, lrs=[1e-4, 3e-2], search_seeds=[10, 11], seeds=[0, 1], search_epochs=60,
                              max_epochs=80, tail_fraction=0.2, **kw)
    assert list(tuned.search.index) == [1e-4, 3e-2, 0.1, 0.3]  # 3e-2 was at the edge, then 0.1
    assert list(tuned.search["added"]) == [False, False, True, True]
    assert tuned.lr == 0.1 == tuned.search["median"].idxmin()
    reference = train.fit_ensemble(build, [0, 1], data, epochs=80, lr=0.1, **kw)
    for got, want in zip(tuned.ensemble.histories, reference.histories):
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-12)
    lrs, seeds = ds.lr_grid([1e-4, 3e-2, 0.1, 0.3], [10, 11])  # the whole grid in one ensemble: the same medians
    searched = train.fit_ensemble(build, seeds, data, epochs=60, lr=lrs, **kw)
    tails = np.array([ds.tail_loss(h, 0.2) for h in searched.histories]).reshape(4, 2)
    np.testing.assert_allclose(tuned.search["median"], np.median(tails, axis=1), rtol=1e-9)
    with pytest.raises(RuntimeError, match="0.1 is still the largest"):
        ds.search_lr(build, data, lrs=[1e-4, 3e-2], seeds=[10, 11], epochs=60, max_extensions=1,
                     tail_fraction=0.2, **kw)
    with pytest.raises(ValueError, match="overlap"):
        ds.tune_and_train(build, data, lrs=[1e-2, 0.1], search_seeds=[0], seeds=[0, 1], search_epochs=1,
                          max_epochs=1, **kw)


def test_ladder_steps():
    assert [ds.ladder_step(lr, 1) for lr in (1e-3, 3e-3, 1e-2, 3e-2)] == [3e-3, 1e-2, 3e-2, 0.1]
    assert [ds.ladder_step(lr, -1) for lr in (1e-3, 3e-3, 1.0)] == [3e-4, 1e-3, 0.3]
    assert [ds.ladder_step(lr, 1, per_decade=3) for lr in (1.0, 2.0, 5.0)] == [2.0, 5.0, 10.0]
    assert (ds.ladder_step(0.05, 1), ds.ladder_step(0.05, -1)) == (0.1, 0.01)  # off the ladder: still beyond it
    for bad, match in (((1e-3, 0), "direction"), ((1e-3, 1, 4), "per_decade"), ((0.0, 1), "positive")):
        with pytest.raises(ValueError, match=match):
            ds.ladder_step(*bad)


def test_search_extends_downwards_training_only_the_new_rate(monkeypatch):
    calls = []

    def fake_fit(build, seeds, data, *, epochs, lr, cache=None, **kw):
        """Histories whose final loss is smallest at lr 0.01 (a parabola in log lr), nudged by the seed."""
        calls.append(list(lr))
        return SimpleNamespace(histories=[_history([10.0, (math.log10(r) + 2) ** 2 + 1 + 1e-3 * s])
                                          for r, s in zip(lr, seeds)])

    monkeypatch.setattr(ds, "fit_ensemble", fake_fit)
    table = ds.search_lr(None, None, lrs=[1.0, 0.3], seeds=[0, 1], epochs=5, max_extensions=4, tail_fraction=1.0)
    assert calls == [[0.3, 0.3, 1.0, 1.0], [0.1, 0.1], [0.03, 0.03], [0.01, 0.01], [0.003, 0.003]]
    assert ds.best_lr(table) == 0.01 and list(table.index) == [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    assert list(table["added"]) == [True, True, True, True, False, False]
    with pytest.raises(RuntimeError, match="0.01 is still the smallest"):
        ds.search_lr(None, None, lrs=[1.0, 0.3], seeds=[0], epochs=5, max_extensions=3, tail_fraction=1.0)
    with pytest.raises(ValueError, match="two distinct"):
        ds.search_lr(None, None, lrs=[0.1, 0.1], seeds=[0], epochs=5)


def test_constant_fit_loss_is_the_least_constant_mse():
    y = np.array([0.0, 1.0, 5.0, 2.0])
    best = ds.constant_fit_loss(y)
    assert best == pytest.approx(np.var(y))
    assert all(np.mean((y - c) ** 2) > best for c in (y.mean() - 0.1, y.mean() + 0.1, 0.0))


def _model_fit(final: list[float], lr: float = 0.01, threshold: float = 1.0) -> ds.ModelFit:
    """A ModelFit with these per-seed final losses (flat curves, two evaluations)."""
    final = np.array(final)
    search = pd.DataFrame({"median": [2.0, 1.0, 3.0], "min": 0.0, "max": 9.0, "chosen": [False, True, False],
                           "added": [False, False, True]}, index=[lr / 3, lr, lr * 3])
    return ds.ModelFit(search, lr, np.array([0, 50]), np.stack([final, final], axis=1), final, final > threshold,
                       ds.median_member(final), np.zeros(3))


def test_depth_comparison_verdicts_and_tables():
    fit = ds.FunctionFit(1.0, 1.0, np.zeros(3), np.zeros(3), {
        "1 hidden": _model_fit([5.0, 6.0, 7.0, 8.0]), "3 hidden": _model_fit([1.0, 2.0, 3.0, 9.0]),
        "6 hidden": _model_fit([0.1, 0.2, 0.3, 0.4])})
    table = ds.depth_comparison({"f": fit}, resamples=300)
    assert list(table.index) == [("f", "3 hidden vs 1 hidden"), ("f", "6 hidden vs 1 hidden"),
                                 ("f", "6 hidden vs 3 hidden")]
    assert table.loc[("f", "3 hidden vs 1 hidden"), "fraction"] == pytest.approx(12 / 16)
    assert table.loc[("f", "6 hidden vs 1 hidden"), "verdict"] == "6 hidden lower"  # every pair: interval [1, 1]
    reverse = ds.FunctionFit(1.0, 1.0, np.zeros(3), np.zeros(3), {"1 hidden": fit.models["6 hidden"],
                                                                  "6 hidden": fit.models["1 hidden"]})
    assert ds.depth_comparison({"f": reverse}, resamples=300)["verdict"].tolist() == ["1 hidden lower"]
    same = ds.FunctionFit(1.0, 1.0, np.zeros(3), np.zeros(3), {"a": _model_fit([1, 3]), "b": _model_fit([2, 4])})
    assert ds.depth_comparison({"f": same}, resamples=300)["verdict"].tolist() == ["not separated"]
    finals = ds.final_table({"f": fit}, max_epochs=50)
    assert finals.loc[("f", "3 hidden"), "failed seeds"] == "3 of 4"  # 2, 3 and 9 are above the threshold 1
    assert finals.loc[("f", "6 hidden"), "stopped by"] == "cap" and finals.loc[("f", "1 hidden"), "epochs"] == 50
    overview = ds.search_overview({"f": fit})
    assert overview.loc[("f", "1 hidden")].tolist() == ["2.00e+00", "1.00e+00 *", "3.00e+00 +"]


def test_fit_function_flags_failures_and_draws_the_median_seed():
    _, _, kw = _sine_problem()
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    y = torch.sin(3 * x)
    family = [ds.Architecture("a", (1,), (8,), 1), ds.Architecture("b", (1,), (3, 3), 1)]
    fit = ds.fit_function(family, (x, y), (x, y), fail_fraction=0.5, tail_fraction=0.2, lrs=[1e-3, 1e-2, 3e-2],
                          search_seeds=[10], seeds=[0, 1, 2], search_epochs=20, max_epochs=30, **kw)
    assert fit.constant_loss == pytest.approx(float(torch.var(y, unbiased=False)))
    assert fit.threshold == pytest.approx(0.5 * fit.constant_loss)
    for arch in family:
        m = fit.models[arch.name]
        assert list(m.failed) == list(m.final > fit.threshold) and m.loss.shape == (3, len(m.epoch))
        assert m.shown == ds.median_member(m.final)
        # drawn at the training inputs, the shown seed's prediction reproduces its last recorded loss
        assert np.mean((m.prediction - y.flatten().numpy()) ** 2) == pytest.approx(m.loss[m.shown, -1], rel=1e-5)
        assert m.to_dict()["n_failed"] == int(m.failed.sum()) and m.to_dict()["grid"] == list(m.search.index)
    with pytest.raises(ValueError, match="fail_fraction"):
        ds.fit_function(family, (x, y), (x, y), fail_fraction=0.0, lrs=[1e-3, 1e-2], search_seeds=[1], seeds=[0],
                        search_epochs=1, max_epochs=1, **kw)
