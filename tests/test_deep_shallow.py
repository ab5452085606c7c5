"""Equal-size model families, learning-rate search tables and run matrices of hw1utils.deep_shallow."""

from __future__ import annotations

import math

import numpy as np
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
def test_cnn_family_counts_by_hand(shape):
    channels = {"shallow": [16], "deep": [8, 16, 16]}
    family = ds.cnn_family(channels, 6_000, shape)
    for arch in family:
        convs = [shape[0], *arch.channels]
        conv_params = sum(9 * a * b + b for a, b in zip(convs[:-1], convs[1:]))
        head = _linear_count([4 * arch.channels[-1], *arch.hidden, 10])  # every cnn ends on a 2x2 map
        assert arch.params == conv_params + head
        assert abs(arch.params - 6_000) <= 60
        assert arch.build()(torch.zeros(2, *shape)).shape == (2, 10)
    table = ds.family_table(family)
    assert list(table.index) == ["shallow", "deep"]
    assert table.loc["deep", "conv layers"] == 3 and table.loc["deep", "channels"] == "8-16-16"


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


def test_tune_and_train_picks_the_table_minimum_and_reruns_it():
    x = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(1)
    data = (x, torch.sin(3 * x))
    arch = ds.Architecture("t", (1,), (8,), 1)

    def build() -> nn.Module:
        """The test MLP in float64."""
        return arch.build().double()

    kw = dict(batch_size=None, loss="mse", progress=False, device=torch.device("cpu"))
    tuned = ds.tune_and_train(build, data, lrs=[1e-4, 3e-2], search_seeds=[10, 11], seeds=[0, 1],
                              search_epochs=60, max_epochs=80, tail_fraction=0.2, **kw)
    assert tuned.lr == 3e-2 == tuned.search["median"].idxmin()  # 60 steps at 1e-4 barely move
    assert list(tuned.search["chosen"]) == [False, True]
    reference = train.fit_ensemble(build, [0, 1], data, epochs=80, lr=3e-2, **kw)
    for got, want in zip(tuned.ensemble.histories, reference.histories):
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-12)
    searched = train.fit_ensemble(build, [10, 11, 10, 11], data, epochs=60, lr=[1e-4, 1e-4, 3e-2, 3e-2], **kw)
    tails = [ds.tail_loss(h, 0.2) for h in searched.histories]
    assert tuned.search.loc[3e-2, "median"] == pytest.approx(np.median(tails[2:]))
    with pytest.raises(ValueError, match="overlap"):
        ds.tune_and_train(build, data, lrs=[1e-2], search_seeds=[0], seeds=[0, 1], search_epochs=1,
                          max_epochs=1, **kw)
