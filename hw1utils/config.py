"""Run profile, device, seeding, repository paths and figure/result export."""

from __future__ import annotations

import ast
import json
import math
import os
import random
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = REPO_ROOT / "figures"
SCRATCH_DIR = REPO_ROOT / "scratch"  # git-ignored: where quick-profile and scratch runs write
PROFILES = ("quick", "full")

# The quick profile: smoke-test sizes for the tests, per notebook. These values replace the ones in
# the notebook's `parameters` cell when PROFILE is "quick", except where a value was given explicitly
# (papermill -p NAME VALUE). Every other setting keeps its parameters-cell value.
QUICK: dict[str, dict[str, Any]] = {
    "1-1a_simulate_function": dict(N_POINTS=128, LR_SEARCH_EPOCHS=100, LRS=(3e-3, 1e-2), SEARCH_SEEDS=(100,),
                                   SEEDS=(0, 1), MAX_EPOCHS=200, PLATEAU_PATIENCE=100, EVAL_EVERY=10,
                                   BOOTSTRAP=200),
    "1-1b_train_actual_task": dict(STEPS=30, EVALUATIONS=2, TRAIN_LIMIT=2_000, SEEDS=(0, 1), RESAMPLES=200),
    "1-2a_optimization_trajectory": dict(EPOCHS=3, SNAPSHOT_EVERY=1, TRAIN_LIMIT=1_000, SURFACE_GRID=7,
                                         SURFACE_EXAMPLES=500, FUNCTION_POINTS=128, FUNCTION_EPOCHS=60,
                                         FUNCTION_SNAPSHOT_EVERY=6),
    "1-2b_gradient_norm": dict(EPOCHS=2, TRAIN_LIMIT=1_000, FUNCTION_POINTS=128, FUNCTION_EPOCHS=100,
                               FUNCTION_EVAL_EVERY=10),
    "1-2c_minimal_ratio": dict(RUNS=10, START_EPOCHS=(10, 300), NEWTON_STEPS=30, SAMPLES=200, BOOTSTRAP=200),
    "1-3a_random_labels": dict(SIZES=(100, 200), EPOCHS=25, SEEDS=(0, 1), SWEEP_TRAIN=100, FRACTIONS=(0.0, 0.5, 1.0),
                               SWEEP_EPOCHS=20, BOOTSTRAP=100),
    "1-3b_params_vs_generalization": dict(STEPS=40, LARGEST_WIDTH=64, FIT_ACCURACY=0.6, BOOTSTRAP=200),
    "1-3c_flatness_interpolation": dict(TRAIN_LIMIT=1_000, STEPS=60, LARGE_BATCH_STEPS=8, CHECKS=3, N_ALPHAS=13,
                                        DIRECTIONS=2, STEP_POINTS=5, FLATNESS_EXAMPLES=300, BOOTSTRAP=200),
    "1-3d_flatness_sensitivity": dict(TRAIN_SIZE=256, BATCH_SIZES=(32, 128, 256), SEEDS=(0,), TARGET_LOSS=0.1,
                                      STEPS_AT_SMALLEST=400, STEP_FLOOR=200, SENSITIVITY_EXAMPLES=200,
                                      SHARPNESS_EXAMPLES=128, ASCENT_STEPS=3, RESCALE_FACTORS=(0.1, 10.0),
                                      BOOTSTRAP=200),
}
_active_profile: str | None = None  # set by apply_parameters: the profile of the running notebook


def _checked_profile(name: Any, where: str) -> str:
    """`name` if it is a profile, else a ValueError naming `where` it came from and the valid ones."""
    if not isinstance(name, str) or name.strip().lower() not in PROFILES:
        raise ValueError(f"{where}={name!r} is not a profile; use one of {PROFILES}.")
    return name.strip().lower()


def _env_profile() -> str:
    """The profile HW1_PROFILE names (default 'full')."""
    return _checked_profile(os.environ.get("HW1_PROFILE", "full"), "HW1_PROFILE")


def profile() -> str:
    """The active run profile: the running notebook's PROFILE, else HW1_PROFILE (default 'full')."""
    return _env_profile() if _active_profile is None else _active_profile


def notebook_path(stem: str) -> Path:
    """notebooks/<stem>.ipynb of the repository (FileNotFoundError naming it when absent)."""
    path = REPO_ROOT / "notebooks" / f"{stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path.name} in {shown_path(path.parent)}; check the stem {stem!r}")
    return path


