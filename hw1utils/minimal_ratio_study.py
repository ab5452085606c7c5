"""1-2c: critical points of many small ReLU nets reached from several stages of training, classified as
minimum / saddle / stalled (with the cause), with both minimal-ratio definitions and the tolerance sweep."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from hw1utils import critical_points, curvature, train, uncertainty, weight_vector

PINNED = "stalled: kink pinned on a training input"
FLAT = "stalled: gradient-flat region"


def stage_seeds(start_epochs: Sequence[int], runs: int, first_seed: int = 0) -> dict[int, list[int]]:
    """Seeds first_seed .. first_seed + runs - 1 split into consecutive equal blocks, one per phase-1 length."""
    if runs % len(start_epochs):
        raise ValueError(f"runs = {runs} does not split evenly over {len(start_epochs)} start epochs")
    block = runs // len(start_epochs)
    starts = [first_seed + i * block for i in range(len(start_epochs))]
    return {int(e): list(range(start, start + block)) for e, start in zip(start_epochs, starts)}


def relu_gap(model: nn.Module, flat: Tensor, inputs: Tensor) -> float:
    """Smallest |pre-activation| of any ReLU unit at any training input, for weights `flat` (float64 copy)."""
    twin = copy.deepcopy(model).double()
    weight_vector.set_flat_params(twin, flat)
    h, gaps, layers = inputs.double(), [], list(twin.children())
    with torch.no_grad():
        for layer, after in zip(layers, [*layers[1:], None]):
            h = layer(h)
            if isinstance(after, nn.ReLU):
                gaps.append(float(h.abs().min()))
    return min(gaps) if gaps else float("inf")


def classify(grad_norm: np.ndarray, n_negative: np.ndarray, gap: np.ndarray, criterion: float,
             pin_gap: float) -> np.ndarray:
    """'minimum' / 'saddle' below the gradient-norm criterion, else the named stall (never critical)."""
    stalled = np.where(gap < pin_gap, PINNED, FLAT)
    return np.where(grad_norm < criterion, np.where(n_negative > 0, "saddle", "minimum"), stalled)


def eigen_counts(eigenvalues: Tensor, rel_tol: float) -> pd.DataFrame:
    """Per run: eigenvalues above +tol, below -tol and in between, tol = rel_tol * max|lambda| of that run."""
    tol = rel_tol * eigenvalues.abs().amax(1, keepdim=True)
    positive, negative = (eigenvalues > tol).sum(1).numpy(), (eigenvalues < -tol).sum(1).numpy()
    return pd.DataFrame({"n_positive": positive, "n_negative": negative,
                         "n_flat": eigenvalues.shape[1] - positive - negative})


def hessian_ratios(eigenvalues: Tensor, rel_tol: float) -> np.ndarray:
    """(K,) Hessian minimal ratio of each run (curvature.minimal_ratio at tol = rel_tol * max|lambda| of that run)."""
    return np.array([curvature.minimal_ratio(e, curvature.relative_tol(e, rel_tol)) for e in eigenvalues])


def relative_magnitudes(eigenvalues: Tensor) -> np.ndarray:
    """(K, P) |lambda| / max|lambda| of each run."""
    return (eigenvalues.abs() / eigenvalues.abs().amax(1, keepdim=True)).numpy()


def spectral_gap(relative: np.ndarray, floor: float = 1e-20) -> tuple[float, float]:
    """The widest empty interval (lower, upper) of pooled |lambda|/max|lambda| values (log scale, zeros at floor)."""
    values = np.unique(np.log10(np.clip(relative.ravel(), floor, None)))
    widest = int(np.argmax(np.diff(values)))
    return float(10 ** values[widest]), float(10 ** values[widest + 1])


def tolerance_sweep(eigenvalues: Tensor, rel_grid: Sequence[float]) -> pd.DataFrame:
    """Median Hessian minimal ratio and number of saddles (runs with an eigenvalue < -tol) per tolerance."""
    rows = []
    for rel in rel_grid:
        table = eigen_counts(eigenvalues, rel)
        rows.append({"rel_tol": float(rel), "median_ratio": float(np.median(hessian_ratios(eigenvalues, rel))),
                     "saddles": int((table["n_negative"] > 0).sum())})
    return pd.DataFrame(rows)


def find_critical_points(build: Callable[[], nn.Module], start_epochs: Sequence[int], runs: int,
                         data: tuple[Tensor, Tensor], *, lr: float, newton_steps: int, first_seed: int = 0,
                         device: torch.device | None = None) -> tuple[pd.DataFrame, Tensor, nn.Module, dict]:
    """Adam on the MSE per start epoch's block of seeds (from first_seed), then Levenberg-Marquardt on the gradient.

    Returns the runs (seed, start epoch, loss and gradient norm before/after phase 2), the (runs, P)
    float64 final weights, the architecture template, and phase 2's median gradient norm per step per stage.
    """
    x, y = data
    frames, flats, history = [], [], {}
    for epochs, seeds in stage_seeds(start_epochs, runs, first_seed).items():
        ensemble = train.fit_ensemble(build, seeds, (x, y), epochs=epochs, lr=lr, batch_size=None, optimizer="adam",
                                      loss="mse", eval_every=epochs, progress=False, device=device)
        final, lm = critical_points.minimize_grad_norm(ensemble.template, nn.MSELoss(), ensemble.flat(), x, y,
                                                       steps=newton_steps)
        frames.append(pd.DataFrame({"seed": seeds, "start_epochs": epochs, "loss_adam": lm.loss_before.cpu().numpy(),
                                    "loss": lm.loss_after.cpu().numpy(),
                                    "grad_norm_adam": lm.grad_norm_before.cpu().numpy(),
                                    "grad_norm": lm.grad_norm_after.cpu().numpy()}))
        flats.append(final)
        history[epochs] = lm.median_grad_norm
    return pd.concat(frames, ignore_index=True), torch.cat(flats), ensemble.template, history


def measure(runs: pd.DataFrame, template: nn.Module, flats: Tensor, data: tuple[Tensor, Tensor], *,
            rel_tol: float, criterion: float, pin_gap: float, radius: float,
            samples: int) -> tuple[pd.DataFrame, Tensor]:
    """Add both minimal ratios, the eigenvalue counts, the kink gap and the class of every run; and the spectra."""
    x, y = data
    eigenvalues = curvature.stacked_hessian_eigenvalues(template, nn.MSELoss(), flats, x, y).cpu()
    runs = pd.concat([runs, eigen_counts(eigenvalues, rel_tol)], axis=1)
    runs["ratio_hessian"] = hessian_ratios(eigenvalues, rel_tol)
    runs["index"] = runs["n_negative"] / eigenvalues.shape[1]
    twin = copy.deepcopy(template).double()
    sampled, gaps = [], []
    for flat, seed in zip(flats, runs["seed"]):
        weight_vector.set_flat_params(twin, flat)
        sampled.append(curvature.sampled_minimal_ratio(twin, nn.MSELoss(), x, y, radius=radius, n_samples=samples,
                                                       seed=int(seed)))
        gaps.append(relu_gap(template, flat, x))
    runs["ratio_sampled"], runs["kink_gap"] = sampled, gaps
    runs["constant_fit"] = np.isclose(runs["loss"], float(y.double().var(unbiased=False)), rtol=1e-6, atol=0)
    runs["kind"] = classify(runs["grad_norm"].to_numpy(), runs["n_negative"].to_numpy(), runs["kink_gap"].to_numpy(),
                            criterion, pin_gap)
    return runs, eigenvalues


def counts(runs: pd.DataFrame, criterion: float, pin_gap: float) -> dict[str, float]:
    """The numbers the text quotes: runs per kind, stall causes, final gradient-norm quantiles, constant fits."""
    kind, critical = runs["kind"], runs["kind"].isin(["minimum", "saddle"])
    quantiles = runs["grad_norm"].quantile([0.1, 0.5, 0.9])
    return {"runs": len(runs), "critical": int(critical.sum()), "minima": int((kind == "minimum").sum()),
            "saddles": int((kind == "saddle").sum()), "stalled": int((~critical).sum()),
            "stalled_pinned": int((kind == PINNED).sum()), "stalled_flat": int((kind == FLAT).sum()),
            "below_criterion": int((runs["grad_norm"] < criterion).sum()),
            "grad_norm_q10": float(quantiles[0.1]), "grad_norm_median": float(quantiles[0.5]),
            "grad_norm_q90": float(quantiles[0.9]), "critical_max_grad_norm": float(runs["grad_norm"][critical].max()),
            "stalled_min_grad_norm": float(runs["grad_norm"][~critical].min()) if (~critical).any() else None,
            "saddles_at_constant_fit": int((runs["constant_fit"] & (kind == "saddle")).sum()),
            "minima_at_constant_fit": int((runs["constant_fit"] & (kind == "minimum")).sum()),
            "nontrivial_minima": int((~runs["constant_fit"] & (kind == "minimum")).sum()),
            "nontrivial_saddles": int((~runs["constant_fit"] & (kind == "saddle")).sum()),
            "critical_pinned": int((critical & (runs["kink_gap"] < pin_gap)).sum())}


def nontrivial(runs: pd.DataFrame) -> pd.DataFrame:
    """The critical points that are not the constant fit (the net's output is not the mean of y)."""
    return runs[runs["kind"].isin(["minimum", "saddle"]) & ~runs["constant_fit"]]


def constant_fit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Critical points at the constant fit per kind: count, loss, index and Hessian ratio (range over the runs)."""
    at_fit = runs[runs["kind"].isin(["minimum", "saddle"]) & runs["constant_fit"]]
    return (at_fit.groupby("kind")
            .agg(runs=("seed", "size"), loss=("loss", "median"), index_min=("index", "min"),
                 index_max=("index", "max"), ratio_hessian=("ratio_hessian", "median"))
            .reset_index())


CORRELATED = {"index vs loss": "index", "Hessian ratio vs loss": "ratio_hessian",
              "sampled ratio vs loss": "ratio_sampled"}


def rank_correlations(runs: pd.DataFrame, resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """Spearman rho (average ranks for ties) of each CORRELATED column with the loss, over the non-trivial points.

    The constant-fit points are left out: their losses are one value up to rounding, and ranking that
    rounding would order them at random. With fewer than 3 such points every rho and bound is NaN.
    """
    points = nontrivial(runs)
    if len(points) < 3:
        return {name: {"rho": float("nan"), "low": float("nan"), "high": float("nan")} for name in CORRELATED}
    return {name: uncertainty.rank_correlation(points["loss"].to_numpy(), points[column].to_numpy(), resamples, seed)
            for name, column in CORRELATED.items()}


def kind_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per kind and start epoch, with the median loss, gradient norm and both minimal ratios."""
    return (runs.groupby(["kind", "start_epochs"])
            .agg(runs=("seed", "size"), loss=("loss", "median"), grad_norm=("grad_norm", "median"),
                 ratio_hessian=("ratio_hessian", "median"), ratio_sampled=("ratio_sampled", "median"),
                 n_negative=("n_negative", "median"))
            .reset_index())
