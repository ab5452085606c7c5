"""Every notebook runs end to end in the quick profile; the runner writes only where it is told."""

import json
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from hw1utils import checks, notebooks
from hw1utils.config import REPO_ROOT
from hw1utils.notebooks import all_notebooks

QUICK_LIMIT_S = 120  # the quick profile is meant to take < 60 s per notebook; fail only well past that


@pytest.fixture
def quick(monkeypatch, tmp_path):
    """The quick profile, no progress bars, figures and cache in a temporary folder."""
    monkeypatch.setenv("HW1_PROFILE", "quick")
    monkeypatch.setenv("HW1_PROGRESS", "0")
    monkeypatch.setenv("HW1_THREADS", str(notebooks.KERNEL_THREADS))  # the runner's thread policy
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path / "figures"))  # never overwrite the committed figures
    monkeypatch.setenv("HW1_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.notebook
@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_quick_profile(path, quick):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    assert (quick / "figures" / path.stem / "results.json").is_file(), "the notebook saved no results.json"
    assert list((quick / "figures" / path.stem).glob("*.png")), "the notebook saved no figure"
    assert seconds < QUICK_LIMIT_S, f"{path.name} took {seconds:.0f} s in the quick profile"


@pytest.mark.notebook
def test_1_1b_runs_on_full_size_cifar_shaped_data(quick, monkeypatch):
    """The CIFAR-10 path end to end: 50,000 + 10,000 synthetic CIFAR-shaped images in torchvision's layout."""
    from hw1utils import data

    data.write_cifar_like(quick / "data", n_train=50_000, n_test=10_000)
    monkeypatch.setenv("HW1_DATA", str(quick / "data"))
    monkeypatch.setenv("HW1_OFFLINE", "1")
    path = next(p for p in all_notebooks() if p.stem == "1-1b_train_actual_task")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    results = json.loads((quick / "figures" / path.stem / "results.json").read_text())
    assert "synthetic CIFAR-shaped data" in results["second_task"]
    task = "CIFAR-shaped (synthetic)"
    assert results["budget"][task]["steps"] > 0 and set(results["final"][task]) >= {"CNN 6 conv", "DNN 6 hidden"}
    assert "50,000 train / 10,000 test" in results["source"][task]


def shown_outputs(path):
    """The notebook's outputs without images: what a rerun of unchanged code must reproduce byte for byte."""
    nb = json.loads(path.read_text())
    return [[{k: v for k, v in out.items() if k != "data"} | {"data": {m: d for m, d in out.get("data", {}).items()
                                                                       if not m.startswith("image/")}}
             for out in cell.get("outputs", [])] for cell in nb["cells"]]


@pytest.mark.notebook
def test_runner_writes_to_scratch_and_reruns_identically(quick, monkeypatch):
    """Two quick runs through the runner, cache off: identical results.json and outputs, committed files untouched."""
    path = next(p for p in all_notebooks() if p.stem == "1-2b_gradient_norm")
    committed = (path.read_bytes(), (REPO_ROOT / "figures" / path.stem / "results.json").read_bytes())
    monkeypatch.setenv("HW1_CACHE", "off")  # both runs really train
    runs = []
    for run in ("first", "second"):
        monkeypatch.setenv("HW1_FIGURES", str(quick / run / "figures"))
        assert notebooks.run([path], quick / run, timeout=600) == []
        runs.append(((quick / run / "figures" / path.stem / "results.json").read_text(),
                     shown_outputs(quick / run / "notebooks" / path.name)))
    assert runs[0][0] == runs[1][0], "results.json differs between two runs with the same seeds"
    assert runs[0][1] == runs[1][1], "the notebook's outputs differ between two runs with the same seeds"
    assert committed == (path.read_bytes(), (REPO_ROOT / "figures" / path.stem / "results.json").read_bytes())


def test_quick_runs_default_to_the_scratch_folder(monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    assert notebooks.output_root(None) == REPO_ROOT / "scratch"
    monkeypatch.setenv("HW1_PROFILE", "full")
    assert notebooks.output_root(None) is None, "the full profile rewrites the committed notebooks in place"


def test_runner_names_a_missing_notebook(capsys):
    with pytest.raises(SystemExit):
        notebooks.main(["run", "notebooks/no-such.ipynb"])
    assert "no such notebook: notebooks/no-such.ipynb" in capsys.readouterr().err


def test_runner_lists_the_profiles_for_an_unknown_one(monkeypatch, capsys):
    monkeypatch.setenv("HW1_PROFILE", "fast")
    with pytest.raises(SystemExit):
        notebooks.main(["run", str(all_notebooks()[0])])
    assert "use one of ('quick', 'full')" in capsys.readouterr().err


def test_clean_sets_the_kernelspec_and_drops_volatile_state():
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"widgets": {"state": {}}}
    cell = nbformat.v4.new_code_cell("1")
    cell.execution_count = 4
    cell.outputs = [nbformat.v4.new_output("display_data", data={notebooks.WIDGET_VIEW: {}, "text/plain": "bar"})]
    nb.cells = [cell]
    cleaned = notebooks.clean(nb)
    assert cleaned.metadata.kernelspec.name == "python3" and "widgets" not in cleaned.metadata
    assert cleaned.cells[0].execution_count is None and cleaned.cells[0].outputs == []


def test_a_relative_output_folder_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert notebooks.output_root(tmp_path.joinpath("out").relative_to(tmp_path)) == tmp_path / "out"


def test_thread_policy_is_one_fixed_count(monkeypatch):
    monkeypatch.delenv("HW1_THREADS", raising=False)
    monkeypatch.setattr(notebooks, "execute", lambda *args: 0.0)
    assert notebooks.run(all_notebooks()[:1], None, timeout=1, jobs=2) == []
    assert notebooks.os.environ["HW1_THREADS"] == str(notebooks.KERNEL_THREADS) == "1"


def test_runner_rejects_zero_jobs(capsys):
    with pytest.raises(SystemExit):
        notebooks.main(["run", "--jobs", "0", str(all_notebooks()[0])])
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_the_runner_starts_the_longest_measured_notebooks_first(tmp_path):
    paths = notebooks.all_notebooks()
    measured = {p.stem: float(i + 1) for i, p in enumerate(paths)}  # the later, the longer
    timings = tmp_path / "suite.json"
    timings.write_text(json.dumps({"sizes": {"quick": {"seconds": {}}, "full-size": {"seconds": measured}}}))
    assert notebooks.longest_first(paths, timings) == paths[::-1]
    unknown = notebooks.NOTEBOOK_DIR / "9-9z_new.ipynb"
    assert notebooks.longest_first([unknown, *paths], timings)[-1] == unknown, "a new notebook needs no entry"
    assert notebooks.longest_first(paths, tmp_path / "absent.json") == paths


def write_tiny_notebook(folder, check_source):
    """A two-seed notebook in `folder` that saves one figure file and then runs `check_source`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(notebooks.KERNELSPEC)}
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "full"  # profile\nSEED = 0  # a seed\nSEEDS = (3, 4)  # seeds',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, pathlib\nfrom hw1utils import checks\n"
                                          "folder = pathlib.Path(os.environ['HW1_FIGURES']) / 'tiny'\n"
                                          "folder.mkdir(parents=True, exist_ok=True)\n"
                                          "(folder / 'figure.png').write_bytes(b'png')"),
                nbformat.v4.new_code_cell(check_source)]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "tiny.ipynb")
    return folder / "tiny.ipynb"


SEED_CLAIMS = ('checks.confirm({"the seed is zero": SEED == 0, "always": True,\n'
               '                "the seeds are three and four": lambda: list(SEEDS) == [3, 4]})')


def test_a_passing_notebook_moves_its_figures_into_place(quick, monkeypatch):
    monkeypatch.delenv("HW1_FIGURES")
    path = write_tiny_notebook(quick / "src", SEED_CLAIMS)
    outcomes = notebooks.run_all([path], quick / "out", timeout=120)
    assert outcomes["tiny"].passed and (quick / "out" / "figures" / "tiny" / "figure.png").is_file()
    assert (quick / "out" / "notebooks" / "tiny.ipynb").is_file() and not (quick / "out" / "failed").exists()
    assert "HW1_FIGURES" not in notebooks.os.environ, "the run restores the environment"


def test_a_failed_notebook_keeps_its_executed_copy_and_names_the_sentences(quick, monkeypatch):
    monkeypatch.delenv("HW1_FIGURES")
    path = write_tiny_notebook(quick / "src", SEED_CLAIMS)
    outcomes = notebooks.run_all([path], quick / "out", timeout=120, parameters={"tiny": {"SEED": 5}})
    outcome = outcomes["tiny"]
    assert not outcome.passed and outcome.contradicted == ["the seed is zero"]
    kept = nbformat.read(quick / "out" / "failed" / "notebooks" / "tiny.ipynb", as_version=4)
    assert any(out.get("ename") == "AssertionError" for cell in kept.cells for out in cell.get("outputs", []))
    assert (quick / "out" / "failed" / "figures" / "tiny" / "figure.png").is_file()
    assert not (quick / "out" / "figures").exists() and not (quick / "out" / "notebooks").exists()


def test_a_check_that_cannot_be_evaluated_fails_its_sentence_in_the_summary(quick, monkeypatch):
    monkeypatch.delenv("HW1_FIGURES")
    path = write_tiny_notebook(quick / "src", 'checks.confirm({"the first fitted size is small": lambda: [][0] < 3})')
    outcome = notebooks.run_all([path], quick / "out", timeout=120)["tiny"]
    assert outcome.contradicted == ["the first fitted size is small (not found in this run: IndexError: "
                                    "list index out of range)"]


def test_replicate_moves_every_seed_and_the_thread_count_and_reports_the_sentences(quick, monkeypatch):
    path = write_tiny_notebook(quick / "src", SEED_CLAIMS + "\nimport torch\nassert torch.get_num_threads() == 2")
    outcome = notebooks.replicate([path], quick / "replica", timeout=120, shift=1000, threads=2)["tiny"]
    assert sorted(outcome.contradicted) == ["the seed is zero", "the seeds are three and four"]
    report = json.loads((quick / "replica" / "report.json").read_text())
    assert report["threads"] == 2 and report["notebooks"]["tiny"]["seeds"] == {"SEED": 1000, "SEEDS": [1003, 1004]}
    tiny = report["notebooks"]["tiny"]
    assert tiny["contradicted"] == outcome.contradicted and not tiny["passed"]


def test_a_notebook_whose_claims_were_skipped_does_not_replicate(quick):
    path = write_tiny_notebook(quick / "src", 'checks.confirm({"the seed is zero": SEED == 0}, applies=False)')
    outcome = notebooks.replicate([path], quick / "replica", timeout=120, shift=1000, threads=2)["tiny"]
    assert outcome.passed and not outcome.checked and not outcome.replicated
    tiny = json.loads((quick / "replica" / "report.json").read_text())["notebooks"]["tiny"]
    assert not tiny["passed"] and tiny["error"] == checks.NOT_CHECKED
    assert notebooks.main(["replicate", str(path), "--out", str(quick / "again"), "--threads", "2"]) == 1


def test_replicated_seeds_avoid_every_value_of_the_committed_run():
    assert notebooks.moved_seeds({"SEEDS": (0, 1), "SEARCH_SEEDS": (100,)}, 1000) == {"SEEDS": [1000, 1001],
                                                                                       "SEARCH_SEEDS": [1100]}
    with pytest.raises(ValueError, match="reuses \\[100\\]"):
        notebooks.moved_seeds({"SEEDS": (0,), "SEARCH_SEEDS": (100,)}, 100)


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_every_random_choice_of_a_notebook_is_drawn_from_a_seed_parameter(path):
    """Seeds live in the parameters cell; the code never seeds with a literal or numbers runs from zero."""
    assert notebooks.seed_parameters(path), f"{path.name} has no seed parameter"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells[1:] if c.cell_type == "code")
    literal = re.findall(r"(?:manual_seed|seed_everything|default_rng)\(\d+\)|seed=\d|range\(RUNS\)", code)
    assert not literal, f"{path.name} seeds with a literal: {literal}"
