"""Weight trajectories of training runs: snapshots stacked with their metrics, per-layer slices of the flat
weight vector, their top-2 PCA (per layer and whole model, compared by Procrustes disparity), distances moved,
and the PCA and random planes through one run with the loss surface and 1-D cuts on them (Li et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from hw1utils.landscape import Span, filter_normalized_direction, loss_line, loss_surface
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


# ---------------------------------------------------------------- the notebook's views, distances and error surfaces


PCA = tuple[Tensor, Tensor, Tensor, Tensor]  # coords, components, explained-variance ratio, mean (see pca_2d)


def pca_views(traj: Trajectories, template: nn.Module, layer: str) -> dict[str, PCA]:
    """Joint PCA of all runs' snapshots: of one parameter's slice ("layer <name>") and of all ("whole model")."""
    cut = parameter_slices(template).get(layer)
    if cut is None:
        raise ValueError(f"no trainable parameter {layer!r}; the model has {', '.join(parameter_slices(template))}")
    return {f"layer {layer}": pca_2d(traj.weights[:, cut]), "whole model": pca_2d(traj.weights)}


def check_recorded(traj: Trajectories, final_weights: Tensor, epochs: int, every: int,
                   views: dict[str, PCA]) -> None:
    """Raise AssertionError unless the snapshots are those trained (epoch 0, then every `every` epochs up to
    `epochs`, the last equal to final_weights (runs, P)) and each view's two components are orthonormal with
    explained-variance shares in (0, 1]."""
    runs = final_weights.shape[0]
    assert len(traj.epoch) == runs * (epochs // every + 1) and traj.epoch.max() == epochs, "snapshots missing"
    assert np.allclose(traj.weights[traj.epoch == epochs], final_weights.cpu()), "last snapshot is not the final"
    for name, (_, components, ratio, _) in views.items():
        assert ((ratio > 0) & (ratio <= 1)).all(), f"{name}: explained variance out of (0, 1]"
        assert np.allclose((components @ components.T).numpy(), np.eye(2)), f"{name}: components not orthonormal"


def procrustes_disparity(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Residual of the best similarity map (shift, rotation or reflection, scale) of b onto a, both (N, k).

    Both are centred and scaled to unit Frobenius norm first, as in scipy.spatial.procrustes: 0 means
    the same picture up to that map, 1 means nothing in common.
    """
    x, y = (torch.as_tensor(m, dtype=torch.float64) for m in (a, b))
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"need two (N, k) arrays of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = (m - m.mean(0) for m in (x, y))
    x, y = (m / m.norm() for m in (x, y))
    return max(0.0, float(1 - torch.linalg.svdvals(x.T @ y).sum() ** 2))  # >= 0 up to rounding


def within_run_share(weights: Tensor, run: np.ndarray) -> float:
    """Share of the snapshots' total variance that lies within runs (around each run's mean), not between them."""
    data = torch.as_tensor(weights, dtype=torch.float64)
    total = (data - data.mean(0)).square().sum()
    within = sum((data[run == r] - data[run == r].mean(0)).square().sum() for r in np.unique(run))
    return float(within / total)


LAYER_COLUMNS = {  # layer_rows key -> column label of the notebook's table, and its format
    "shape": ("shape", "{}"), "parameters": ("parameters", "{:,}"), "share": ("share of parameters", "{:.1%}"),
    "pc1": ("PC 1", "{:.1%}"), "pc2": ("PC 2", "{:.1%}"), "pc12": ("PC 1 + PC 2", "{:.1%}"),
    "within_run": ("variance within runs", "{:.1%}"), "disparity": ("disparity to whole model", "{:.2f}"),
}


