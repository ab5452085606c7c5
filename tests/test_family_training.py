"""Seed-pair verdicts, the trained families and their paired depth tests (hw1utils.family_training, 1-1b)."""

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
    return family_training.train_families("tiny", tiny_dataset(), families, epochs=2, batch_size=32, lr=1e-2,
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
        family_training.train_families("tiny", tiny_dataset(), {}, epochs=0, batch_size=32, lr=1e-2, seeds=[0],
                                       device=torch.device("cpu"))


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
