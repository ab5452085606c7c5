"""Finished trainings cached on disk, keyed by their inputs and the version of the training code.

An interrupted notebook run restarted later loads what already finished instead of training it
again. A key covers everything that determines the result (initial weights, data, settings, and the
source of the training, model and data code: TRAINING_SOURCES, not the plotting or analysis modules);
an entry that fails to load or whose stored key differs is recomputed, never used.
Set HW1_CACHE=off to disable.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config

PACKAGE_DIR = Path(__file__).resolve().parent
TRAINING_SOURCES = ("cache.py", "data.py", "models.py", "train.py")  # the modules that decide a cached training
_announced: set[str] = set()  # entry names whose cache hits were already reported in this process


def source_hash(folder: Path) -> str:
    """Short hash of the TRAINING_SOURCES files in `folder`, names included."""
    digest = hashlib.sha256()
    for name in TRAINING_SOURCES:
        digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


@cache
def code_version() -> str:
    """Hash of the training, model and data source: editing them makes older entries stale, other modules not."""
    return source_hash(PACKAGE_DIR)


def _feed(digest: Any, value: Any) -> None:
    """Add `value` (tensors, modules, containers, plain values) to `digest`, structure included."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, nn.Module):
        digest.update(repr(value).encode())
        _feed(digest, value.state_dict())
    elif isinstance(value, dict):
        digest.update(b"{")
        for k in sorted(value, key=str):
            _feed(digest, str(k))
            _feed(digest, value[k])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif callable(value):  # a hook: its name, its source and the plain values its closure captured
        digest.update(f"F{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}".encode())
        digest.update(_source(value).encode())
        for cell in getattr(value, "__closure__", None) or ():
            if isinstance(cell.cell_contents, (str, int, float, bool, type(None))):
                _feed(digest, cell.cell_contents)
    else:
        digest.update(f"{type(value).__name__}:{value!r}".encode())


def _source(function: Callable) -> str:
    """The source text of `function`, or '' where Python keeps none (builtins, some C extensions)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def fingerprint(*parts: Any) -> str:
    """A hex key over `parts` and the code version."""
    digest = hashlib.sha256(code_version().encode())
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def enabled() -> bool:
    """False when HW1_CACHE=off."""
    return str(config.cache_dir()).lower() not in ("off", "0", "none")


def entry_path(name: str, key: str) -> Path:
    """File of the entry `name` with `key`."""
    return config.cache_dir() / f"{name}-{key[:20]}.pt"


def load(name: str, key: str) -> dict[str, Any] | None:
    """The stored payload for (name, key), or None when absent, unreadable or stored under another key."""
    path = entry_path(name, key)
    if not enabled() or not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or corrupt file: recompute
        warnings.warn(f"ignoring unreadable cache entry {path} ({err.__class__.__name__}); recomputing", stacklevel=2)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        warnings.warn(f"ignoring stale cache entry {path}; recomputing", stacklevel=2)
        return None
    if name not in _announced:
        _announced.add(name)
        print(f"{name}: finished trainings loaded from the cache (HW1_CACHE=off retrains)", flush=True)
    return entry["payload"]


def store(name: str, key: str, payload: dict[str, Any]) -> None:
    """Write the payload atomically (a partial file is never left under the final name)."""
    if not enabled():
        return
    path = entry_path(name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "payload": payload}, tmp)
    tmp.replace(path)


def load_or_compute(name: str, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The cached payload for (name, key), computing and storing it when missing or unusable."""
    payload = load(name, key)
    if payload is None:
        payload = compute()
        store(name, key, payload)
    return payload
