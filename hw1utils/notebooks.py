"""Headless notebook runs: execute with nbconvert, then leave the files clean for git.

    python -m hw1utils.notebooks run [NOTEBOOK ...] [--out DIR] [--jobs N]   # default: every notebooks/*.ipynb
    python -m hw1utils.notebooks replicate [NOTEBOOK ...] [--out DIR]        # other seeds, another thread count
    python -m hw1utils.notebooks clean NOTEBOOK ...                          # strip volatile metadata only

The profile comes from HW1_PROFILE as usual (quick | full). The full profile rewrites the committed
notebooks and figures in place; the quick profile writes to scratch/ (git-ignored) instead, so a smoke
test never touches them. --out DIR sends the notebooks to DIR/notebooks/ and the figures to DIR/figures/.
Progress bars are off in these runs (HW1_PROGRESS=0), so no widget state or progress text is stored.
A notebook's figures reach the figures folder only when all its cells ran; a failed notebook leaves its
executed copy (outputs up to the error) and its figures in <out or scratch>/failed/, and the summary names
the sentences of the text that the run contradicted.

`replicate` reruns notebooks (cache off) into scratch/replicate/ with every seed parameter (SEED, SEEDS,
*_SEED, *_SEEDS) moved by REPLICATE_SHIFT and REPLICATE_THREADS torch threads per kernel, and writes which
sentences failed per notebook to scratch/replicate/report.json. A claim of the text must hold there too;
a notebook that skipped its claims (it found other data than the real MNIST) does not count as replicated.

The thread policy lives here: N notebooks run side by side (default: one per CPU core), each kernel
with one torch thread (HW1_THREADS, applied by config.parameters). One fixed count keeps a
notebook's numbers byte for byte the same whether it runs alone or with the others (float sums change
with the thread count), and on the 2-core reference machine two notebooks at one thread each finish
sooner than one at a time with two threads. The longest notebooks start first (measured by the last benchmark,
benchmarks/suite.json), so the short ones fill the cores at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

from . import checks, config
from .config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 1800  # one cell may run this long before the run is declared stuck
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
KERNEL_THREADS = 1  # torch threads per kernel: fixed, so a notebook gives the same bytes however many run
REPLICATE_THREADS = 2  # torch threads per kernel in a replication: another count than the committed run's
REPLICATE_SHIFT = 1000  # a replication adds this to every seed: values the committed run did not use
SEED_NAME = re.compile(r"(^|_)SEEDS?$")  # a parameter so named is a seed, moved by a replication
TIMINGS = REPO_ROOT / "benchmarks" / "suite.json"  # measured seconds per notebook (benchmarks/bench_suite.py --save)


def all_notebooks() -> list[Path]:
    """The project's notebooks in subtask order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def expected_seconds(timings_file: Path = TIMINGS) -> dict[str, float]:
    """Each notebook's measured wall seconds at the largest size the benchmark file holds ({} without one)."""
    if not timings_file.is_file():
        return {}
    sizes = json.loads(timings_file.read_text())["sizes"]
    largest = next((sizes[size] for size in ("full-size", "committed", "quick") if size in sizes), {"seconds": {}})
    return largest["seconds"]


def longest_first(paths: list[Path], timings_file: Path = TIMINGS) -> list[Path]:
    """`paths` in the order to start them: longest measured first (unmeasured ones last, in the given order)."""
    seconds = expected_seconds(timings_file)
    return sorted(paths, key=lambda path: -seconds.get(path.stem, 0))


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


def execute(path: Path, target: Path | None = None, timeout: int = CELL_TIMEOUT_S,
            parameters: dict[str, Any] | None = None) -> float:
    """Execute `path` (working folder: its own) with `parameters` injected, clean it, write it to `target`.

    `target` defaults to `path` itself. Returns wall seconds. On a cell error the executed copy (outputs up
    to the error) is attached to the CellExecutionError as `.notebook` and nothing is written.
    """
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject(nb, parameters)
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3")
    start = time.perf_counter()
    try:
        runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    except CellExecutionError as err:
        err.notebook = clean(nb)
        raise
    seconds = time.perf_counter() - start
    target = target or path
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(clean(nb), target)
    return seconds


def parameter_cell(nb: nbformat.NotebookNode) -> int:
    """Index of the cell tagged `parameters` (ValueError when there is none)."""
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            return index
    raise ValueError("the notebook has no cell tagged 'parameters'")