def layer_rows(traj: Trajectories, template: nn.Module) -> dict[str, dict[str, float | int | str]]:
    """Per weight matrix (name with "_" for ".") and for the whole model ("whole_model"): its size and share
    of the parameters, the joint PCA's explained variance, the variance within runs, and the Procrustes
    disparity of its 2-D picture to the whole model's."""
    whole = pca_2d(traj.weights)[0]
    slices = {name: cut for name, cut in parameter_slices(template).items() if template.get_parameter(name).dim() > 1}
    rows = {}
    for name, cut in [*slices.items(), ("whole_model", slice(None))]:
        weights = traj.weights[:, cut]
        coords, _, ratio, _ = pca_2d(weights)
        shape = "x".join(map(str, template.get_parameter(name).shape)) if name in slices else "all"
        rows[name.replace(".", "_")] = {
            "shape": shape, "parameters": weights.shape[1], "share": weights.shape[1] / traj.weights.shape[1],
            "pc1": float(ratio[0]), "pc2": float(ratio[1]), "pc12": float(ratio.sum()),
            "within_run": within_run_share(weights, traj.run), "disparity": procrustes_disparity(whole, coords)}
    return rows


def layer_table(rows: dict[str, dict]) -> pd.DataFrame:
    """layer_rows as a table of formatted strings, one labelled column per number."""
    table = pd.DataFrame(rows).T[list(LAYER_COLUMNS)]
    table = table.apply(lambda column: column.map(LAYER_COLUMNS[column.name][1].format))
    table.index = [name.replace("_", " " if name == "whole_model" else ".", 1) for name in table.index]
    return table.rename(columns={key: label for key, (label, _) in LAYER_COLUMNS.items()})


def movement_summary(traj: Trajectories) -> dict[str, float]:
    """Training loss at the ends, and weight-space distances (means over runs): travelled, path length,
    runs apart at start and end, distance moved in the first and last collection periods."""
    runs = sorted(set(traj.run.tolist()))
    paths = [traj.weights[traj.of_run(r)].double() for r in runs]
    steps = [(p[1:] - p[:-1]).norm(dim=1) for p in paths]
    travelled = [float((p[-1] - p[0]).norm()) for p in paths]
    lengths = [float(s.sum()) for s in steps]
    first, last = (np.array([traj.metrics["train_loss"][traj.of_run(r)][i] for r in runs]) for i in (0, -1))
    inits_apart, finals_apart = (torch.pdist(torch.stack([p[i] for p in paths])).mean().item() for i in (0, -1))
    return {"median_first_loss": float(np.median(first)), "median_last_loss": float(np.median(last)),
            "max_loss_ratio": float((last / first).max()),
            "mean_init_to_final": float(np.mean(travelled)), "mean_path_length": float(np.mean(lengths)),
            "min_straightness": float(min(t / length for t, length in zip(travelled, lengths, strict=True))),
            "mean_distance_between_inits": inits_apart, "mean_distance_between_finals": finals_apart,
            "mean_first_step": float(np.mean([s[0].item() for s in steps])),
            "mean_last_step": float(np.mean([s[-1].item() for s in steps])),
            "finals_over_inits_apart": finals_apart / inits_apart,
            "finals_apart_over_unrelated": unrelated_moves_ratio(paths)}


def unrelated_moves_ratio(paths: Sequence[Tensor]) -> float:
    """Mean distance between runs' final weights over what unrelated moves would give.

    If each run moved from its start by the mean distance d, at right angles to every other run's move and
    to the gap g between the starts, two ends would lie sqrt(g^2 + 2 d^2) apart; 1 means exactly that.
    """
    starts, ends = torch.stack([p[0] for p in paths]), torch.stack([p[-1] for p in paths])
    moved = (ends - starts).norm(dim=1).mean().item()
    return torch.pdist(ends).mean().item() / math.hypot(torch.pdist(starts).mean().item(), math.sqrt(2) * moved)


MOVEMENT_ROWS = {  # movement_summary key -> row label of the notebook's table
    "median_first_loss": "training loss, first snapshot (median over runs)",
    "median_last_loss": "training loss, last snapshot (median over runs)",
    "max_loss_ratio": "last / first training loss, largest over runs",
    "mean_init_to_final": "distance initial -> final weights", "mean_path_length": "length of the path",
    "min_straightness": "distance / path length, smallest over runs",
    "mean_distance_between_inits": "distance between two runs' initial weights",
    "mean_distance_between_finals": "distance between two runs' final weights",
    "mean_first_step": "distance moved in the first collection period",
    "mean_last_step": "distance moved in the last collection period",
    "finals_over_inits_apart": "distance between finals / between initial weights",
    "finals_apart_over_unrelated": "distance between finals / if the moves were unrelated",
}


