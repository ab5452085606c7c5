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
    assert report.check(text) == [], "README.md is not current: run `python -m hw1utils.report --check`"


# ---- inline values and settings tables ---------------------------------------------------------

RESULTS = {
    "settings": {"hidden": [64, 64], "lr": 0.001, "optimizer": "adam", "train_limit": None,
                 "profile_params": {"epochs": 20, "sizes": [1, 2]}},
    "mnist": {"summary": {"last_epoch_loss": 0.043219}, "train_loss": [0.9, 0.5, 0.25], "params": 55050},
}
PROSE = ("The loss fell to <!-- nb:mnist.summary.last_epoch_loss:.3g -->?<!-- /value --> "
         "(last <!-- nb:mnist.train_loss.-1:.1% -->?<!-- /value -->, first <!-- nb:mnist.train_loss.0: -->?"
         "<!-- /value -->) with <!-- nb:mnist.params:, -->?<!-- /value --> parameters.\n")


def make_repo(tmp_path, results=RESULTS, stem="nb"):
    """A fake repository: figures/STEM/results.json (plus a figure file); returns (figures dir, root)."""
    figures = tmp_path / "figures"
    (figures / stem).mkdir(parents=True)
    (figures / stem / "results.json").write_text(json.dumps(results, sort_keys=True))
    (figures / stem / "loss.png").write_bytes(b"png")
    return figures, tmp_path


def test_fill_values_formats_and_indexes_lists(tmp_path):
    figures, root = make_repo(tmp_path)
    fresh = report.fill_values(PROSE, figures)
    assert "fell to <!-- nb:mnist.summary.last_epoch_loss:.3g -->0.0432<!-- /value --> (" in fresh
    assert "<!-- nb:mnist.train_loss.-1:.1% -->25.0%<!-- /value -->" in fresh
    assert "<!-- nb:mnist.train_loss.0: -->0.9<!-- /value -->" in fresh
    assert "<!-- nb:mnist.params:, -->55,050<!-- /value --> parameters." in fresh
    assert report.fill_values(fresh, figures) == fresh
    assert report.check(fresh, figures, root) == []


def test_check_reports_stale_number_with_line_and_both_values(tmp_path):
    figures, root = make_repo(tmp_path)
    text = "# title\n" + report.fill_values(PROSE, figures).replace("0.0432", "0.05")
    [problem] = report.check(text, figures, root)
    assert problem.startswith("README.md:2: <!-- nb:mnist.summary.last_epoch_loss:.3g -->")
    assert "'0.05'" in problem and "'0.0432'" in problem


def test_check_names_missing_key_its_file_and_nearest_keys(tmp_path):
    figures, root = make_repo(tmp_path)
    text = ("<!-- nb:mnist.summary.last_loss:.3g -->1<!-- /value -->\n"
            "<!-- nb:mnist.train_loss.7:.3g -->1<!-- /value -->\n")
    first, second = report.check(text, figures, root)
    assert first.startswith("README.md:1:") and "'mnist.summary.last_loss'" in first
    assert str(figures / "nb" / "results.json") in first and "last_epoch_loss" in first
    assert "README.md:2:" in second and "list of 3 items" in second
    assert report.fill_values(text, figures) == text  # broken placeholders are left as they are


def test_check_reports_missing_results_and_missing_figure(tmp_path):
    figures, root = make_repo(tmp_path)
    text = ("<!-- other:a.b:.3g -->1<!-- /value -->\n"
            "![ok](figures/nb/loss.png) ![gone](figures/nb/gone.png) ![web](https://example.org/x.png)\n")
    first, second = report.check(text, figures, root)
    assert first.startswith("README.md:1:") and "other/results.json is missing" in first
    assert "notebooks/other.ipynb" in first
    assert second == "README.md:2: figure figures/nb/gone.png is missing"


def test_settings_table_rendering_and_staleness(tmp_path):
    figures, root = make_repo(tmp_path)
    text = "intro\n<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\noutro\n"
    fresh = report.fill_settings(text, figures)
    assert fresh == ("intro\n<!-- BEGIN settings:nb -->\n| setting | value |\n|---|---|\n"
                     "| `hidden` | 64, 64 |\n| `lr` | 0.001 |\n| `optimizer` | adam |\n"
                     "| `profile_params` | epochs: 20, sizes: [1, 2] |\n| `train_limit` | None |\n\n"
                     "<!-- END settings:nb -->\noutro\n")
    assert report.fill_settings(fresh, figures) == fresh
    assert report.check(fresh, figures, root) == []
    [problem] = report.check(text, figures, root)
    assert problem == "README.md:2: settings table of nb is stale"
    assert report.check(fresh.replace("0.001", "0.01"), figures, root) == [problem]


def test_new_passes_leave_old_sections_alone(tmp_path):
    figures, root = make_repo(tmp_path, {**RESULTS, "report": {"findings": ["loss 0.5"]}})
    old = ("<!-- BEGIN report:nb -->\nkept <!-- nb:mnist.params:, -->?<!-- /value -->\n"
           "<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\n<!-- END report:nb -->\n")
    text = old + PROSE
    fresh = report.fill_settings(report.fill_values(text, figures), figures)
    assert fresh.startswith(old) and "55,050" in fresh
    assert report.update(text, figures, root) == report.rewrite(text, figures, root).replace(PROSE, fresh[len(old):])


def test_main_check_runs_every_pass(tmp_path, monkeypatch, capsys):
    figures, root = make_repo(tmp_path, {**RESULTS, "report": {"findings": ["loss 0.5"]}})
    readme = root / "README.md"
    readme.write_text("<!-- BEGIN report:nb -->\n<!-- END report:nb -->\n" + PROSE
                      + "<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\n![gone](figures/nb/gone.png)\n")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "FIGURES_DIR", figures)
    monkeypatch.setattr(report, "REPO_ROOT", root)
    assert report.main(["--check"]) == 1
    err = capsys.readouterr().err
    for expected in ("README.md:1: section report:nb is stale", "README.md:3: <!-- nb:mnist.summary",
                     "settings table of nb is stale", "figure figures/nb/gone.png is missing"):
        assert expected in err
    assert report.main([]) == 1  # everything rewritten but the missing figure
    [problem] = capsys.readouterr().err.splitlines()
    assert problem.startswith("README.md:") and problem.endswith(": figure figures/nb/gone.png is missing")
    assert "55,050" in readme.read_text() and "| `lr` | 0.001 |" in readme.read_text()
    readme.write_text(readme.read_text().replace("![gone](figures/nb/gone.png)\n", ""))
    assert report.main(["--check"]) == 0 and capsys.readouterr().err == ""
