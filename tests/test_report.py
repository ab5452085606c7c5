"""REPORT.md from the notebooks, README's timing table from the benchmark file, each claim written once."""

import json

import nbformat
import pytest

from hw1utils import report
from hw1utils.config import REPO_ROOT
from hw1utils.notebooks import all_notebooks

OPENING = ("# 1-9z A made-up subtask\n\n**The task.** Do it.\n\n"
           "**Report questions.** *\"What happens?\"*\n\nMore prose.")
ANSWER = "### What we see\n\nThe loss **falls by more than ten times**, and the `gap`\nstays small."
CHECK = ('checks.confirm({} if not checks.applies(P.PROFILE) else {\n'
         '    "falls by more than ten times": lambda: True,\n'
         '    "the gap stays small": lambda: 0 < 1,\n'
         '})')
SUITE = {"machine": {"cpu_cores": 2, "device": "cpu", "torch": "2.14.1"},
         "sizes": {"quick": {"seconds": {"1-9z_made_up": 12.3}, "total": 13.0},
                   "full-size": {"seconds": {"1-9z_made_up": 99.6}, "total": 101.2, "dataset": "mnist"}}}


def write_notebook(root, answer=ANSWER, check=CHECK, stem="1-9z_made_up"):
    """A notebook with an opening, a report cell and a check cell, plus its figure and results.json."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(OPENING),
                nbformat.v4.new_code_cell('PROFILE = "full"  # profile', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell(answer, metadata={"tags": ["report"]}),
                nbformat.v4.new_code_cell(check)]
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    path = root / "notebooks" / f"{stem}.ipynb"
    nbformat.write(nb, path)
    (root / "figures" / stem).mkdir(parents=True, exist_ok=True)
    (root / "figures" / stem / "loss_curve.png").write_bytes(b"png")
    (root / "figures" / stem / "results.json").write_text(json.dumps({"settings": {"PROFILE": "full", "LR": 0.001}}))
    return path


def all_problems(root, path, report_text=None, readme_text="", timings=None):
    """report.problems for one notebook in the fake repository `root`."""
    report_text = report.build_report([path], root / "figures", root) if report_text is None else report_text
    return report.problems([path], report_text, readme_text, root / "figures", root, timings or root / "none.json")


def test_claim_keys_are_the_sentences_given_to_confirm(tmp_path):
    nb = nbformat.read(write_notebook(tmp_path), as_version=4)
    assert report.claim_keys(nb) == ["falls by more than ten times", "the gap stays small"]


def test_claims_spread_into_confirm_from_another_cell_are_claims_too(tmp_path):
    path = write_notebook(tmp_path, check='claims = {"the gap stays small": lambda: True}\n'
                                          'checks.confirm({**claims, "falls by more than ten times": lambda: True})')
    keys = report.claim_keys(nbformat.read(path, as_version=4))
    assert sorted(keys) == ["falls by more than ten times", "the gap stays small"]


def test_a_claim_matches_its_sentence_whatever_the_emphasis_and_line_breaks(tmp_path):
    path = write_notebook(tmp_path)
    assert report.unwritten_claims(nbformat.read(path, as_version=4)) == []
    assert all_problems(tmp_path, path) == []


def test_editing_a_sentence_without_its_check_fails(tmp_path):
    path = write_notebook(tmp_path, answer=ANSWER.replace("ten times", "five times"))
    assert all_problems(tmp_path, path) == [
        "1-9z_made_up.ipynb: the check 'falls by more than ten times' is not a sentence of the cells tagged `report`"]


def test_editing_a_check_without_its_sentence_fails(tmp_path):
    path = write_notebook(tmp_path, check=CHECK.replace("the gap stays small", "the gap stays tiny"))
    assert any("'the gap stays tiny'" in problem for problem in all_problems(tmp_path, path))


def test_a_check_of_a_sentence_outside_the_report_cells_fails(tmp_path):
    path = write_notebook(tmp_path, check=CHECK.replace("the gap stays small", "More prose"))
    assert any("'More prose'" in problem for problem in all_problems(tmp_path, path)), "the opening is not an answer"


def test_the_report_copies_questions_figures_answers_and_settings(tmp_path):
    path = write_notebook(tmp_path)
    text = report.build_report([path], tmp_path / "figures", tmp_path)
    assert "\n## 1-9\n" in text and "### 1-9z A made-up subtask" in text
    assert "**Report questions.** *\"What happens?\"*" in text and "More prose" not in text
    assert "![loss curve](figures/1-9z_made_up/loss_curve.png)" in text
    assert "##### What we see" in text and "The loss **falls by more than ten times**" in text
    assert "| `LR` | 0.001 |" in text


def test_a_report_that_no_longer_matches_its_notebook_is_stale(tmp_path):
    path = write_notebook(tmp_path)
    old = report.build_report([path], tmp_path / "figures", tmp_path)
    write_notebook(tmp_path, answer=ANSWER + " A new sentence.")
    assert "REPORT.md is stale: a notebook's text, figures or settings changed" in all_problems(tmp_path, path, old)


def test_the_timing_table_is_filled_from_the_benchmark_file(tmp_path):
    timings = tmp_path / "suite.json"
    timings.write_text(json.dumps(SUITE))
    readme = "# Title\n\n<!-- BEGIN timing -->\nold\n<!-- END timing -->\n"
    fresh = report.fresh_readme(readme, timings)
    assert "| notebook | quick (s) | full-size (s) |" in fresh and "| 1-9z_made_up | 12 | 100 |" in fresh
    assert "| **whole suite, wall** | **13** | **101** |" in fresh and "full-size: mnist" in fresh
    assert report.fresh_readme(fresh, timings) == fresh
    path = write_notebook(tmp_path)
    assert any("timing table is stale" in p for p in all_problems(tmp_path, path, readme_text=readme, timings=timings))
    assert all_problems(tmp_path, path, readme_text=fresh, timings=timings) == []


def test_a_missing_readme_figure_is_named(tmp_path):
    path = write_notebook(tmp_path)
    assert "README.md: figure figures/gone.png is missing" in all_problems(tmp_path, path,
                                                                           readme_text="![x](figures/gone.png)")


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_every_checked_claim_is_a_sentence_of_its_notebook(path):
    nb = nbformat.read(path, as_version=4)
    assert report.claim_keys(nb), f"{path.name} checks no claim"
    assert report.unwritten_claims(nb) == []


def test_the_committed_report_and_readme_are_current():
    """What `python -m hw1utils.report --check` checks, on the committed files."""
    found = report.problems(all_notebooks(), report.REPORT.read_text(), report.README.read_text())
    assert found == [], "\n".join(found)
    assert (REPO_ROOT / "REPORT.md").is_file()
