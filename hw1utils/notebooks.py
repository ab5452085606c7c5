"""Headless notebook runs: execute in place with nbconvert, then leave the file clean for git.

    python -m hw1utils.notebooks run [NOTEBOOK ...]    # default: every notebooks/*.ipynb, in order
    python -m hw1utils.notebooks clean NOTEBOOK ...    # strip volatile metadata only

The profile comes from HW1_PROFILE as usual (quick | full).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

from .config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 1800  # one cell may run this long before the run is declared stuck


def all_notebooks() -> list[Path]:
    """The project's notebooks in subtask order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop execution counts, volatile metadata and widget outputs; keep cell tags and other outputs."""
    for cell in nb.cells:
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        kept = []
        for out in cell.outputs:
            if out.get("output_type") in ("execute_result", "display_data"):
                if out.output_type == "execute_result":
                    out.execution_count = None
                if WIDGET_VIEW in out.data:  # a progress bar: its state is not stored, so drop it whole
                    continue
                out.metadata = {}
            kept.append(out)
        cell.outputs = kept
    nb.metadata = {k: nb.metadata[k] for k in ("kernelspec",) if k in nb.metadata}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(path: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute `path` in place (working folder: its own) and clean it; returns wall seconds.

    On a cell error the file is left unchanged and CellExecutionError propagates.
    """
    nb = nbformat.read(path, as_version=4)
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3")
    start = time.perf_counter()
    runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    seconds = time.perf_counter() - start
    nbformat.write(clean(nb), path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `run` or `clean`."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "clean"))
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or all_notebooks()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    failed = []
    for path in paths:
        if args.command == "clean":
            nbformat.write(clean(nbformat.read(path, as_version=4)), path)
            continue
        try:
            print(f"{path.name}: {execute(path, args.timeout):.1f} s", flush=True)
        except CellExecutionError as err:
            failed.append(path.name)
            print(f"{path.name}: FAILED (left unchanged)\n{err}", file=sys.stderr, flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
