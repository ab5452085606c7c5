"""Wall time of every notebook in the quick and the full profile (copies run; nothing committed changes).

    python benchmarks/bench_suite.py [--profiles quick,full] [--dataset fashion-mnist] [NOTEBOOK ...]

Runs each notebook headless on a temporary copy, with figures written to a temporary folder and the
training cache off (so every training is timed). Prints a table, then one JSON line of seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from nbconvert.preprocessors import CellExecutionError

from hw1utils.notebooks import all_notebooks, execute

TARGET_S = {"quick": 6 * 60, "full": 20 * 60}  # whole-suite targets on the 2-core machine


def time_suite(paths: list[Path], profile: str, dataset: str | None, scratch: Path) -> dict[str, float]:
    """Seconds per notebook for one profile (nan for a notebook that failed)."""
    os.environ.update(HW1_PROFILE=profile, HW1_FIGURES=str(scratch / "figures"), HW1_CACHE="off")
    if dataset:
        os.environ["HW1_DATASET"] = dataset
    times = {}
    for path in paths:
        copy = scratch / path.name
        shutil.copy(path, copy)
        try:
            times[path.stem] = execute(copy)
        except CellExecutionError as err:
            print(f"{path.stem} failed in the {profile} profile:\n{err}", file=sys.stderr)
            times[path.stem] = float("nan")
        print(f"  {profile:5s} {path.stem:32s} {times[path.stem]:8.1f} s", flush=True)
    return times


def main() -> None:
    """Time the suite and print the table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: all nine")
    parser.add_argument("--profiles", default="quick,full")
    parser.add_argument("--dataset", default=None, help="HW1_DATASET for the MNIST experiments, e.g. fashion-mnist")
    args = parser.parse_args()
    paths = args.notebooks or all_notebooks()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles.split(","):
            results[profile] = time_suite(paths, profile, args.dataset, Path(tmp))
    print(f"\n{'notebook':34s}" + "".join(f"{p:>10s}" for p in results))
    for path in paths:
        print(f"{path.stem:34s}" + "".join(f"{results[p][path.stem]:10.1f}" for p in results))
    totals = {p: sum(t.values()) for p, t in results.items()}
    print(f"{'total':34s}" + "".join(f"{totals[p]:10.1f}" for p in results))
    for profile, total in totals.items():
        if profile in TARGET_S:
            verdict = "meets" if total <= TARGET_S[profile] else "MISSES"
            print(f"{profile}: {total:.0f} s {verdict} the {TARGET_S[profile]} s target")
    print(json.dumps({"dataset": args.dataset or "mnist", "seconds": results, "totals": totals}))


if __name__ == "__main__":
    main()
