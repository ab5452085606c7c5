"""Profiles, paths, seeding and result export."""

import json
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hw1utils import config  # noqa: E402


def test_profiles(monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    assert config.profile() == "quick"
    monkeypatch.setenv("HW1_PROFILE", "huge")
    with pytest.raises(ValueError, match="quick"):
        config.profile()


def test_dataset_and_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("HW1_DATASET", "Fashion-MNIST")
    assert config.dataset_name() == "fashion-mnist"
    monkeypatch.delenv("HW1_DATASET")
    assert config.dataset_name("mnist") == "mnist"
    monkeypatch.setenv("HW1_DATA", str(tmp_path))
    assert config.data_dir() == tmp_path
    monkeypatch.setenv("HW1_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")


def test_save_fig_and_results(monkeypatch, tmp_path):
    monkeypatch.delenv("HW1_FIGURES", raising=False)
    monkeypatch.setattr(config, "FIGURES_DIR", tmp_path)
    params = config.Parameters("nb-stem", "full", {"PROFILE": "full"})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = config.save_fig(params, fig, "curve")
    plt.close(fig)
    assert path == tmp_path / "nb-stem" / "curve.png" and path.read_bytes()[:4] == b"\x89PNG"
    out = config.save_results(params, {"loss": torch.tensor([0.5]), "n": np.int64(3), "name": "x"})
    assert json.loads(out.read_text()) == {"loss": [0.5], "n": 3, "name": "x", "settings": {"PROFILE": "full"}}
    with pytest.raises(TypeError, match="results.json"):
        config.save_results(params, {"bad": object()})


def test_quick_profile_never_writes_into_figures(monkeypatch, tmp_path):
    monkeypatch.delenv("HW1_FIGURES", raising=False)
    monkeypatch.setattr(config, "SCRATCH_DIR", tmp_path / "scratch")
    params = config.Parameters("nb-stem", "quick", {"PROFILE": "quick"})
    assert params.figures == tmp_path / "scratch" / "figures" / "nb-stem"
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path / "mine"))
    assert params.figures == tmp_path / "mine" / "nb-stem", "a folder the user names wins"


def test_shown_path_is_relative_inside_the_repository(tmp_path):
    assert config.shown_path(config.REPO_ROOT / "data" / "MNIST") == "data/MNIST"
    assert config.shown_path(tmp_path) == str(tmp_path)


def test_shown_path_does_not_follow_a_linked_data_folder(monkeypatch, tmp_path):
    (tmp_path / "elsewhere" / "MNIST").mkdir(parents=True)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "data" / "MNIST").symlink_to(tmp_path / "elsewhere" / "MNIST")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "repo")
    assert config.shown_path(tmp_path / "repo" / "data" / "MNIST" / "raw") == "data/MNIST/raw"


def test_results_are_rounded_and_strict_json(monkeypatch, tmp_path):
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path))
    params = config.Parameters("nb-stem", "full", {})
    path = config.save_results(params, {"x": 0.1 + 0.2, "bad": float("nan"), "nested": [np.float64(1 / 3)]})
    assert json.loads(path.read_text()) == {"x": 0.3, "bad": None, "nested": [0.333333333333], "settings": {}}


def test_progress_bars_show_in_lab_and_stay_off_in_headless_kernels(monkeypatch):
    monkeypatch.delenv("HW1_PROGRESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delitem(config.sys.modules, "ipykernel", raising=False)
    assert config.show_progress(), "a script shows its bars in the terminal"
    monkeypatch.setitem(config.sys.modules, "ipykernel", object())
    assert not config.show_progress(), "papermill, nbconvert and nbclient start kernels without a Jupyter server"
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/1-2b_gradient_norm.ipynb")
    assert config.show_progress(), "JupyterLab's kernels show widget bars"
    monkeypatch.setenv("HW1_PROGRESS", "0")
    assert not config.show_progress()


def test_hw1_threads_sets_torch_threads_and_rejects_nonsense(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("HW1_THREADS", "1")
        config.apply_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("HW1_THREADS", "two")
        with pytest.raises(ValueError, match="HW1_THREADS='two' is not a positive whole number"):
            config.apply_threads()
    finally:
        torch.set_num_threads(before)


def test_the_text_applies_to_full_runs_on_the_whole_real_mnist():
    from types import SimpleNamespace

    from hw1utils import checks
    full_mnist = SimpleNamespace(name="mnist", is_subset=False)
    assert checks.applies("full") and checks.applies("full", full_mnist)
    assert not checks.applies("quick", full_mnist)
    assert not checks.applies("full", SimpleNamespace(name="mnist", is_subset=True)), "the 5,000-digit fallback"
    assert not checks.applies("full", SimpleNamespace(name="fashion-mnist", is_subset=False))
    fashion = SimpleNamespace(name="fashion-mnist", is_subset=False)  # a second task the text names
    assert checks.applies("full", fashion, name="fashion-mnist")
    assert not checks.applies("full", SimpleNamespace(name="cifar10", is_subset=False), name="fashion-mnist")
    with pytest.raises(AssertionError, match="contradicts the text:\n- a sentence"):
        checks.confirm({"a sentence": False, "another": True})


def test_a_claim_that_cannot_be_evaluated_fails_with_what_was_not_found():
    from hw1utils import checks
    empty = []
    with pytest.raises(AssertionError) as failure:
        checks.confirm({"the first fitted size": lambda: empty[0] > 3, "holds": lambda: True, "fails": False})
    lines = str(failure.value).splitlines()
    assert lines[0] == checks.CONTRADICTS and len(lines) == 3
    assert lines[1].startswith("- the first fitted size (not found in this run: IndexError") and lines[2] == "- fails"


def test_claims_that_do_not_apply_still_run_so_a_typo_fails_the_smoke_test(capsys):
    from hw1utils import checks
    checks.confirm({"a group of this size": lambda: {}["missing"] > 0, "false here": False}, applies=False)
    assert "claims not checked" in capsys.readouterr().out, "a missing group or a false claim is no error here"
    with pytest.raises(NameError):
        checks.confirm({"a typo": lambda: undefined_name > 0}, applies=False)  # noqa: F821


def test_keep_freed_memory_applies_on_glibc_and_nowhere_else(monkeypatch):
    on_glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert config.keep_freed_memory() is on_glibc
    monkeypatch.setattr(config.sys, "platform", "darwin")
    assert config.keep_freed_memory() is False
