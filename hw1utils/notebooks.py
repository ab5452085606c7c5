"""Headless notebook runs: execute with nbconvert, then leave the files clean for git.

    python -m hw1utils.notebooks run [NOTEBOOK ...] [--out DIR] [--jobs N]   # default: every notebooks/*.ipynb
    python -m hw1utils.notebooks clean NOTEBOOK ...                          # strip volatile metadata only

The profile comes from HW1_PROFILE as usual (quick | full). The full profile rewrites the committed
notebooks and figures in place; the quick profile writes to scratch/ (git-ignored) instead, so a smoke
test never touches them. --out DIR sends the notebooks to DIR/notebooks/ and the figures to DIR/figures/.
Progress bars are off in these runs (HW1_PROGRESS=0), so no widget state or progress text is stored.

The thread policy lives here: N notebooks run side by side (default: one per CPU core), each kernel
with one torch thread (HW1_THREADS, applied by config.apply_parameters). One fixed count keeps a
notebook's numbers byte for byte the same whether it runs alone or with the others (float sums change
with the thread count), and on the 2-core reference machine two notebooks at one thread each finish
sooner than one at a time with two threads. The longest notebooks start first (EXPECTED_SECONDS), so the
short ones fill the cores at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

from . import config
from .config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 1800  # one cell may run this long before the run is declared stuck
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
KERNEL_THREADS = 1  # torch threads per kernel: fixed, so a notebook gives the same bytes however many run
# Wall seconds of each notebook at the committed size on the 2-core machine (benchmarks/bench_suite.py):
# the runner starts the longest first, so that the short ones fill the cores at the end.
EXPECTED_SECONDS = {"1-1a_simulate_function": 250, "1-1b_train_actual_task": 315,
                    "1-2a_optimization_trajectory": 60, "1-2b_gradient_norm": 20, "1-2c_minimal_ratio": 40,
                    "1-3a_random_labels": 170, "1-3b_params_vs_generalization": 90,
                    "1-3c_flatness_interpolation": 45, "1-3d_flatness_sensitivity": 90}


def all_notebooks() -> list[Path]:
    """The project's notebooks in subtask order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def longest_first(paths: list[Path]) -> list[Path]:
    """`paths` in the order to start them: longest expected first (unknown ones last, in the given order)."""
    return sorted(paths, key=lambda path: -EXPECTED_SECONDS.get(path.stem, 0))


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop execution counts, volatile metadata and widget outputs; keep cell tags, other outputs, the kernelspec."""
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
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    return nb


def execute(path: Path, target: Path | None = None, timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute `path` (working folder: its own), clean it and write it to `target` (default: in place).

    Returns wall seconds. On a cell error nothing is written and CellExecutionError propagates.
    """
    nb = nbformat.read(path, as_version=4)
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3")
    start = time.perf_counter()
    runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    seconds = time.perf_counter() - start
    target = target or path
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(clean(nb), target)
    return seconds


def output_root(out: Path | None) -> Path | None:
    """Where a run writes: `out` if given, scratch/ in the quick profile, None (in place) in the full one."""
    if out is not None:
        return out.resolve()  # the kernels run in notebooks/: a relative folder would land there
    return None if config.profile() == "full" else config.SCRATCH_DIR


def _execute_reporting(path: Path, target: Path | None, timeout: int) -> bool:
    """Execute one notebook and print its wall time, or its error on stderr; True when it passed."""
    try:
        print(f"{path.name}: {execute(path, target, timeout):.1f} s", flush=True)
        return True
    except CellExecutionError as err:
        print(f"{path.name}: FAILED (nothing written)\n{err}", file=sys.stderr, flush=True)
        return False


def run(paths: list[Path], out: Path | None, timeout: int, jobs: int | None = None) -> list[str]:
    """Execute `paths`, `jobs` at a time (default: one per core), printing each wall time; returns those that failed."""
    root = output_root(out)
    jobs = jobs or os.cpu_count() or 1
    os.environ["HW1_PROGRESS"] = "0"
    os.environ.setdefault("HW1_THREADS", str(KERNEL_THREADS))
    if root is not None:
        os.environ.setdefault("HW1_FIGURES", str(root / "figures"))
        print(f"writing notebooks to {config.shown_path(root / 'notebooks')}, "
              f"figures to {config.shown_path(os.environ['HW1_FIGURES'])}", flush=True)
    print(f"{min(jobs, len(paths))} notebook(s) at a time, {os.environ['HW1_THREADS']} torch thread(s) each",
          flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_execute_reporting, path, None if root is None else root / "notebooks" / path.name,
                               timeout): path for path in longest_first(paths)}
        failed = sorted(futures[f].name for f in as_completed(futures) if not f.result())
    print(f"all {len(paths)} notebooks: {time.perf_counter() - start:.1f} s", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `run` or `clean`."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "clean"))
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="write notebooks and figures under this folder")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds allowed per cell")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks run side by side (default: one per core)")
    args = parser.parse_intermixed_args(argv)
    paths = args.notebooks or all_notebooks()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.command == "clean":
        for path in paths:
            nbformat.write(clean(nbformat.read(path, as_version=4)), path)
        return 0
    try:
        config.profile()
    except ValueError as err:
        parser.error(str(err))
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    failed = run(paths, args.out, args.timeout, args.jobs)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