def test_along_paths(traj: Trajectories) -> dict[str, float]:
    """Test loss and accuracy at every snapshot of the real paths: where each run's test loss is lowest, and how
    the end compares with that point (medians and extremes over runs)."""
    runs = sorted(set(traj.run.tolist()))
    loss = [traj.metrics["test_loss"][traj.of_run(r)] for r in runs]
    acc = [traj.metrics["test_acc"][traj.of_run(r)] for r in runs]
    epochs = [traj.epoch[traj.of_run(r)] for r in runs]
    best = [int(np.argmin(values)) for values in loss]
    return {"median_epoch_of_min_test_loss": float(np.median([e[b] for e, b in zip(epochs, best, strict=True)])),
            "last_epoch_of_min_test_loss": int(max(e[b] for e, b in zip(epochs, best, strict=True))),
            "min_final_over_lowest_test_loss": float(min(v[-1] / v[b] for v, b in zip(loss, best, strict=True))),
            "median_final_over_lowest_test_loss": float(np.median([v[-1] / v[b] for v, b in zip(loss, best)])),
            "median_final_test_acc": float(np.median([a[-1] for a in acc])),
            "median_best_test_acc": float(np.median([a.max() for a in acc])),
            "max_final_below_best_test_acc": float(max(a.max() - a[-1] for a in acc))}


TEST_ROWS = {  # test_along_paths key -> row label of the notebook's table
    "median_epoch_of_min_test_loss": "epoch of the lowest test loss (median over runs)",
    "last_epoch_of_min_test_loss": "epoch of the lowest test loss, latest over runs",
    "min_final_over_lowest_test_loss": "final / lowest test loss, smallest over runs",
    "median_final_over_lowest_test_loss": "final / lowest test loss (median over runs)",
    "median_final_test_acc": "test accuracy at the end (median over runs)",
    "median_best_test_acc": "best test accuracy on the path (median over runs)",
    "max_final_below_best_test_acc": "best minus final test accuracy, largest over runs",
}


@dataclass(frozen=True)
class ErrorSurfaces:
    """The loss around one run's final weights on its PCA plane and on a filter-normalised random plane."""

    ratio: Tensor  # (2,) share of the run's snapshot variance along its two PCA directions
    pca: PlaneSurface  # on the PCA plane of the run's own snapshots (unit directions)
    random: PlaneSurface  # on two filter-normalised random directions, span [-1, 1]
    random_direction: Tensor  # (P,) the first random direction (for 1-D cuts)


def error_surfaces(model: nn.Module, snapshots: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                   y: Tensor, steps: int, direction_seeds: tuple[int, int]) -> ErrorSurfaces:
    """Li et al. (2018)'s two planes through the last of one run's (T, P) snapshots, with its path on each."""
    center, d1, d2, ratio = trajectory_plane(snapshots)
    r1, r2 = (filter_normalized_direction(model, seed).to(center) for seed in direction_seeds)
    pca = surface_with_path(model, loss_fn, x, y, snapshots, center, d1, d2, steps=steps)
    random = surface_with_path(model, loss_fn, x, y, snapshots, center, r1, r2, steps=steps, span=(-1.0, 1.0))
    return ErrorSurfaces(ratio, pca, random, r1)


def loss_cuts(model: nn.Module, snapshots: Tensor, direction: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
              splits: dict[str, tuple[Tensor, Tensor]], random_alphas: np.ndarray,
              line_alphas: np.ndarray) -> dict[str, np.ndarray]:
    """Loss per split along `direction` through the final snapshot, and on the line initial (0) -> final (1)."""
    init, final = (snapshots[i].to(torch.float64) for i in (0, -1))
    cuts = {"random_alpha": np.asarray(random_alphas), "line_alpha": np.asarray(line_alphas)}
    for split, (x, y) in splits.items():
        cuts[f"random_{split}"] = loss_line(model, loss_fn, x, y, direction, random_alphas, center=final)
        cuts[f"line_{split}"] = loss_line(model, loss_fn, x, y, final - init, line_alphas, center=init)
    return cuts


