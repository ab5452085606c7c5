"""Wall time of the notebook suite at three sizes, in one go (copies run; nothing committed changes).

    python benchmarks/bench_suite.py [--sizes quick,committed,full-size] [--jobs N] [NOTEBOOK ...]

Sizes:
  quick      HW1_PROFILE=quick: the smoke-test sizes the tests run (each notebook's QUICK).
  committed  HW1_PROFILE=full on the data found here: the runs behind the committed outputs.
  full-size  HW1_PROFILE=full on full-size data: the real MNIST (60,000 training images) when the data
             root has it, else HW1_DATASET=fashion-mnist (60,000) stands in for it, and the output says
             which was used; hw1utils.data.write_cifar_like's 50,000 + 10,000 synthetic CIFAR-shaped
             images are the CIFAR-10 folder. They are written to a temporary data root, HW1_DATA, which also
             holds links to every entry of the usual data root (config.data_dir()), so the other datasets are
             found as usual. The image data must be on this machine already (data folder or Debian's
             dataset-fashion-mnist package); it is checked first, then HW1_OFFLINE=1 keeps downloads
             (and failed download attempts) out of the times.

Every notebook runs headless on a temporary copy, with figures written to a temporary folder (HW1_FIGURES),
the training cache off (HW1_CACHE=off) so every training is timed, and progress bars off. HW1_DATASET is
unset in the quick and committed sizes; other variables pass through (HW1_OFFLINE=1 there keeps the time a
failed download attempt takes out of the notebooks' times). Notebooks run as the runner runs them: --jobs
side by side (default: one per core), each with one torch thread (HW1_THREADS);
the total is the wall time of the whole size.
Prints a table per size and whether the size met its target (TARGET_S), then one JSON line: the machine,
seconds per notebook, totals, failures. A notebook that fails (e.g. its last cell finds a claim of its
text contradicted by other data) is timed up to the failure and marked failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from nbconvert.preprocessors import CellExecutionError

from hw1utils import config, data
from hw1utils.notebooks import KERNEL_THREADS, NOTEBOOK_DIR, TIMINGS, all_notebooks, execute, longest_first

SIZES = ("quick", "committed", "full-size")
TARGET_S = {"quick": 6 * 60, "committed": 10 * 60, "full-size": 10 * 60}  # whole suite, on the 2-core machine
STAND_IN = "fashion-mnist"  # 60,000 training images, standing in for MNIST where the real one is absent
FULL_SIZE_TRAIN = 60_000  # training images the full-size image dataset must have


def machine() -> dict[str, object]:
    """Cores, torch threads (the kernels inherit this environment), device and versions."""
    device = config.device()
    return {"cpu_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def full_size_data_root(scratch: Path) -> Path:
    """A data root holding the synthetic CIFAR-shaped set and links to the usual root's entries."""
    usual, root = config.data_dir(), scratch / "data"
    start = time.perf_counter()
    batches = data.write_cifar_like(root)
    print(f"  full-size: wrote {data.SYNTHETIC_CIFAR} (50,000 + 10,000) in {time.perf_counter() - start:.1f} s",
          flush=True)
    if usual.is_dir():
        for entry in usual.iterdir():
            if entry.name != batches.name:
                (root / entry.name).symlink_to(entry.resolve())
    return root


def full_size_dataset(root: Path) -> str:
    """The dataset the full size runs on: the real MNIST when `root` has it whole, else the stand-in (checked)."""
    mnist = data.load_dataset("mnist", root=root, download=False)
    if not mnist.is_subset and len(mnist.y_train) >= FULL_SIZE_TRAIN:
        print(f"  full-size: the real MNIST ({mnist.source})", flush=True)
        return "mnist"
    try:
        stand_in = data.load_dataset(STAND_IN, root=root, download=False)
    except FileNotFoundError as err:
        raise SystemExit(f"full-size needs the real MNIST or {STAND_IN} on this machine (downloads are not timed); "
                         f"get MNIST first with: python -c \"from hw1utils.data import load_dataset; "
                         f"load_dataset('mnist')\"\n{err}") from err
    if len(stand_in.y_train) < FULL_SIZE_TRAIN:
        raise SystemExit(f"full-size needs {FULL_SIZE_TRAIN:,} training images of {STAND_IN}; "
                         f"found {stand_in.source}")
    print(f"  full-size: {STAND_IN} stands in for MNIST, which is not whole here ({mnist.source})", flush=True)
    return STAND_IN