def parameter_defaults(stem: str) -> dict[str, Any]:
    """The literal assignments of the notebook's cell tagged `parameters`, read from its file."""
    cells = json.loads(notebook_path(stem).read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{stem}.ipynb has no cell tagged 'parameters'")
    return literal_assignments("".join(cell["source"]), f"{stem}.ipynb")


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


def injected_parameters(namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """The assignments of papermill's injected cell (source starting "# Parameters"), {} when there is none."""
    injected = [source for source in namespace.get("In", []) if source.lstrip().startswith("# Parameters")]
    if not injected:
        return {}
    return {statement.targets[0].id: ast.literal_eval(statement.value)
            for statement in ast.parse(injected[-1]).body if isinstance(statement, ast.Assign)}


def apply_parameters(stem: str, namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """Check the notebook's parameters in `namespace`, apply the profile, name the notebook; returns the values used.

    Call it right after the `parameters` cell with globals(). Papermill's injected names are checked
    against the parameters cell, and every parameter's value against its default's type: an unknown
    name or a wrong type is an error naming it. In the quick profile, QUICK[stem] replaces the sizes
    not given explicitly. PROFILE = "full" left as it is defers to HW1_PROFILE (headless runs, tests).
    """
    defaults, injected = parameter_defaults(stem), injected_parameters(namespace)
    unknown = sorted(set(injected) - set(defaults))
    if unknown:
        raise NameError(f"unknown parameter(s) {', '.join(unknown)} for {stem}; its parameters are "
                        f"{', '.join(defaults)}")
    for name, default in defaults.items():
        if not _fits(namespace[name], default):
            raise TypeError(f"parameter {name} of {stem} must be {_expected(default)} (default {default!r}); "
                            f"got {namespace[name]!r}")
        if isinstance(default, tuple):
            namespace[name] = tuple(namespace[name])
    explicit = {name for name in defaults if name in injected or namespace[name] != defaults[name]}
    chosen = _checked_profile(namespace["PROFILE"], "PROFILE") if "PROFILE" in explicit else _env_profile()
    global _active_profile
    _active_profile = namespace["PROFILE"] = chosen
    if chosen == "quick":
        for name, small in QUICK.get(stem, {}).items():
            if name not in explicit:
                namespace[name] = small
    set_notebook(stem)
    apply_threads()
    return {name: namespace[name] for name in defaults}


def apply_threads() -> None:
    """Set torch's thread count from HW1_THREADS (the runner's share of the cores); unset: torch's default."""
    wanted = os.environ.get("HW1_THREADS", "").strip()
    if not wanted:
        return
    if not wanted.isdigit() or int(wanted) < 1:
        raise ValueError(f"HW1_THREADS={wanted!r} is not a positive whole number of threads; unset it or use e.g. 2")
    torch.set_num_threads(int(wanted))


def is_quick() -> bool:
    """True in the quick (smoke-test) profile."""
    return profile() == "quick"


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
    """False when HW1_PROGRESS=0 (headless runs: no progress bars stored in the notebooks)."""
    return os.environ.get("HW1_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_notebook: str | None = None


def _cannot_write(folder: Path, err: OSError) -> PermissionError:
    """The error for a results folder that cannot be written: which one, why, and the fix."""
    return PermissionError(f"cannot write figures and results to {folder} ({err.strerror}); "
                           "set HW1_FIGURES to a writable folder")


def set_notebook(stem: str) -> Path:
    """Name the running notebook, so figures and results go to figures/<stem>/; returns that folder.

    The folder is made and test-written here, at the notebook's start, so an unwritable one fails
    before any training is spent.
    """
    global _notebook
    _notebook = stem
    folder = figure_dir()
    try:
        probe = folder / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise _cannot_write(folder, err) from err
    return folder


def figures_root() -> Path:
    """HW1_FIGURES when set; else figures/ in the full profile and scratch/figures/ in the quick one."""
    if os.environ.get("HW1_FIGURES"):
        return Path(os.environ["HW1_FIGURES"]).expanduser()
    return FIGURES_DIR if profile() == "full" else SCRATCH_DIR / "figures"


def figure_dir() -> Path:
    """<figures root>/<notebook-stem>/ of the notebook named by `set_notebook` (created on demand)."""
    if _notebook is None:
        raise RuntimeError("call hw1utils.config.set_notebook('<notebook-stem>') before saving figures")
    folder = figures_root() / _notebook
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(folder, err) from err
    return folder


def save_fig(fig, name: str, dpi: int = 110) -> Path:
    """Write `fig` as figures/<notebook-stem>/<name>.png and return the path."""
    path = figure_dir() / f"{name}.png"
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


def save_results(results: dict[str, Any]) -> Path:
    """Write `results` as figures/<notebook-stem>/results.json (floats rounded, sorted keys, atomic replace)."""
    path = figure_dir() / "results.json"
    tmp = path.with_suffix(".json.tmp")
    plain = json.loads(json.dumps(results, default=_jsonable))
    tmp.write_text(json.dumps(_rounded(plain), indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
