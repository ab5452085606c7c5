"""Weight trajectories of training runs: snapshots stacked with their metrics, per-layer slices of the flat
weight vector, their top-2 PCA, and the PCA plane through one run with the loss surface on it (Li et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hw1utils.landscape import Span, loss_surface
from hw1utils.train import History

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


# ---------------------------------------------------------------- snapshots of several runs with their metrics


def parameter_slices(model: nn.Module) -> dict[str, slice]:
    """name -> slice of that trainable parameter in the flat weight vector (model.parameters() order).

    The order is the one of History.snapshots, Ensemble.flat() and weight_vector.flat_params.
    """
    slices, start = {}, 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            slices[name] = slice(start, start + param.numel())
            start += param.numel()
    if not slices:
        raise ValueError("the model has no trainable parameters, so its flat weight vector is empty")
    return slices


@dataclass(frozen=True)
class Trajectories:
    """The weight snapshots of several runs as one matrix, run-major, with the metrics at each row."""

    weights: Tensor  # (rows, P) flat weights, float32 on the CPU; rows = runs x snapshots per run
    run: np.ndarray  # (rows,) index of the run (position in the histories) of each row
    epoch: np.ndarray  # (rows,) epoch of each snapshot
    metrics: dict[str, np.ndarray]  # name in METRICS -> (rows,) value at that snapshot

    def of_run(self, run: int) -> np.ndarray:
        """Boolean row mask of one run."""
        if run not in set(self.run.tolist()):
            raise ValueError(f"no run {run}; runs are {sorted(set(self.run.tolist()))}")
        return self.run == run


def collect_trajectories(histories: Sequence[History]) -> Trajectories:
    """Stack every run's snapshots (in epoch order) with the metrics recorded at the same epochs.

    Each snapshot epoch needs an evaluation too: train with eval_every dividing snapshot_every.
    """
    if not histories or any(not h.snapshots for h in histories):
        raise ValueError("every history needs weight snapshots: train with snapshot_every=n")
    rows, runs, epochs, metrics = [], [], [], {name: [] for name in METRICS}
    for run, history in enumerate(histories):
        at_epoch = {epoch: i for i, epoch in enumerate(history.epoch)}
        missing = sorted(set(history.snapshots) - set(at_epoch))
        if missing:
            raise ValueError(f"run {run} has snapshots at epochs {missing} without metrics; "
                             "train with eval_every equal to (or dividing) snapshot_every")
        for epoch in sorted(history.snapshots):
            rows.append(history.snapshots[epoch])
            runs.append(run)
            epochs.append(epoch)
            for name in METRICS:
                metrics[name].append(getattr(history, name)[at_epoch[epoch]])
    return Trajectories(torch.stack(rows), np.array(runs), np.array(epochs),
                        {name: np.array(values, dtype=float) for name, values in metrics.items()})


# ---------------------------------------------------------------- PCA of weight snapshots and the plane through one run


def pca_2d(vectors: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-2 PCA of the rows of `vectors` (N, P), centred on their mean, computed in float64.

    Returns coords (N, 2), components (2, P) (orthonormal rows; each flipped so its largest-|loading|
    entry is positive), explained_variance_ratio (2,) and mean (P,). Stack the snapshots of all runs
    into one matrix to get one shared plane.
    """
    data = torch.as_tensor(vectors).to(torch.float64)
    if data.dim() != 2 or data.shape[0] < 2:
        raise ValueError("vectors must be a 2-D (snapshots, parameters) array with >= 2 rows, "
                         f"got shape {tuple(data.shape)}")
    mean = data.mean(0)
    centred = data - mean
    _, singular, components = torch.linalg.svd(centred, full_matrices=False)
    total = singular.square().sum()
    if total == 0:
        raise ValueError("all vectors are identical, so there is no variance to project")
    components = components[:2]
    signs = components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
    components = components * signs
    ratio = torch.zeros(2, dtype=torch.float64, device=data.device)
    ratio[: len(singular[:2])] = singular[:2].square() / total
    return centred @ components.T, components, ratio, mean


def project_onto_plane(vectors: Tensor | np.ndarray, center: Tensor, d1: Tensor, d2: Tensor) -> Tensor:
    """Least-squares (a, b), float64, of each row of `vectors` in the plane center + a d1 + b d2."""
    basis = torch.stack([torch.as_tensor(d).reshape(-1) for d in (d1, d2)], 1).to(torch.float64)
    data = torch.as_tensor(vectors).to(device=basis.device, dtype=torch.float64)
    offsets = data.reshape(-1, basis.shape[0]) - torch.as_tensor(center).to(basis).reshape(-1)
    return torch.linalg.lstsq(basis, offsets.T).solution.T


def trajectory_plane(snapshots: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The plane of Li et al. (2018) through one run: centre the last snapshot, directions its top-2 PCs.

    `snapshots` is (T, P) in epoch order. Returns center (P,), d1 (P,), d2 (P,) (orthonormal, float64)
    and the explained-variance ratio (2,) of the two directions.
    """
    snapshots = torch.as_tensor(snapshots)
    if snapshots.dim() != 2 or len(snapshots) < 3:
        raise ValueError("need a (T, P) matrix of at least 3 snapshots of one run, "
                         f"got shape {tuple(snapshots.shape)}")
    _, components, ratio, _ = pca_2d(snapshots)
    return snapshots[-1].to(torch.float64), components[0], components[1], ratio


def span_around(coords: Tensor | np.ndarray, margin: float = 0.3,
                minimum: float = 0.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """((a_lo, a_hi), (b_lo, b_hi)) covering the (N, 2) points, each side widened by `margin` x its width.

    Each axis is at least `minimum` wide around its points, so a flat trajectory still gets a grid.
    """
    points = np.asarray(coords, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"coords must be an (N, 2) array of plane coordinates, got shape {points.shape}")
    if margin < 0 or minimum < 0:
        raise ValueError(f"margin and minimum must be >= 0, got {margin}, {minimum}")
    spans = []
    for lo, hi in zip(points.min(0), points.max(0), strict=True):
        pad = max(margin * (hi - lo), (minimum - (hi - lo)) / 2, 0.0)
        spans.append((float(lo - pad), float(hi + pad)))
    return spans[0], spans[1]


@dataclass(frozen=True)
class PlaneSurface:
    """A loss surface on the plane center + a d1 + b d2, with a trajectory projected onto that plane."""

    a_grid: np.ndarray  # (steps, steps) coordinate along d1 of each grid point
    b_grid: np.ndarray  # (steps, steps) coordinate along d2
    losses: np.ndarray  # (steps, steps) mean loss at each grid point
    path: np.ndarray  # (T, 2) least-squares plane coordinates (a, b) of the snapshots


def surface_with_path(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                      snapshots: Tensor, center: Tensor, d1: Tensor, d2: Tensor, steps: int,
                      span: Span | None = None, margin: float = 0.3,
                      batch_size: int | None = 4096) -> PlaneSurface:
    """The loss surface on the plane through `center` along d1, d2, and the (T, P) snapshots projected on it.

    `span` defaults to the box around the projected path widened by `margin` (see span_around).
    `loss_fn` returns the batch mean; `model` gives the architecture and is not changed.
    """
    path = project_onto_plane(snapshots, center, d1, d2).cpu().numpy()
    if span is None:
        span = span_around(path, margin)
    a_grid, b_grid, losses = loss_surface(model, loss_fn, x, y, d1, d2, span=span, steps=steps, center=center,
                                          batch_size=batch_size)
    return PlaneSurface(a_grid, b_grid, losses, path)