@contextmanager
def size_environment(size: str, scratch: Path):
    """os.environ set up for one size inside the block, restored after it."""
    with mock.patch.dict(os.environ):
        os.environ.pop("HW1_DATASET", None)
        os.environ.update(HW1_PROFILE="quick" if size == "quick" else "full", HW1_CACHE="off", HW1_PROGRESS="0",
                          HW1_FIGURES=str(scratch / "figures"))
        if size == "full-size":
            root = full_size_data_root(scratch)
            os.environ.update(HW1_DATASET=full_size_dataset(root), HW1_DATA=str(root))
            os.environ["HW1_OFFLINE"] = "1"  # every dataset the size needs is here: nothing to download
        yield os.environ.get("HW1_DATASET", "mnist")


def time_notebook(path: Path, scratch: Path, size: str) -> tuple[float, bool]:
    """(wall seconds, succeeded) of one run of a copy of `path` in `scratch`."""
    copy = scratch / path.name
    copy.write_bytes(path.read_bytes())
    start = time.perf_counter()
    try:
        return execute(copy), True
    except CellExecutionError as err:
        print(f"{path.stem} failed at size {size}:\n{err}", file=sys.stderr, flush=True)
        return time.perf_counter() - start, False


def time_size(paths: list[Path], size: str, scratch: Path, jobs: int) -> dict[str, object]:
    """Seconds per notebook, the wall time of the whole size, failures and target verdict; `jobs` side by side."""
    seconds, failed = {}, []
    with size_environment(size, scratch) as dataset:
        os.environ["HW1_THREADS"] = str(KERNEL_THREADS)  # the runner's thread policy
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(time_notebook, path, scratch, size): path for path in longest_first(paths)}
            for future in as_completed(futures):
                stem = futures[future].stem
                seconds[stem], succeeded = future.result()
                if not succeeded:
                    failed.append(stem)
                print(f"  {size:9s} {stem:32s} {seconds[stem]:8.1f} s{'' if succeeded else '  FAILED'}", flush=True)
        total = time.perf_counter() - start
    seconds = {path.stem: seconds[path.stem] for path in paths}
    return {"seconds": seconds, "total": total, "failed": failed, "target": TARGET_S[size], "dataset": dataset,
            "met": not failed and total <= TARGET_S[size], "jobs": jobs, "threads_per_notebook": KERNEL_THREADS}


def print_table(size: str, result: dict[str, object]) -> None:
    """One size's table: seconds per notebook, the total, and the target verdict."""
    print(f"\n{size}\n{'notebook':34s}{'seconds':>10s}")
    for stem, seconds in result["seconds"].items():
        print(f"{stem:34s}{seconds:10.1f}{'  failed' if stem in result['failed'] else ''}")
    verdict = "meets" if result["met"] else "MISSES"
    reason = f" ({len(result['failed'])} failed)" if result["failed"] else ""
    print(f"{'total':34s}{result['total']:10.1f}\n{size}: {result['total']:.0f} s {verdict} the "
          f"{result['target']} s target{reason}\n", flush=True)


def notebook_path(name: str) -> Path:
    """A notebook given as a path or as a stem of notebooks/; SystemExit naming the valid stems otherwise."""
    for candidate in (Path(name), NOTEBOOK_DIR / f"{Path(name).stem}.ipynb"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no notebook {name!r}; give a path or one of: {', '.join(p.stem for p in all_notebooks())}")


def parse_sizes(text: str) -> list[str]:
    """The comma-separated sizes, checked against SIZES."""
    sizes = [size.strip() for size in text.split(",") if size.strip()]
    unknown = [size for size in sizes if size not in SIZES]
    if unknown or not sizes:
        raise argparse.ArgumentTypeError(f"unknown size(s) {', '.join(unknown) or '(none given)'}; "
                                         f"valid: {','.join(SIZES)}")
    return sizes


def main() -> None:
    """Time the suite at each size asked for; print the tables and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="paths or stems (default: all nine)")
    parser.add_argument("--sizes", type=parse_sizes, default=list(SIZES), help=f"default {','.join(SIZES)}")
    parser.add_argument("--save", action="store_true",
                        help=f"write the measurement to {config.shown_path(TIMINGS)} (README's table, runner's order)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="notebooks side by side, as the runner does (default: one per core)")
    args = parser.parse_args()
    paths = [notebook_path(name) for name in args.notebooks] or all_notebooks()
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-{size}-") as scratch:
            results[size] = time_size(paths, size, Path(scratch), args.jobs)
        print_table(size, results[size])
    measurement = {"machine": machine(), "sizes": results}
    print(json.dumps(measurement))
    if args.save:
        TIMINGS.write_text(json.dumps(measurement, indent=1) + "\n")
        print(f"wrote {config.shown_path(TIMINGS)}; `python -m hw1utils.report` puts it in README.md")


if __name__ == "__main__":
    main()
