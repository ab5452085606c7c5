"""A notebook's parameters (`parameters`, passed on as one object), profile, device, threads, memory, paths, export."""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = REPO_ROOT / "figures"
SCRATCH_DIR = REPO_ROOT / "scratch"  # git-ignored: where quick-profile and scratch runs write
PROFILES = ("quick", "full")
# glibc mallopt parameters (malloc.h) and the values `keep_freed_memory` gives them
MALLOPT_SETTINGS = {"M_TRIM_THRESHOLD": (-1, 2**31 - 1), "M_TOP_PAD": (-2, 64 * 2**20), "M_MMAP_THRESHOLD": (-3, 2**30)}

def _checked_profile(name: Any, where: str) -> str:
    """`name` if it is a profile, else a ValueError naming `where` it came from and the valid ones."""
    if not isinstance(name, str) or name.strip().lower() not in PROFILES:
        raise ValueError(f"{where}={name!r} is not a profile; use one of {PROFILES}.")
    return name.strip().lower()


def _env_profile() -> str:
    """The profile HW1_PROFILE names (default 'full')."""
    return _checked_profile(os.environ.get("HW1_PROFILE", "full"), "HW1_PROFILE")


def profile() -> str:
    """The profile of headless runs: HW1_PROFILE (default 'full')."""
    return _env_profile()


def literal_assignments(source: str, where: str) -> dict[str, Any]:
    """{NAME: value} of a parameters cell's `NAME = literal` lines; ValueError naming `where` for anything else."""
    defaults = {}
    for statement in ast.parse(source).body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ValueError(f"{where}: the parameters cell may hold only `NAME = literal` lines; "
                             f"line {statement.lineno} is not one")
        try:
            defaults[statement.targets[0].id] = ast.literal_eval(statement.value)
        except ValueError as err:
            raise ValueError(f"{where}: the parameters cell may hold only `NAME = literal` lines; line "
                             f"{statement.lineno} assigns an expression (compute it in the next cell)") from err
    return defaults


