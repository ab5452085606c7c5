"""Step budgets, seed-pair verdicts and the trained families of hw1utils.family_training (1-1b)."""

import pytest
import torch

from hw1utils import data, deep_shallow, family_training


def test_budget_epochs_rounds_to_whole_epochs():
    assert family_training.budget_epochs(60_000, 128, 1_000) == 2  # 469 steps per epoch
    assert family_training.budget_epochs(4_000, 128, 1_000) == 31  # 32 steps per epoch
    assert family_training.budget_epochs(60_000, 128, 10) == 1
    with pytest.raises(ValueError, match="positive"):
        family_training.budget_epochs(100, 0, 10)


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


def test_train_families_gives_every_model_the_same_steps():
    dataset = tiny_dataset()
    families = {"CNN": deep_shallow.cnn_family([1, 2], 310, (1, 8, 8)),
                "DNN": deep_shallow.mlp_family([1, 2], 1_060, (1, 8, 8), 10)}
    runs = family_training.train_families("tiny", dataset, families, steps=16, batch_size=32, lr=1e-2, seeds=[0, 1],
                                          evaluations=2, device=torch.device("cpu"))
    assert runs.epochs == 2 and runs.steps == 16
    for models_of in runs.ensembles.values():
        for ensemble in models_of.values():
            assert [h.epoch for h in ensemble.histories] == [[0, 1, 2]] * 2
    finals = runs.finals("train_loss")
    assert set(finals) == {("CNN", "1 conv"), ("CNN", "2 conv"), ("DNN", "1 hidden"), ("DNN", "2 hidden")}
    table = family_training.final_table([runs])
    assert table.loc[("tiny", "DNN", "1 hidden"), "train loss"] == pytest.approx(finals[("DNN", "1 hidden")].mean())
    assert (table["test acc min"] <= table["test acc"]).all() and (table["test acc"] <= table["test acc max"]).all()


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