def _at(alphas: np.ndarray, values: np.ndarray, alpha: float) -> float:
    """The value at the grid point alpha (ValueError when alpha is not on the grid)."""
    hit = np.flatnonzero(np.isclose(alphas, alpha))
    if len(hit) != 1:
        raise ValueError(f"alpha = {alpha} is not a point of the cut; put it on the grid")
    return float(values[hit[0]])


def surface_summary(surfaces: ErrorSurfaces) -> dict[str, float]:
    """What the surfaces' text quotes: path extents, in-plane variance, centre and extreme losses."""
    pca, random = surfaces.pca, surfaces.random
    centre = tuple(s // 2 for s in random.losses.shape)  # (0, 0) of the odd grid over [-1, 1]
    lowest = np.unravel_index(np.argmin(pca.losses), pca.losses.shape)
    return {"in_plane_variance": float(surfaces.ratio.sum()),
            "path_extent_pca": float(np.ptp(pca.path, axis=0).max()),
            "path_extent_random": float(np.ptp(random.path, axis=0).max()),
            "pca_min_loss": float(pca.losses.min()), "pca_max_loss": float(pca.losses.max()),
            "pca_min_distance_to_final": float(np.hypot(pca.a_grid[lowest], pca.b_grid[lowest])),
            "final_loss": float(random.losses[centre]), "random_max_loss": float(random.losses.max()),
            "random_min_loss": float(random.losses.min())}


def cut_summary(cuts: dict[str, np.ndarray]) -> dict[str, float]:
    """What the 1-D cuts' text quotes: the line's ends and minima (train, test) and the random cut's extremes."""
    alphas, train, test = cuts["line_alpha"], cuts["line_train"], cuts["line_test"]
    between, beyond = (alphas >= 0) & (alphas <= 1), alphas > 1
    return {"line_init": _at(alphas, train, 0), "line_final": _at(alphas, train, 1),
            "line_largest_rise_between": float(np.diff(train[between]).max()),
            "line_min_beyond": float(train[beyond].min()),
            "line_alpha_min_beyond": float(alphas[beyond][train[beyond].argmin()]),
            "line_test_final": _at(alphas, test, 1), "line_test_min": float(test.min()),
            "line_alpha_test_min": float(alphas[test.argmin()]),
            "random_alpha_train_min": float(cuts["random_alpha"][cuts["random_train"].argmin()]),
            "random_train_max": float(cuts["random_train"].max()), "random_test_max": float(cuts["random_test"].max())}


SURFACE_ROWS = {  # surface_summary key -> row label of the notebook's table
    "in_plane_variance": "share of the run's snapshot variance in its PCA plane",
    "path_extent_pca": "path's widest extent on the PCA plane",
    "path_extent_random": "path's widest extent on the random plane",
    "final_loss": "training loss at the final weights (centre)",
    "pca_min_loss": "lowest loss on the PCA grid", "pca_min_distance_to_final": "its distance from the final weights",
    "random_min_loss": "lowest loss on the random grid", "random_max_loss": "highest loss on the random grid",
}
CUT_ROWS = {  # cut_summary key -> row label of the notebook's table
    "line_init": "line: training loss at alpha = 0 (initial weights)",
    "line_final": "line: training loss at alpha = 1 (final weights)",
    "line_largest_rise_between": "line: largest rise between neighbouring points, 0 <= alpha <= 1",
    "line_min_beyond": "line: lowest training loss beyond alpha = 1",
    "line_alpha_min_beyond": "line: its alpha", "line_test_final": "line: test loss at alpha = 1",
    "line_test_min": "line: lowest test loss", "line_alpha_test_min": "line: its alpha",
    "random_alpha_train_min": "random direction: alpha of the lowest training loss",
    "random_train_max": "random direction: highest training loss",
    "random_test_max": "random direction: highest test loss",
}