def _fits(value: Any, default: Any) -> bool:
    """True when `value` has the type the parameter's default implies (ints pass for floats, None for sizes)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    if default is None:
        return value is None or isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return type(value) is type(default)


def _expected(default: Any) -> str:
    """The type a parameter with this default takes, in words."""
    if default is None:
        return "an int or None"
    if isinstance(default, (tuple, list)):
        return "a list"
    return {float: "a number", int: "an int", bool: "True or False", str: "a string"}.get(type(default), "a dict")


INJECTED = "# Parameters"  # first line of the cell papermill (and the runner) inject after the parameters cell


def _executed_cells(history: Sequence[str]) -> tuple[str, str]:
    """The sources of the parameters cell and of the injected cell ("" if none) among the executed cells.

    The parameters cell is the latest executed cell of literal assignments that sets PROFILE and is not the
    injected one: what actually ran, unsaved edits in JupyterLab included.
    """
    injected = next((source for source in reversed(history) if source.lstrip().startswith(INJECTED)), "")
    for source in reversed(history):
        if source.lstrip().startswith(INJECTED) or not re.search(r"^PROFILE\s*=", source, re.MULTILINE):
            continue
        try:
            literal_assignments(source, "")
        except (ValueError, SyntaxError):
            continue
        return source, injected
    raise RuntimeError("no parameters cell among the executed cells: run the cell tagged `parameters` first")


@dataclass(frozen=True)
class Parameters:
    """The values a notebook runs with, its stem and profile: returned by `parameters`, passed on explicitly."""

    stem: str  # the notebook's file name without .ipynb: figures go to <figures root>/<stem>/
    profile: str  # "full" or "quick"
    values: dict[str, Any]  # every parameter's value used (PROFILE included): results.json's `settings`

    def __getattr__(self, name: str) -> Any:
        """The value of parameter `name` (AttributeError naming the parameters when there is none)."""
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"{self.stem} has no parameter {name}; its parameters are "
                                 f"{', '.join(self.values)}") from None

    @property
    def figures(self) -> Path:
        """<figures root>/<stem>/, made on demand."""
        folder = figures_root(self.profile) / self.stem
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _cannot_write(folder, err) from err
        return folder


def parameters(stem: str, namespace: Mapping[str, Any]) -> Parameters:
    """The notebook's parameters, checked, with the profile applied; reads `namespace`, never writes it.

    Call it right after the `parameters` cell with globals(). The defaults are the literal assignments of
    the parameters cell as executed (IPython's `In`); QUICK there holds the quick profile's sizes, which
    replace the values not given explicitly (by papermill's injected cell or an edit of the namespace).
    A papermill name that is not a parameter, or a value whose type differs from its default's, is an
    error naming it. PROFILE = "full" left as it is defers to HW1_PROFILE (headless runs, tests). The
    figures folder is test-written here, so an unwritable one fails before any training is spent.
    """
    cell, injected_source = _executed_cells(namespace.get("In", []))
    defaults = literal_assignments(cell, f"{stem}.ipynb")
    quick = defaults.pop("QUICK", {})
    injected = literal_assignments(injected_source, "the injected parameters") if injected_source else {}
    unknown = sorted(set(injected) - set(defaults) - {"QUICK"})
    if unknown:
        raise NameError(f"unknown parameter(s) {', '.join(unknown)} for {stem}; its parameters are "
                        f"{', '.join(defaults)}")
    values = {}
    for name, default in defaults.items():
        value = namespace[name]
        if not _fits(value, default):
            raise TypeError(f"parameter {name} of {stem} must be {_expected(default)} (default {default!r}); "
                            f"got {value!r}")
        values[name] = tuple(value) if isinstance(default, tuple) else value
    explicit = {name for name in defaults if name in injected or values[name] != defaults[name]}
    chosen = _checked_profile(values["PROFILE"], "PROFILE") if "PROFILE" in explicit else _env_profile()
    values["PROFILE"] = chosen
    unknown_quick = sorted(set(quick) - set(defaults))
    if unknown_quick:
        raise NameError(f"QUICK of {stem} names {', '.join(unknown_quick)}, which are not parameters")
    if chosen == "quick":
        values.update({name: small for name, small in quick.items() if name not in explicit})
    params = Parameters(stem, chosen, values)
    _test_write(params.figures)
    apply_threads()
    keep_freed_memory()
    return params


def apply_threads() -> None:
    """Set torch's thread count from HW1_THREADS (the runner's share of the cores); unset: torch's default."""
    wanted = os.environ.get("HW1_THREADS", "").strip()
    if not wanted:
        return
    if not wanted.isdigit() or int(wanted) < 1:
        raise ValueError(f"HW1_THREADS={wanted!r} is not a positive whole number of threads; unset it or use e.g. 2")
    torch.set_num_threads(int(wanted))


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse; returns whether it applied (False off glibc: nothing changes).

    By default every tensor above a few MB is a fresh mmap whose pages fault in on first touch and return to the
    system when freed, so a CNN step that allocates several MB of feature maps spends much of its time in page
    faults. Keeping freed memory (the process stays at its peak size) changes no value, only the time: training
    1-1b's CNNs for 150 steps of 128 images took 0.81x (2 conv), 0.88x (4 conv) and 0.85x (6 conv) as long,
    whole process with start-up, on one thread of the 2-core machine (the steps alone: 2 conv 0.5x).
    """
    path = ctypes.util.find_library("c")
    if sys.platform != "linux" or not path:
        return False
    libc = ctypes.CDLL(path)
    if not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(code, value) == 1 for code, value in MALLOPT_SETTINGS.values())


def dataset_name(default: str = "mnist") -> str:
    """The image dataset for the MNIST experiments: HW1_DATASET, else `default`."""
    return os.environ.get("HW1_DATASET", default).strip().lower() or default


def data_dir() -> Path:
    """Folder holding datasets in torchvision's layout: HW1_DATA, default `data/` at the repo root."""
    return Path(os.environ.get("HW1_DATA", REPO_ROOT / "data")).expanduser()


def cache_dir() -> Path:
    """Git-ignored folder for cached trainings: HW1_CACHE, default `.cache/` at the repo root."""
    return Path(os.environ.get("HW1_CACHE", REPO_ROOT / ".cache")).expanduser()


def show_progress() -> bool:
    """Whether to draw progress bars: HW1_PROGRESS when set; else off in a headless kernel, on elsewhere.

    A kernel that a Jupyter server started (JupyterLab, Notebook) has JPY_SESSION_NAME set and shows
    widget bars; one started by papermill, nbconvert or nbclient has not, so no widget state or progress
    text is stored in a headless run's outputs. Outside a kernel (a script) bars go to the terminal.
    """
    wanted = os.environ.get("HW1_PROGRESS", "").strip().lower()
    if wanted:
        return wanted not in ("0", "false", "no", "off")
    in_kernel = "ipykernel" in sys.modules
    return not in_kernel or "JPY_SESSION_NAME" in os.environ


def shown_path(path: Path | str) -> str:
    """`path` relative to the repository when inside it, so printed text names no machine's folders.

    Links are not followed: data/MNIST linked to a folder elsewhere still shows as data/MNIST.
    """
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def offline() -> bool:
    """True when HW1_OFFLINE=1 forbids downloads."""
    return os.environ.get("HW1_OFFLINE", "0").strip().lower() in ("1", "true", "yes")


def device() -> torch.device:
    """CUDA when present (and not disabled by HW1_DEVICE=cpu), else CPU."""
    wanted = os.environ.get("HW1_DEVICE", "").strip().lower()
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cannot_write(folder: Path, err: OSError) -> PermissionError:
    """The error for a results folder that cannot be written: which one, why, and the fix."""
    return PermissionError(f"cannot write figures and results to {folder} ({err.strerror}); "
                           "set HW1_FIGURES to a writable folder")


def _test_write(folder: Path) -> None:
    """PermissionError (naming the folder and the fix) unless a file can be written in `folder`."""
    try:
        probe = folder / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise _cannot_write(folder, err) from err


def figures_root(run_profile: str) -> Path:
    """HW1_FIGURES when set; else figures/ in the full profile and scratch/figures/ in the quick one."""
    if os.environ.get("HW1_FIGURES"):
        return Path(os.environ["HW1_FIGURES"]).expanduser()
    return FIGURES_DIR if run_profile == "full" else SCRATCH_DIR / "figures"


def save_fig(params: Parameters, fig, name: str, dpi: int = 110) -> Path:
    """Write `fig` as <figures root>/<notebook-stem>/<name>.png and return the path."""
    path = params.figures / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def _jsonable(value: Any) -> Any:
    """Tensors, arrays and NumPy scalars turned into plain JSON values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in results.json")


RESULT_DIGITS = 12  # significant digits kept in results.json: reruns of unchanged code are byte-identical


def _rounded(value: Any) -> Any:
    """`value` with every float rounded to RESULT_DIGITS significant digits, and nan/inf stored as None."""
    if isinstance(value, float):
        return float(f"{value:.{RESULT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def save_results(params: Parameters, results: dict[str, Any]) -> Path:
    """Write `results`, with the parameters used as `settings`, as <figures root>/<stem>/results.json.

    Floats are rounded to RESULT_DIGITS, keys sorted, and the file replaced atomically.
    """
    path = params.figures / "results.json"
    results = {"settings": params.values, **results}
    tmp = path.with_suffix(".json.tmp")
    plain = json.loads(json.dumps(results, default=_jsonable))
    tmp.write_text(json.dumps(_rounded(plain), indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
