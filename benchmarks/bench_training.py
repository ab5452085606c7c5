"""Training speed, side by side in one run on the same data and model.

    python benchmarks/bench_training.py [--train-size N] [--epochs E] [--members K]

(a) `fit` (in-memory tensors, permutation + slicing) vs the conventional loop of other HW1
    implementations (torchvision MNIST dataset with ToTensor + DataLoader(shuffle=True)),
    MLP 784-256-256-256-10, Adam, batch 64 and 256, on MNIST-format IDX files; both sides do the
    same work: training steps only (fit with eval_every=0, the loop with no evaluation);
(b) `fit_ensemble` of K small nets (1-10-10-1 on sin(5 pi x)/(5 pi x)) vs K separate `fit` runs;
(c) achieved training GFLOP/s of `fit` at batch 256 vs this machine's measured float32 matmul peak;
(d) `fit_ensemble` of 3 small CNNs (1-1b's 4-conv member) stacked through vmap vs one after another,
    which decides `train._stacking_pays`.
Prints a table, then one JSON line with the ratios.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Subset

from hw1utils import config, data, models, train

IDX_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # MNIST-format IDX files available offline
CPU = torch.device("cpu")


def mnist_format_root(folder: Path) -> Path:
    """A torchvision MNIST root (MNIST/raw/*-ubyte) made from the offline IDX files."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(IDX_SOURCE / f"{stem}.gz") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def build_mlp() -> torch.nn.Module:
    """The benchmark MLP, 784-256-256-256-10."""
    return models.mlp(784, [256, 256, 256], 10)


def conventional_loop(root: Path, n: int, batch_size: int, epochs: int) -> float:
    """Seconds for the DataLoader loop: ToTensor per sample, shuffle, Adam; no evaluation."""
    dataset = torchvision.datasets.MNIST(root, train=True, download=False,
                                         transform=torchvision.transforms.ToTensor())
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    model = build_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return time.perf_counter() - start


def fit_seconds(tensors: tuple, batch_size: int, epochs: int) -> float:
    """Seconds for `fit` on in-memory tensors, training steps only (eval_every=0)."""
    torch.manual_seed(0)
    history = train.fit(build_mlp(), tensors, epochs=epochs, lr=1e-3, batch_size=batch_size,
                        eval_every=0, progress=False, device=CPU)
    return history.seconds


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of a size x size matmul on this machine."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def ensemble_vs_loop(members: int, epochs: int) -> tuple[float, float]:
    """Seconds for fit_ensemble of `members` 1-10-10-1 nets, and for the same fits one by one."""
    x, y = data.function_data("sinc", 256, device=CPU)
    build = lambda: models.mlp(1, [10, 10], 1)  # noqa: E731
    kw = dict(epochs=epochs, lr=1e-2, batch_size=None, loss="mse", eval_every=epochs, progress=False, device=CPU)
    start = time.perf_counter()
    train.fit_ensemble(build, range(members), (x, y), **kw)
    ensemble = time.perf_counter() - start
    start = time.perf_counter()
    for seed in range(members):
        torch.manual_seed(seed)
        train.fit(build(), (x, y), seed=seed, **kw)
    return ensemble, time.perf_counter() - start


def cnn_stacked_vs_loop(members: int = 3, images: int = 2_560, epochs: int = 2) -> tuple[float, float]:
    """Seconds for fit_ensemble of `members` small CNNs stacked (vmap), and one after another."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    build = lambda: models.cnn_with_params((1, 28, 28), 4, 10, 6_000)  # noqa: E731
    seconds = []
    for stacked in (True, False):
        start = time.perf_counter()
        train.fit_ensemble(build, range(members), (x, y), epochs=epochs, lr=1e-3, batch_size=128, eval_every=epochs,
                           progress=False, device=CPU, stacked=stacked)
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def main() -> None:
    """Run the three comparisons and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=60_000, help="training images used in (a) and (c)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timing in (a) and (c)")
    parser.add_argument("--members", type=int, default=100, help="models in (b)")
    parser.add_argument("--ensemble-epochs", type=int, default=300, help="full-batch epochs in (b)")
    args = parser.parse_args()
    config.keep_freed_memory()  # the allocator setting every notebook runs with (config.parameters)
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = mnist_format_root(Path(tmp))
        dataset = data.load_dataset("mnist", root=root, download=False).subset(n_train=args.train_size)
        tensors = tuple(t.to(CPU) for t in dataset.float_tensors(CPU))
        for batch in (64, 256):
            loop = conventional_loop(root, len(tensors[0]), batch, args.epochs)
            ours = fit_seconds(tensors, batch, args.epochs)
            rows += [(f"DataLoader + ToTensor, batch {batch}", loop), (f"fit (in memory), batch {batch}", ours)]
            ratios[f"fit_vs_dataloader_bs{batch}"] = loop / ours
        mlp = build_mlp()
        flops = models.flops_per_example(mlp, (1, 28, 28)) * 3 * len(tensors[0]) * args.epochs
        achieved = flops / ours / 1e9
    peak = matmul_peak_gflops()
    ratios["fraction_of_matmul_peak"] = achieved / peak
    ensemble, loop = ensemble_vs_loop(args.members, args.ensemble_epochs)
    rows += [(f"fit_ensemble of {args.members} nets", ensemble), (f"{args.members} separate fits", loop)]
    ratios["ensemble_vs_loop"] = loop / ensemble
    stacked, one_by_one = cnn_stacked_vs_loop()
    rows += [("3 CNNs stacked (vmap)", stacked), ("3 CNNs one after another", one_by_one)]
    ratios["cnn_loop_vs_stacked"] = stacked / one_by_one
    print(f"{'what':45s} {'seconds':>9s}")
    for name, seconds in rows:
        print(f"{name:45s} {seconds:9.2f}")
    print(f"fit at batch 256: {achieved:.1f} GFLOP/s (forward + backward = 3x forward); matmul peak {peak:.1f} GFLOP/s")
    print(json.dumps({k: round(v, 3) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
