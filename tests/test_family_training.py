"""Seed-pair verdicts, the trained families and their paired depth tests (hw1utils.family_training, 1-1b)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from hw1utils import data, deep_shallow, family_training


def test_seed_pair_verdicts_need_the_interval_to_exclude_one_half():
    table = deep_shallow.seed_pair_verdicts({"a": [3.0, 3.1, 3.2], "b": [1.0, 1.1, 1.2], "c": [1.05, 2.9, 3.15]},
                                               resamples=500)
    assert list(table.index) == ["b vs a", "c vs a", "c vs b"]
    assert table.loc["b vs a", "fraction"] == 1.0 and table.loc["b vs a", "verdict"] == "b lower"
    assert table.loc["c vs b", "verdict"] == "not separated"
    with pytest.raises(ValueError):
        deep_shallow.seed_pair_verdicts({"a": [1.0], "b": [2.0, 3.0]})


def tiny_dataset(n=256, seed=0):
    """A learnable 10-class 1x8x8 data set: each class lights one row of pixels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = (torch.rand(n, 1, 8, 8, generator=g) * 60).to(torch.uint8)
    x[torch.arange(n), 0, y % 8] = 255
    return data.ImageDataset("mnist", "test blobs", x, y, x.clone(), y.clone(), tuple(map(str, range(10))), False)


def tiny_runs():
    """Two 2-member families trained for two epochs on `tiny_dataset`."""
    families = {"CNN": deep_shallow.cnn_family([1, 2], 310, (1, 8, 8)),
                "DNN": deep_shallow.mlp_family([1, 2], 1_060, (1, 8, 8), 10)}
    lrs = {family: {a.name: 1e-2 for a in archs} for family, archs in families.items()}
    return family_training.train_families("tiny", tiny_dataset(), families, epochs=2, batch_size=32, lrs=lrs,
                                          seeds=[0, 1], device=torch.device("cpu"))


def test_train_families_gives_every_model_the_same_epochs():
    runs = tiny_runs()
    assert runs.epochs == 2 and runs.steps == 16
    for models_of in runs.ensembles.values():
        for ensemble in models_of.values():
            assert [h.epoch for h in ensemble.histories] == [[0, 1, 2]] * 2
    finals = runs.finals("train_loss")
    assert set(finals) == {("CNN", "1 conv"), ("CNN", "2 conv"), ("DNN", "1 hidden"), ("DNN", "2 hidden")}
    table = family_training.final_table([runs])
    assert table.loc[("tiny", "DNN", "1 hidden"), "train loss"] == pytest.approx(finals[("DNN", "1 hidden")].mean())
    assert (table["test acc min"] <= table["test acc"]).all() and (table["test acc"] <= table["test acc max"]).all()
    with pytest.raises(ValueError, match="positive"):
        family_training.train_families("tiny", tiny_dataset(), {}, epochs=0, batch_size=32, lrs={}, seeds=[0],
                                       device=torch.device("cpu"))
    two_hidden = {"DNN": deep_shallow.mlp_family([2], 1_060, (1, 8, 8), 10)}
    with pytest.raises(ValueError, match="no learning rate for DNN 2 hidden"):
        family_training.train_families("tiny", tiny_dataset(), two_hidden, epochs=1, batch_size=32,
                                       lrs={"DNN": {"1 hidden": 0.01}}, seeds=[0], device=torch.device("cpu"))


def test_search_rates_scores_held_out_training_images_and_grows_the_grid():
    families = {"DNN": deep_shallow.mlp_family([1], 1_060, (1, 8, 8), 10)}
    dataset = tiny_dataset()
    searches = family_training.search_rates(dataset, families, lrs=[1e-2, 3e-2], seeds=[5], search_train=160,
                                            held_out=64, epochs=4, batch_size=32, lr_schedule="linear",
                                            device=torch.device("cpu"))
    table = searches["DNN"]["1 hidden"]
    assert list(table.index) == [0.01, 0.03, 0.1] and list(table["added"]) == [False, False, True]
    assert deep_shallow.best_lr(table) == 0.03  # inside the grid, once it grew past its upper edge
    x, y, _, _ = dataset.float_tensors(torch.device("cpu"))
    history = deep_shallow.fit_ensemble(families["DNN"][0].build, [5], (x[:160], y[:160], x[-64:], y[-64:]), epochs=4,
                                        lr=1e-2, batch_size=32, lr_schedule="linear", eval_every=4,
                                        eval_train_examples=64).histories[0]
    assert table.loc[1e-2, "median"] == pytest.approx(history.test_loss[-1], rel=1e-6)  # scored on held-out images
    with pytest.raises(ValueError, match="at most the 256 training images"):
        family_training.search_rates(dataset, families, lrs=[1e-3, 1e-2], seeds=[5], search_train=200, held_out=64,
                                     epochs=1, batch_size=32, lr_schedule="linear", device=torch.device("cpu"))


