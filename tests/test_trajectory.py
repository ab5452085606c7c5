"""Tests of hw1utils.trajectory against hand-built references (torch utilities, numpy SVD, plain loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from hw1utils import trajectory
from hw1utils.models import mlp
from hw1utils.train import History, fit_ensemble


def test_parameter_slices_cut_the_flat_vector_into_each_parameter():
    torch.manual_seed(0)
    net = mlp(3, [4, 5], 2)
    net[1].bias.requires_grad_(False)  # a frozen parameter is not part of the flat vector
    flat = parameters_to_vector(p for p in net.parameters() if p.requires_grad)
    slices = trajectory.parameter_slices(net)
    assert "1.bias" not in slices and list(slices) == ["1.weight", "3.weight", "3.bias", "5.weight", "5.bias"]
    for name, param in net.named_parameters():
        if name in slices:
            assert torch.equal(flat[slices[name]], param.detach().reshape(-1))
    assert max(s.stop for s in slices.values()) == flat.numel()


def _history(epochs: list[int], snapshot_epochs: list[int], offset: float) -> History:
    """A History with metrics at `epochs` (value = offset + epoch) and snapshots full of the epoch."""
    h = History(epoch=list(epochs))
    for i, name in enumerate(trajectory.METRICS):
        setattr(h, name, [offset + e + i / 10 for e in epochs])
    h.snapshots = {e: torch.full((4,), float(e) + offset) for e in snapshot_epochs}
    return h


def test_collect_trajectories_pairs_each_snapshot_with_the_metrics_of_its_epoch():
    histories = [_history([0, 1, 2, 3], [3, 0, 2], 0.0), _history([0, 2, 3], [0, 2], 100.0)]
    traj = trajectory.collect_trajectories(histories)
    assert traj.run.tolist() == [0, 0, 0, 1, 1] and traj.epoch.tolist() == [0, 2, 3, 0, 2]
    assert traj.weights[:, 0].tolist() == [0, 2, 3, 100, 102]
    expected = {name: [o + e + i / 10 for o, e in [(0, 0), (0, 2), (0, 3), (100, 0), (100, 2)]]
                for i, name in enumerate(trajectory.METRICS)}
    for name in trajectory.METRICS:
        np.testing.assert_allclose(traj.metrics[name], expected[name])
    assert traj.of_run(1).tolist() == [False, False, False, True, True]
    with pytest.raises(ValueError, match="no run 5"):
        traj.of_run(5)


def test_collect_trajectories_rejects_snapshots_without_metrics_and_missing_snapshots():
    with pytest.raises(ValueError, match="eval_every"):
        trajectory.collect_trajectories([_history([0, 3], [0, 1, 2, 3], 0.0)])
    with pytest.raises(ValueError, match="snapshot_every"):
        trajectory.collect_trajectories([_history([0, 3], [], 0.0)])


def test_collect_trajectories_from_a_real_ensemble_matches_its_final_weights():
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    ens = fit_ensemble(lambda: mlp(1, [3], 1), [0, 1], (x, x.sin()), epochs=4, lr=1e-2, batch_size=None,
                       loss="mse", snapshot_every=2, eval_every=2, progress=False, device=torch.device("cpu"))
    traj = trajectory.collect_trajectories(ens.histories)
    assert traj.epoch.tolist() == [0, 2, 4, 0, 2, 4]
    torch.testing.assert_close(traj.weights[traj.epoch == 4], ens.flat())
    np.testing.assert_allclose(traj.metrics["train_loss"][traj.of_run(1)], ens.histories[1].train_loss)


# --------------------------------------------------------------------------------------------- PCA, planes


def test_pca_2d_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 30)) @ np.diag(np.linspace(3, 0.1, 30))
    coords, components, ratio, mean = trajectory.pca_2d(torch.as_tensor(vectors))
    centred = vectors - vectors.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(np.sum(components.numpy() * vt[:2], axis=1))
    np.testing.assert_allclose(components.numpy(), signs[:, None] * vt[:2], atol=1e-10)
    np.testing.assert_allclose(coords.numpy(), centred @ (signs[:, None] * vt[:2]).T, atol=1e-10)
    np.testing.assert_allclose(ratio.numpy(), singular[:2] ** 2 / np.sum(singular**2), rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), vectors.mean(0), rtol=1e-12)
    assert ratio.sum() <= 1 and ratio[0] >= ratio[1]
    loadings = components.numpy()
    assert all(row[np.argmax(np.abs(row))] > 0 for row in loadings)  # the sign convention


def test_pca_2d_rejects_degenerate_input():
    with pytest.raises(ValueError, match=">= 2 rows"):
        trajectory.pca_2d(np.ones((1, 5)))
    with pytest.raises(ValueError, match="identical"):
        trajectory.pca_2d(np.ones((4, 5)))


def test_project_onto_plane_matches_numpy_least_squares():
    rng = np.random.default_rng(1)
    center, d1, d2 = (rng.normal(size=20) for _ in range(3))
    in_plane = center + rng.normal(size=(6, 1)) * d1 + rng.normal(size=(6, 1)) * d2
    vectors = in_plane + 0.1 * rng.normal(size=(6, 20))
    expected = np.linalg.lstsq(np.stack([d1, d2], 1), (vectors - center).T, rcond=None)[0].T
    as_torch = [torch.as_tensor(v) for v in (center, d1, d2)]
    np.testing.assert_allclose(trajectory.project_onto_plane(vectors, *as_torch).numpy(), expected, rtol=1e-10)


def test_trajectory_plane_is_centred_on_the_last_snapshot_and_spans_the_numpy_pca_plane():
    generator = torch.Generator().manual_seed(0)
    snapshots = torch.randn(6, 2, generator=generator) @ torch.randn(2, 9, generator=generator) + 3.0
    center, d1, d2, ratio = trajectory.trajectory_plane(snapshots)
    torch.testing.assert_close(center, snapshots[-1].double())
    centred = snapshots.double().numpy() - snapshots.double().numpy().mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    basis = torch.stack([d1, d2]).numpy()
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(np.abs(basis @ vt[:2].T).sum(0), [1, 1], atol=1e-8)  # same plane, same axes
    np.testing.assert_allclose(ratio.numpy(), singular[:2] ** 2 / (singular**2).sum(), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 3 snapshots"):
        trajectory.trajectory_plane(snapshots[:2])


def test_span_around_adds_margins_and_a_minimum_width():
    coords = np.array([[0.0, 1.0], [2.0, 1.0]])
    (a_lo, a_hi), (b_lo, b_hi) = trajectory.span_around(coords, margin=0.5, minimum=1.0)
    assert (a_lo, a_hi) == (-1.0, 3.0) and (b_lo, b_hi) == (0.5, 1.5)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        trajectory.span_around(np.zeros((3, 3)))


def test_surface_with_path_recovers_in_plane_snapshots_and_matches_a_hand_evaluated_grid_point():
    torch.manual_seed(0)
    net = mlp(2, [3], 1).double()
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    center = parameters_to_vector(net.parameters()).detach()
    generator = torch.Generator().manual_seed(1)
    d1, d2 = torch.randn(2, center.numel(), generator=generator, dtype=torch.float64)
    true_path = torch.tensor([[0.5, -0.2], [0.1, 0.3], [0.0, 0.0]], dtype=torch.float64)
    snapshots = center + true_path @ torch.stack([d1, d2])
    surface = trajectory.surface_with_path(net, torch.nn.functional.mse_loss, x, y, snapshots, center, d1, d2,
                                           steps=5, margin=0.5)
    np.testing.assert_allclose(surface.path, true_path.numpy(), atol=1e-10)
    assert surface.a_grid.min() == pytest.approx(-0.25) and surface.b_grid.max() == pytest.approx(0.55)
    i, j = 3, 1
    moved = mlp(2, [3], 1).double()
    vector_to_parameters(center + surface.a_grid[i, j] * d1 + surface.b_grid[i, j] * d2, moved.parameters())
    with torch.no_grad():
        expected = ((moved(x) - y) ** 2).mean().item()
    assert surface.losses[i, j] == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(parameters_to_vector(net.parameters()), center)  # the model is unchanged