def inject(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    """Insert papermill's injected-parameters cell (`# Parameters`, one assignment a line) after the parameters cell."""
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(parameter_cell(nb) + 1, cell)


def output_root(out: Path | None) -> Path | None:
    """Where a run writes: `out` if given, scratch/ in the quick profile, None (in place) in the full one."""
    if out is not None:
        return out.resolve()  # the kernels run in notebooks/: a relative folder would land there
    return None if config.profile() == "full" else config.SCRATCH_DIR


@dataclass
class Outcome:
    """How one notebook's run ended: its wall seconds, or the sentences it contradicted and where its copy is."""

    seconds: float | None = None
    contradicted: list[str] = field(default_factory=list)
    error: str = ""  # the error's name and first line, when it was not a contradicted sentence
    kept: str = ""  # where the failed run's executed copy and figures were put
    elapsed: float | None = None  # wall seconds until a failed run stopped
    checked: bool = True  # False when the run's check cells skipped the claims (other data than the text's)

    @property
    def passed(self) -> bool:
        """True when every cell ran."""
        return self.seconds is not None

    @property
    def replicated(self) -> bool:
        """True when every cell ran and the claims were judged."""
        return self.passed and self.checked


def contradicted_sentences(err: CellExecutionError) -> list[str]:
    """The sentences a failed check cell names (checks.confirm's message), [] for any other error."""
    lines = str(err.evalue or "").splitlines()
    if not lines or lines[0] != checks.CONTRADICTS:
        return []
    return [line[2:] for line in lines[1:] if line.startswith("- ")]


def move_tree(source: Path, target: Path) -> None:
    """Replace `target` by `source` (a folder); nothing happens when `source` does not exist."""
    if not source.is_dir():
        return
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def _run_one(path: Path, target: Path | None, timeout: int, parameters: dict[str, Any] | None, staging: Path,
             figures: Path, failed: Path) -> Outcome:
    """Execute one notebook; move its figures from `staging` to `figures`, or keep a failed run's under `failed`."""
    start = time.perf_counter()
    try:
        seconds = execute(path, target, timeout, parameters)
    except CellExecutionError as err:
        elapsed = time.perf_counter() - start
        (failed / "notebooks").mkdir(parents=True, exist_ok=True)
        nbformat.write(err.notebook, failed / "notebooks" / path.name)
        move_tree(staging / path.stem, failed / "figures" / path.stem)
        first_line = str(err.evalue or "").splitlines()[:1]
        outcome = Outcome(contradicted=contradicted_sentences(err), error=f"{err.ename}: {''.join(first_line)}",
                          kept=config.shown_path(failed / "notebooks" / path.name), elapsed=elapsed)
        print(f"{path.name}: FAILED after {elapsed:.1f} s, executed copy and figures kept in "
              f"{config.shown_path(failed)}\n"
              + "\n".join(f"  contradicted: {s}" for s in outcome.contradicted or [outcome.error]),
              file=sys.stderr, flush=True)
        return outcome
    move_tree(staging / path.stem, figures / path.stem)
    print(f"{path.name}: {seconds:.1f} s", flush=True)
    return Outcome(seconds=seconds)


def run_all(paths: list[Path], out: Path | None, timeout: int, jobs: int | None = None,
            parameters: dict[str, dict[str, Any]] | None = None) -> dict[str, Outcome]:
    """Execute `paths`, `jobs` at a time (default: one per core); returns each notebook's outcome by stem.

    Figures are written to a staging folder and moved to the figures root only when the whole notebook
    passed, so a failed run never touches the committed files: its executed copy and figures go to
    <out or scratch>/failed/. `parameters` maps a stem to the values injected into that notebook.
    """
    root = output_root(out)
    jobs = jobs or os.cpu_count() or 1
    os.environ["HW1_PROGRESS"] = "0"
    os.environ.setdefault("HW1_THREADS", str(KERNEL_THREADS))
    user_set = bool(os.environ.get("HW1_FIGURES"))
    figures = config.figures_root(config.profile()) if root is None or user_set else root / "figures"
    failed = (root or config.SCRATCH_DIR) / "failed"
    config.SCRATCH_DIR.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=config.SCRATCH_DIR))
    previous, os.environ["HW1_FIGURES"] = os.environ.get("HW1_FIGURES"), str(staging)
    if root is not None:
        print(f"writing notebooks to {config.shown_path(root / 'notebooks')}, figures to {config.shown_path(figures)}",
              flush=True)
    print(f"{min(jobs, len(paths))} notebook(s) at a time, {os.environ['HW1_THREADS']} torch thread(s) each",
          flush=True)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {path.stem: pool.submit(_run_one, path, None if root is None else root / "notebooks" / path.name,
                                              timeout, (parameters or {}).get(path.stem), staging, figures, failed)
                       for path in longest_first(paths)}
            outcomes = {stem: future.result() for stem, future in futures.items()}
    finally:
        if previous is None:
            del os.environ["HW1_FIGURES"]
        else:
            os.environ["HW1_FIGURES"] = previous
        shutil.rmtree(staging, ignore_errors=True)
    print(f"all {len(paths)} notebooks: {time.perf_counter() - start:.1f} s", flush=True)
    return outcomes


