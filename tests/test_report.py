"""README generation from results.json."""

import json

import pytest

from hw1utils import report


def write_results(folder, stem, value):
    (folder / stem).mkdir(parents=True)
    (folder / stem / "results.json").write_text(json.dumps({
        "source": "offline subset",
        "report": {"settings": ["lr 1e-3"], "findings": [f"loss {value}"],
                   "figures": [{"file": "loss.png", "caption": "Training loss"}]},
    }))


def test_rewrite_fills_only_marked_sections(tmp_path):
    figures = tmp_path / "figures"
    write_results(figures, "nb-a", 0.5)
    text = "intro\n<!-- BEGIN report:nb-a -->\nold text\n<!-- END report:nb-a -->\noutro\n"
    fresh = report.rewrite(text, figures, tmp_path)
    assert fresh.startswith("intro\n<!-- BEGIN report:nb-a -->\n")
    assert fresh.endswith("<!-- END report:nb-a -->\noutro\n")
    assert "old text" not in fresh and "- loss 0.5" in fresh and "- lr 1e-3" in fresh
    assert "![Training loss](figures/nb-a/loss.png)" in fresh
    assert "*Data: offline subset*" in fresh
    assert report.rewrite(fresh, figures, tmp_path) == fresh


def test_missing_results_or_report_entry_is_explained(tmp_path):
    with pytest.raises(ValueError, match="run the notebook"):
        report.render("nb-x", tmp_path, tmp_path)
    (tmp_path / "nb-y").mkdir()
    (tmp_path / "nb-y" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'report' entry"):
        report.render("nb-y", tmp_path, tmp_path)


def test_committed_readme_matches_results():
    text = report.README.read_text()
    assert report.MARKER.search(text), "README.md has no generated report sections"
    assert report.rewrite(text) == text, "README.md is stale: run `python -m hw1utils.report`"
