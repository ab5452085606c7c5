"""README generation from results.json."""

import json

import pytest

from hw1utils import report

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
    fresh = report.fill(PROSE, figures)
    assert "fell to <!-- nb:mnist.summary.last_epoch_loss:.3g -->0.0432<!-- /value --> (" in fresh
    assert "<!-- nb:mnist.train_loss.-1:.1% -->25.0%<!-- /value -->" in fresh
    assert "<!-- nb:mnist.train_loss.0: -->0.9<!-- /value -->" in fresh
    assert "<!-- nb:mnist.params:, -->55,050<!-- /value --> parameters." in fresh
    assert report.fill(fresh, figures) == fresh
    assert report.check(fresh, figures, root) == []


def test_check_reports_stale_number_with_line_and_both_values(tmp_path):
    figures, root = make_repo(tmp_path)
    text = "# title\n" + report.fill(PROSE, figures).replace("0.0432", "0.05")
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
    assert report.fill(text, figures) == text  # broken placeholders are left as they are


def test_check_reports_missing_results_and_missing_figure(tmp_path):
    figures, root = make_repo(tmp_path)
    text = ("<!-- other:a.b:.3g -->1<!-- /value -->\n"
            "![ok](figures/nb/loss.png) ![gone](figures/nb/gone.png) ![web](https://example.org/x.png)\n")
    first, second = report.check(text, figures, root)
    assert first.startswith("README.md:1:") and "other/results.json is missing" in first
    assert "notebooks/other.ipynb" in first
    assert second == "README.md:2: figure figures/nb/gone.png is missing"


def test_missing_results_or_settings_entry_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"nb-x/results\.json is missing: run the notebook notebooks/nb-x\.ipynb"):
        report.load_results("nb-x", tmp_path)
    figures, root = make_repo(tmp_path, {"mnist": {}})
    text = "<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\n"
    [problem] = report.check(text, figures, root)
    assert problem.startswith("README.md:1: settings table of nb: ") and "has no 'settings' dict" in problem
    assert report.fill(text, figures) == text


def test_code_span_examples_are_left_alone(tmp_path):
    figures, root = make_repo(tmp_path)
    text = ("Write `<!-- nb:mnist.params:, -->VALUE<!-- /value -->` or `<!-- BEGIN settings:nb -->\n"
            "<!-- END settings:nb -->`; here <!-- nb:mnist.params:d -->?<!-- /value -->.\n")
    fresh = report.fill(text, figures)
    assert fresh == text.replace("d -->?<", "d -->55050<")
    assert report.check(fresh, figures, root) == []


def test_settings_table_rendering_and_staleness(tmp_path):
    figures, root = make_repo(tmp_path)
    text = "intro\n<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\noutro\n"
    fresh = report.fill(text, figures)
    assert fresh == ("intro\n<!-- BEGIN settings:nb -->\n| setting | value |\n|---|---|\n"
                     "| `hidden` | 64, 64 |\n| `lr` | 0.001 |\n| `optimizer` | adam |\n"
                     "| `profile_params` | epochs: 20, sizes: [1, 2] |\n| `train_limit` | None |\n\n"
                     "<!-- END settings:nb -->\noutro\n")
    assert report.fill(fresh, figures) == fresh
    assert report.check(fresh, figures, root) == []
    [problem] = report.check(text, figures, root)
    assert problem == "README.md:2: settings table of nb is stale"
    assert report.check(fresh.replace("0.001", "0.01"), figures, root) == [problem]


def test_main_check_runs_every_pass(tmp_path, monkeypatch, capsys):
    figures, root = make_repo(tmp_path)
    readme = root / "README.md"
    readme.write_text("# title\n" + PROSE
                      + "<!-- BEGIN settings:nb -->\n<!-- END settings:nb -->\n![gone](figures/nb/gone.png)\n")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "FIGURES_DIR", figures)
    monkeypatch.setattr(report, "REPO_ROOT", root)
    assert report.main(["--check"]) == 1
    err = capsys.readouterr().err
    for expected in ("README.md:2: <!-- nb:mnist.summary",
                     "settings table of nb is stale", "figure figures/nb/gone.png is missing"):
        assert expected in err
    assert report.main([]) == 1  # everything rewritten but the missing figure
    out, err = capsys.readouterr()
    assert out == "rewrote 4 values and 1 settings tables of README.md\n"
    [problem] = err.splitlines()
    assert problem.startswith("README.md:") and problem.endswith(": figure figures/nb/gone.png is missing")
    assert "55,050" in readme.read_text() and "| `lr` | 0.001 |" in readme.read_text()
    readme.write_text(readme.read_text().replace("![gone](figures/nb/gone.png)\n", ""))
    assert report.main(["--check"]) == 0 and capsys.readouterr().err == ""


def test_committed_readme_is_current():
    text = report.README.read_text()
    assert "<!-- BEGIN report:" not in text, "README.md still has an old generated section"
    assert report.fill(text) == text, "README.md is stale: run `python -m hw1utils.report`"
    assert report.check(text) == [], "README.md is not current: run `python -m hw1utils.report --check`"
