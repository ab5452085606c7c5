"""Tests of hw1utils.memorisation (1-3a): label corruption, epochs to memorise, growth exponents, sweep steps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hw1utils import data, memorisation, models, train
from hw1utils.data import ImageDataset
from hw1utils.train import History


def dataset(n_train: int = 200, n_test: int = 30, seed: int = 0) -> ImageDataset:
    """A small random 10-class ImageDataset of 1x4x4 images."""
    generator = torch.Generator().manual_seed(seed)
    return ImageDataset(
        name="synthetic", source="made by the test",
        x_train=torch.randint(0, 256, (n_train, 1, 4, 4), generator=generator, dtype=torch.uint8),
        y_train=torch.randint(0, 10, (n_train,), generator=generator),
        x_test=torch.randint(0, 256, (n_test, 1, 4, 4), generator=generator, dtype=torch.uint8),
        y_test=torch.randint(0, 10, (n_test,), generator=generator),
        classes=tuple(str(index) for index in range(10)), is_subset=False)


def history(train_acc: list[float]) -> History:
    """A History with the given training accuracies at epochs 0, 1, ..."""
    n = len(train_acc)
    return History(epoch=list(range(n)), train_loss=[1.0] * n, train_acc=train_acc, test_loss=[2.0] * n,
                   test_acc=[0.1] * n)


def test_corrupt_labels_ends_are_the_true_and_the_random_labels():
    base = dataset()
    assert torch.equal(memorisation.corrupt_labels(base, 0.0, 3).y_train, base.y_train)
    assert torch.equal(memorisation.corrupt_labels(base, 1.0, 3).y_train, data.random_labels(base, 3).y_train)
    corrupted = memorisation.corrupt_labels(base, 0.5, 3)
    assert torch.equal(corrupted.x_train, base.x_train) and torch.equal(corrupted.y_test, base.y_test)
    assert "probability 0.5" in corrupted.source


def test_corrupt_labels_nested_and_at_the_stated_rate():
    """A higher fraction changes a superset of the labels; the share changed is fraction * 9/10 (binomial)."""
    base = dataset(n_train=20_000)
    changed = {p: memorisation.corrupt_labels(base, p, 0).y_train != base.y_train for p in (0.2, 0.5, 0.8)}
    assert bool((changed[0.2] <= changed[0.5]).all() and (changed[0.5] <= changed[0.8]).all())
    for p, mask in changed.items():
        expected = 0.9 * p
        assert abs(mask.float().mean().item() - expected) < 4 * math.sqrt(expected * (1 - expected) / 20_000)


def test_corrupt_labels_replacements_are_uniform_over_the_chosen_labels():
    """Which labels are redrawn is independent of the class they get: uniform classes among the redrawn ones."""
    base = dataset(n_train=20_000)
    labels = memorisation.corrupt_labels(base, 0.3, 0).y_train
    replacement = data.random_labels(base, 0).y_train
    chosen = (labels == replacement) & (labels != base.y_train)  # certainly redrawn
    counts = torch.bincount(replacement[chosen], minlength=10).double()
    expected = counts.sum() / 10
    assert float(((counts - expected) ** 2 / expected).sum()) < 33.7  # 99.99th percentile, chi-square, 9 dof


def test_corrupt_labels_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="between 0 and 1"):
        memorisation.corrupt_labels(dataset(), 1.5, 0)


def test_check_sizes_wants_distinct_ascending_sizes_that_include_section_1():
    memorisation.check_sizes((100, 200, 400), 200)
    for sizes, section in (((200, 100), 100), ((100, 100, 200), 100), ((100, 200), 300)):
        with pytest.raises(ValueError, match="SECTION_1_SIZE"):
            memorisation.check_sizes(sizes, section)


def test_first_images_is_a_prefix_and_checks_the_size():
    base = dataset()
    first = memorisation.first_images(base, 50)
    assert torch.equal(first.x_train, base.x_train[:50]) and torch.equal(first.y_train, base.y_train[:50])
    assert torch.equal(first.x_test, base.x_test) and first.is_subset and "first 50" in first.source
    assert memorisation.first_images(base, 200) is base
    for bad in (0, 201):
        with pytest.raises(ValueError, match="first"):
            memorisation.first_images(base, bad)


def test_first_epoch_at_and_fit_summary():
    runs = [history([0.1, 0.5, 0.995, 0.97, 1.0]), history([0.1, 0.2, 0.3, 0.99, 0.999]), history([0.1, 0.2, 0.3])]
    assert [memorisation.first_epoch_at(h, 0.99) for h in runs] == [2, 3, None]
    summary = memorisation.fit_summary(runs, 0.99)
    assert summary["seeds_memorised"] == 2 and summary["first_epoch_min"] == 2 and summary["first_epoch_max"] == 3
    assert summary["lowest_after"] == 0.97 and summary["final_train_acc_min"] == 0.3


def test_epochs_table_counts_steps_and_examples():
    table = memorisation.epochs_table({100: [10, None], 300: [20, 30]}, seeds=[0, 1], batch_size=128)
    assert table["steps"].tolist()[::2] == [10.0, 60.0] and table["examples_seen"].tolist()[2:] == [6000.0, 9000.0]
    assert np.isnan(table["epochs"][1])


def test_growth_recovers_power_law_exponents():
    """Epochs = 3 n^0.5 for every seed: every exponent is 0.5 and every bootstrap resample agrees."""
    sizes, seeds = [100, 400, 1600], [0, 1, 2]
    table = memorisation.epochs_table({n: [3 * n ** 0.5] * 3 for n in sizes}, seeds, batch_size=50)
    result = memorisation.growth(table, bootstrap=50, seed=0)
    assert list(result.index) == ["all sizes", "100 to 400", "400 to 1600"]
    assert result.to_numpy() == pytest.approx(np.full((3, 3), 0.5))
    noisy = memorisation.epochs_table({n: [3 * n ** 0.5 * f for f in (0.8, 1.0, 1.2)] for n in sizes}, seeds, 50)
    spread = memorisation.growth(noisy, bootstrap=500, seed=0)
    assert (spread["low"] < 0.5).all() and (spread["high"] > 0.5).all()
    bent = memorisation.epochs_table({100: [10] * 3, 400: [20] * 3, 1600: [80] * 3}, seeds, 50)  # 0.5, then 1
    assert memorisation.growth(bent, bootstrap=10, seed=0)["exponent"].tolist() == pytest.approx([0.75, 0.5, 1.0])
    missing = memorisation.epochs_table({100: [5, None], 400: [9, 10]}, [0, 1], 50)
    assert memorisation.growth(missing, bootstrap=10, seed=0).isna().all().all()


def test_extrapolated_epochs_follow_the_fitted_power_law_with_an_interval():
    """Epochs = 3 n^0.5 exactly: the extrapolation to 10,000 is 300 with a zero-width interval; noise widens it."""
    sizes, seeds = [100, 400, 1600], [0, 1, 2]
    exact = memorisation.epochs_table({n: [3 * n ** 0.5] * 3 for n in sizes}, seeds, batch_size=50)
    result = memorisation.extrapolated_epochs(exact, 10_000, bootstrap=50, seed=0)
    assert [result[k] for k in ("epochs", "low", "high")] == pytest.approx([300.0] * 3)
    noisy = memorisation.epochs_table({n: [3 * n ** 0.5 * f for f in (0.8, 1.0, 1.2)] for n in sizes}, seeds, 50)
    spread = memorisation.extrapolated_epochs(noisy, 10_000, bootstrap=500, seed=0)
    assert spread["low"] < spread["epochs"] < spread["high"] and spread["low"] < 300 < spread["high"]
    missing = memorisation.epochs_table({100: [5, None], 400: [9, 10]}, [0, 1], 50)
    assert np.isnan(memorisation.extrapolated_epochs(missing, 1_000, bootstrap=10, seed=0)["epochs"])


def test_paired_steps_differences_seed_by_seed():
    sweep = pd.DataFrame({"fraction": [0.0, 0.0, 0.5, 0.5, 1.0, 1.0], "seed": [0, 1] * 3,
                          "test_error": [0.1, 0.2, 0.4, 0.3, 0.9, 0.9]})
    steps = memorisation.paired_steps(sweep)
    assert steps["smallest"].tolist() == pytest.approx([0.1, 0.5])
    assert steps["largest"].tolist() == pytest.approx([0.3, 0.6])


def test_a_wide_net_memorises_random_labels():
    """64 random-label images: an MLP reaches 100% training accuracy while its test accuracy stays low."""
    labelled = data.random_labels(dataset(n_train=64, n_test=200), seed=0)
    ensemble = train.fit_ensemble(lambda: models.mlp(16, [128], 10), [0, 1], labelled, epochs=40, lr=1e-2,
                                  batch_size=None, progress=False, device=torch.device("cpu"))
    epochs = [memorisation.first_epoch_at(h, 1.0) for h in ensemble.histories]
    assert all(epoch is not None and epoch < 40 for epoch in epochs)
    assert all(h.test_acc[-1] < 0.3 for h in ensemble.histories)
