"""Repository checks: committed notebooks are executed and clean, README figures exist, lint is clean."""

import json
import re
import shutil
import subprocess

import pytest

from hw1utils.config import REPO_ROOT
from hw1utils.notebooks import all_notebooks

NOTEBOOK_LIMIT_BYTES = 1.5 * 1024 * 1024
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


def test_readme_figures_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    missing = [img for img in images if not img.startswith("http") and not (REPO_ROOT / img).is_file()]
    assert not missing, f"README embeds missing figures: {missing}"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_is_clean():
    result = subprocess.run(["ruff", "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
