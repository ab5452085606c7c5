"""Repository checks: committed notebooks are executed and clean, README figures exist, lint is clean."""

import json
import re
import shutil
import subprocess

import pytest

from hw1utils.config import REPO_ROOT
from hw1utils.notebooks import all_notebooks

NOTEBOOK_LIMIT_BYTES = 1.5 * 1024 * 1024
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/(home|root|tmp|work|Users|usr|var|opt|mnt|private)/|[A-Za-z]:\\\\)")
RANDOM_TABLE_ID = re.compile(r"T_[0-9a-f]{5}_")  # pandas Styler's default uuid: new in every run
TIMING = re.compile(r"\b\d+(\.\d+)? ?s(econds)?\b(?! *[x=(])")  # "in 3.2 s": wall time, never stable
STEMS = [
    "1-1a_simulate_function", "1-1b_train_actual_task", "1-2a_optimization_trajectory", "1-2b_gradient_norm",
    "1-2c_minimal_ratio", "1-3a_random_labels", "1-3b_params_vs_generalization", "1-3c_flatness_interpolation",
    "1-3d_flatness_sensitivity",
]


def test_all_nine_notebooks_exist():
    assert [p.stem for p in all_notebooks()] == STEMS


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_executed_and_clean(path):
    assert path.stat().st_size < NOTEBOOK_LIMIT_BYTES, f"{path.name} is over 1.5 MB"
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged `parameters`"
    outputs = [o for c in code for o in c["outputs"]]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the committed run shows no figure"
    assert not [o for o in outputs if o["output_type"] == "error"], "a committed notebook holds an error"
    assert all(c["execution_count"] is None for c in code), "execution counts must be cleared"
    assert "widgets" not in nb["metadata"], "widget state must not be stored"
    assert (REPO_ROOT / "figures" / path.stem / "results.json").is_file()


def output_texts(cell: dict) -> list[str]:
    """Every text an output of `cell` shows (stream text, plain-text and HTML data)."""
    texts = []
    for out in cell["outputs"]:
        texts.append("".join(out.get("text", "")))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                texts.append("".join(value))
    return texts


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_committed_outputs_are_clean(path):
    """What a reader sees holds no stderr, warning, stray Out[], machine path, random id or wall time."""
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", "papermill needs a python3 kernelspec"
    problems = []
    for number, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        for out in cell["outputs"]:
            if out["output_type"] == "stream" and out["name"] == "stderr":
                problems.append(f"cell {number}: stderr output {''.join(out['text'])[:80]!r}")
            if out["output_type"] == "execute_result":
                problems.append(f"cell {number}: stray Out[] value {str(out['data'].get('text/plain'))[:80]!r}")
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                problems.append(f"cell {number}: widget output (progress bar) stored")
        for text in output_texts(cell):
            for pattern, what in ((ABSOLUTE_PATH, "absolute path"), (RANDOM_TABLE_ID, "random table id"),
                                  (TIMING, "wall time"), (re.compile(r"Warning\b"), "warning"),
                                  (re.compile(r" at 0x[0-9a-f]+"), "memory address")):
                if match := pattern.search(text):
                    start = max(0, match.start() - 40)
                    problems.append(f"cell {number}: {what}: ...{text[start:match.end() + 40]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stem", STEMS)
def test_committed_results_name_no_machine_path(stem):
    text = (REPO_ROOT / "figures" / stem / "results.json").read_text()
    match = ABSOLUTE_PATH.search(text)
    assert match is None, f"results.json names a machine path: ...{text[max(0, match.start() - 60):match.end() + 40]}"


def test_readme_figures_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    missing = [img for img in images if not img.startswith("http") and not (REPO_ROOT / img).is_file()]
    assert not missing, f"README embeds missing figures: {missing}"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_is_clean():
    result = subprocess.run(["ruff", "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