def search_result(losses):
    """A `search_lr`-shaped table from {lr: held-out loss}."""
    table = pd.DataFrame({"median": losses}).rename_axis("lr").sort_index()
    return table.assign(chosen=table.index == table["median"].idxmin())


def test_common_rate_is_nearest_every_depths_best_in_the_worst_case():
    searches = {"CNN": {"2 conv": search_result({0.003: 1.07, 0.01: 0.88, 0.03: 0.83, 0.1: 2.30}),
                        "4 conv": search_result({0.003: 0.68, 0.01: 0.54, 0.03: 2.30}),
                        "6 conv": search_result({0.003: 0.77, 0.01: 0.57, 0.03: 0.56, 0.1: 2.30})}}
    assert family_training.common_rates(searches) == {"CNN": dict.fromkeys(["2 conv", "4 conv", "6 conv"], 0.01)}
    table = family_training.search_table({"task": searches})
    assert list(table.columns) == ["0.003", "0.01", "0.03", "0.1", "best", "common", "common / best"]
    assert list(table["best"]) == [0.03, 0.01, 0.03] and np.isnan(table.loc[("task", "CNN", "4 conv"), "0.1"])
    assert table["common / best"].tolist() == pytest.approx([0.88 / 0.83, 1.0, 0.57 / 0.56])
    tied = {"DNN": {"1 hidden": search_result({0.01: 1.0, 0.03: 2.0}),
                    "3 hidden": search_result({0.01: 2.0, 0.03: 1.0})}}
    assert family_training.common_rates(tied)["DNN"]["1 hidden"] == 0.01  # equal worst ratios: the smaller rate


def test_rate_trade_offs_say_what_a_models_own_best_rate_does_to_its_family():
    searches = {"DNN": {"3 hidden": search_result({0.01: 0.50, 0.03: 0.40}),
                        "1 hidden": search_result({0.01: 0.30, 0.03: 0.45, 0.1: 0.9})},
                "CNN": {"2 conv": search_result({0.03: 0.66, 0.1: 0.59}),
                        "4 conv": search_result({0.03: 0.45, 0.1: 2.30})}}
    table = family_training.search_table({"task": searches})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unsorted index must not make pandas warn
        trade = family_training.rate_trade_offs(table)
    assert list(trade.index) == [("task", "DNN", "3 hidden"), ("task", "CNN", "2 conv")]
    assert trade["worse for another"].all() and list(trade["worst at best"]) == [0.45, 2.30]
    assert family_training.rate_trade_offs(table.loc[[("task", "DNN", "1 hidden")]]).empty


def test_paired_depth_tests_match_the_histories_and_mcnemar():
    runs = tiny_runs()
    tests = family_training.paired_depth_tests(runs, eval_train_examples=100, resamples=200, seed=0)
    assert list(tests.index.get_level_values("pair").unique()) == ["2 conv vs 1 conv", "2 hidden vs 1 hidden"]
    assert list(tests.index.get_level_values("seed")) == [0, 1, 0, 1]
    test_acc = runs.finals("test_acc")
    for (_, family, pair, seed), row in tests.iterrows():
        deeper, shallower = pair.split(" vs ")
        k = [0, 1].index(seed)
        expected = test_acc[(family, deeper)][k] - test_acc[(family, shallower)][k]
        assert row["test acc diff"] == pytest.approx(expected, abs=1e-9)
        assert row["test low"] <= row["test acc diff"] <= row["test high"]
        assert row["test verdict"] == ("not separated" if row["test p"] >= 0.01 else
                                       f"{deeper} ahead" if expected > 0 else f"{shallower} ahead")


def test_second_task_announces_the_synthetic_stand_in(tmp_path, monkeypatch):
    data.write_cifar_like(tmp_path, n_train=50, n_test=10)
    monkeypatch.setenv("HW1_DATA", str(tmp_path))
    dataset, why = family_training.second_task(download=False)
    assert family_training.is_synthetic(dataset) and "not CIFAR-10" in why
    assert family_training.task_title(dataset) == "CIFAR-shaped (synthetic)"


def test_second_task_falls_back_to_fashion_mnist_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HW1_DATA", str(tmp_path))
    try:
        dataset, why = family_training.second_task(download=False)
    except FileNotFoundError:
        pytest.skip("no offline Fashion-MNIST on this machine")
    assert dataset.name == "fashion-mnist" and "\n" not in why and why.startswith("CIFAR-10 is not available here")


def test_dnn_target_sits_on_a_one_hidden_count():
    assert family_training.dnn_target((1, 28, 28), 25_450) == 25_450  # 32 hidden units: 795 * 32 + 10
    target = family_training.dnn_target((3, 32, 32), 25_450)
    assert target == 8 * 3_083 + 10
    assert len(deep_shallow.mlp_family([1, 3, 6], target, (3, 32, 32), 10)) == 3