def run(paths: list[Path], out: Path | None, timeout: int, jobs: int | None = None) -> list[str]:
    """Execute `paths` as `run_all` does; returns the names of those that failed."""
    outcomes = run_all(paths, out, timeout, jobs)
    return sorted(f"{stem}.ipynb" for stem, outcome in outcomes.items() if not outcome.passed)


def seed_parameters(path: Path) -> dict[str, Any]:
    """The notebook's seed parameters (named SEED, SEEDS or ending in _SEED / _SEEDS) and their defaults."""
    nb = nbformat.read(path, as_version=4)
    defaults = config.literal_assignments(nb.cells[parameter_cell(nb)].source, path.name)
    return {name: value for name, value in defaults.items() if SEED_NAME.search(name)}


def moved_seeds(seeds: dict[str, Any], shift: int) -> dict[str, Any]:
    """Every seed moved by `shift`, checked to use none of the values the given seeds use."""
    def move(value):
        return [v + shift for v in value] if isinstance(value, (tuple, list)) else value + shift

    used = {v for value in seeds.values() for v in (value if isinstance(value, (tuple, list)) else [value])}
    moved = {name: move(value) for name, value in seeds.items()}
    again = used & {v for value in moved.values() for v in (value if isinstance(value, list) else [value])}
    if again:
        raise ValueError(f"shifting the seeds by {shift} reuses {sorted(again)}; choose a larger --shift")
    return moved


def claims_checked(notebook: Path) -> bool:
    """Whether an executed notebook judged its claims (False where `checks.confirm` skipped them: other data)."""
    nb = nbformat.read(notebook, as_version=4)
    return not any(checks.NOT_CHECKED in "".join(output.get("text", "")) for cell in nb.cells
                   for output in cell.get("outputs", []))


def replicate(paths: list[Path], out: Path, timeout: int, shift: int = REPLICATE_SHIFT,
              threads: int = REPLICATE_THREADS) -> dict[str, Outcome]:
    """Rerun `paths` with every seed parameter moved by `shift` and `threads` torch threads per kernel, cache off.

    Writes the notebooks and figures under `out` and out/report.json; returns each notebook's outcome. A
    notebook replicates only if it ran to the end and judged its claims: one that ran on other data (the
    fallback digits, say) skipped them, and the report says so.
    """
    os.environ["HW1_THREADS"] = str(threads)
    os.environ["HW1_CACHE"] = "off"
    os.environ.pop("HW1_FIGURES", None)
    parameters = {path.stem: moved_seeds(seed_parameters(path), shift) for path in paths}
    jobs = max(1, (os.cpu_count() or 1) // threads)
    outcomes = run_all(paths, out, timeout, jobs, parameters)
    for stem, o in outcomes.items():
        o.checked = not o.passed or claims_checked(out / "notebooks" / f"{stem}.ipynb")
    report = {"profile": config.profile(), "threads": threads, "seed_shift": shift,
              "notebooks": {stem: {"passed": o.replicated, "seconds": round(o.seconds or o.elapsed or 0),
                                   "seeds": parameters[stem], "contradicted": o.contradicted,
                                   "error": o.error or ("" if o.checked else checks.NOT_CHECKED)}
                            for stem, o in sorted(outcomes.items())}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    for stem, o in sorted(outcomes.items()):
        print(f"{stem}: " + ("replicates" if o.replicated else f"{checks.NOT_CHECKED} (not the real data?)"
                             if o.passed else f"FAILS ({len(o.contradicted)} sentences; {o.kept})"))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `run`, `replicate` or `clean`."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "replicate", "clean"))
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="write notebooks and figures under this folder "
                                                 "(replicate: default scratch/replicate)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds allowed per cell")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks run side by side (default: one per core)")
    parser.add_argument("--shift", type=int, default=REPLICATE_SHIFT, help="replicate: added to every seed")
    parser.add_argument("--threads", type=int, default=REPLICATE_THREADS, help="replicate: torch threads per kernel")
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
    if args.command == "replicate":
        if args.threads < 1 or args.threads == KERNEL_THREADS:
            parser.error(f"--threads must be a positive count other than the committed run's {KERNEL_THREADS}")
        outcomes = replicate(paths, args.out or config.SCRATCH_DIR / "replicate", args.timeout, args.shift,
                             args.threads)
        failed = sorted(f"{stem}.ipynb" for stem, outcome in outcomes.items() if not outcome.replicated)
    else:
        failed = run(paths, args.out, args.timeout, args.jobs)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
