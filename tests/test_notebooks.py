"""Every notebook runs end to end in the quick profile without a cell error."""

import time

import nbformat
import pytest
from nbclient import NotebookClient

from hw1utils.notebooks import all_notebooks

QUICK_LIMIT_S = 120  # the quick profile is meant to take < 60 s per notebook; fail only well past that


@pytest.mark.notebook
@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_quick_profile(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path / "figures"))  # never overwrite the committed figures
    monkeypatch.setenv("HW1_CACHE", str(tmp_path / "cache"))
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    assert (tmp_path / "figures" / path.stem / "results.json").is_file(), "the notebook saved no results.json"
    assert list((tmp_path / "figures" / path.stem).glob("*.png")), "the notebook saved no figure"
    assert seconds < QUICK_LIMIT_S, f"{path.name} took {seconds:.0f} s in the quick profile"


@pytest.mark.notebook
def test_two_quick_runs_write_identical_results(tmp_path, monkeypatch):
    path = next(p for p in all_notebooks() if p.stem == "1-2b_gradient_norm")
    monkeypatch.setenv("HW1_PROFILE", "quick")
    monkeypatch.setenv("HW1_CACHE", "off")  # both runs really train
    results = []
    for run in ("first", "second"):
        monkeypatch.setenv("HW1_FIGURES", str(tmp_path / run))
        nb = nbformat.read(path, as_version=4)
        resources = {"metadata": {"path": str(path.parent)}}
        NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
        results.append((tmp_path / run / path.stem / "results.json").read_text())
    assert results[0] == results[1], "results.json differs between two runs with the same seeds"
