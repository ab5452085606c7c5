"""Tests of hw1utils.trajectory against hand-built references (torch utilities, numpy SVD, plain loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from hw1utils import plots, trajectory
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


# ------------------------------------------------------------------ the notebook's views, distances and surfaces


def _trajectories(weights: np.ndarray, run: list[int]) -> trajectory.Trajectories:
    """Trajectories of given (rows, P) weights, epochs counted per run, training loss 1 / (1 + epoch)."""
    run = np.array(run)
    epoch = np.concatenate([np.arange((run == r).sum()) for r in dict.fromkeys(run.tolist())])
    metrics = {name: 1.0 / (1.0 + epoch) for name in trajectory.METRICS}
    return trajectory.Trajectories(torch.as_tensor(weights, dtype=torch.float32), run, epoch, metrics)


def test_procrustes_disparity_matches_scipy_and_ignores_similarity_maps():
    scipy_spatial = pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 2)), rng.normal(size=(10, 2))
    assert trajectory.procrustes_disparity(a, b) == pytest.approx(scipy_spatial.procrustes(a, b)[2], rel=1e-10)
    turn = np.array([[0.6, -0.8], [0.8, 0.6]]) @ np.diag([1, -1])  # a rotation and a reflection
    assert trajectory.procrustes_disparity(a, 3.0 * a @ turn + 5.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        trajectory.procrustes_disparity(a, b[:5])


def test_within_run_share_is_zero_for_fixed_runs_and_one_for_runs_with_one_mean():
    still = _trajectories(np.repeat(np.eye(3), 4, axis=0), [0] * 4 + [1] * 4 + [2] * 4)
    assert trajectory.within_run_share(still.weights, still.run) == pytest.approx(0.0, abs=1e-12)
    two = torch.tensor([[0.0], [2.0], [10.0], [12.0]])  # run means 1 and 11, overall mean 6
    assert trajectory.within_run_share(two, np.array([0, 0, 1, 1])) == pytest.approx(4 / 104)


def test_pca_views_and_layer_rows_cut_the_named_layer_and_compare_it_with_the_whole_model():
    torch.manual_seed(0)
    net = mlp(6, [3, 2], 2)
    params = sum(p.numel() for p in net.parameters())
    traj = _trajectories(np.random.default_rng(2).normal(size=(8, params)), [0] * 4 + [1] * 4)
    views = trajectory.pca_views(traj, net, "3.weight")
    assert list(views) == ["layer 3.weight", "whole model"]
    cut = trajectory.parameter_slices(net)["3.weight"]
    torch.testing.assert_close(views["layer 3.weight"][0], trajectory.pca_2d(traj.weights[:, cut])[0])
    with pytest.raises(ValueError, match="no trainable parameter"):
        trajectory.pca_views(traj, net, "9.weight")
    rows = trajectory.layer_rows(traj, net)
    assert list(rows) == ["1_weight", "3_weight", "5_weight", "whole_model"]
    assert rows["3_weight"]["shape"] == "2x3" and rows["3_weight"]["parameters"] == 6
    assert rows["3_weight"]["share"] == pytest.approx(6 / params)
    assert rows["whole_model"]["share"] == 1 and rows["whole_model"]["disparity"] == pytest.approx(0, abs=1e-12)
    assert rows["3_weight"]["pc12"] == pytest.approx(float(views["layer 3.weight"][2].sum()))
    table = trajectory.layer_table(rows)
    assert list(table.index) == ["1.weight", "3.weight", "5.weight", "whole model"]
    assert table.loc["3.weight", "share of parameters"] == f"{6 / params:.1%}"


def test_movement_summary_of_two_straight_paths():
    # run 0 walks 0 -> 1 -> 3 along e1, run 1 walks 10 e2 -> 10 e2 + 2 e1 in two equal steps
    path0 = np.array([[0, 0], [1, 0], [3, 0]], dtype=float)
    path1 = np.array([[0, 10], [1, 10], [2, 10]], dtype=float)
    traj = _trajectories(np.concatenate([path0, path1]), [0, 0, 0, 1, 1, 1])
    moves = trajectory.movement_summary(traj)
    assert moves["mean_init_to_final"] == pytest.approx(2.5) and moves["mean_path_length"] == pytest.approx(2.5)
    assert moves["min_straightness"] == pytest.approx(1.0)
    assert moves["mean_distance_between_inits"] == pytest.approx(10.0)
    assert moves["mean_distance_between_finals"] == pytest.approx(np.hypot(1, 10))
    assert moves["mean_first_step"] == pytest.approx(1.0) and moves["mean_last_step"] == pytest.approx(1.5)
    assert moves["median_first_loss"] == 1.0 and moves["max_loss_ratio"] == pytest.approx(1 / 3)
    table = plots.labelled_table({"task": moves}, trajectory.MOVEMENT_ROWS)
    assert table.loc[trajectory.MOVEMENT_ROWS["mean_path_length"], "task"] == "2.5"


def test_unrelated_moves_ratio_is_one_for_moves_at_right_angles_and_to_the_gap():
    # starts 0 and 4 e1; run 0 moves 3 e2, run 1 moves 3 e3: ends sqrt(16 + 9 + 9) apart = sqrt(g^2 + 2 d^2)
    paths = [torch.tensor([[0.0, 0, 0], [0, 3, 0]]), torch.tensor([[4.0, 0, 0], [4, 0, 3]])]
    assert trajectory.unrelated_moves_ratio(paths) == pytest.approx(1.0)
    same_move = [torch.tensor([[0.0, 0, 0], [0, 3, 0]]), torch.tensor([[4.0, 0, 0], [4, 3, 0]])]
    assert trajectory.unrelated_moves_ratio(same_move) == pytest.approx(4 / np.sqrt(16 + 18))
    moves = trajectory.movement_summary(_trajectories(torch.cat(paths).numpy(), [0, 0, 1, 1]))
    assert moves["finals_apart_over_unrelated"] == pytest.approx(1.0)
    assert moves["finals_over_inits_apart"] == pytest.approx(np.sqrt(34) / 4)


def test_test_along_paths_finds_each_runs_lowest_test_loss_and_compares_the_end_with_it():
    traj = _trajectories(np.zeros((8, 2)), [0, 0, 0, 0, 1, 1, 1, 1])
    traj.metrics["test_loss"][:] = [3.0, 1.0, 2.0, 2.5, 3.0, 2.0, 1.5, 1.5]  # lowest at epoch 1 and epoch 2
    traj.metrics["test_acc"][:] = [0.1, 0.9, 0.8, 0.85, 0.1, 0.7, 0.8, 0.8]
    summary = trajectory.test_along_paths(traj)
    assert summary["median_epoch_of_min_test_loss"] == 1.5 and summary["last_epoch_of_min_test_loss"] == 2
    assert summary["min_final_over_lowest_test_loss"] == pytest.approx(1.0)
    assert summary["median_final_over_lowest_test_loss"] == pytest.approx((2.5 + 1.0) / 2)
    assert summary["median_final_test_acc"] == pytest.approx(0.825)
    assert summary["max_final_below_best_test_acc"] == pytest.approx(0.05)
    assert set(summary) == set(trajectory.TEST_ROWS)


def test_check_recorded_names_missing_snapshots_and_a_wrong_final():
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    ens = fit_ensemble(lambda: mlp(1, [3, 3], 1), [0, 1], (x, x.sin()), epochs=4, lr=1e-2, batch_size=None,
                       loss="mse", snapshot_every=2, eval_every=2, progress=False, device=torch.device("cpu"))
    traj = trajectory.collect_trajectories(ens.histories)
    views = trajectory.pca_views(traj, ens.template, "3.weight")
    trajectory.check_recorded(traj, ens.flat(), 4, 2, views)
    with pytest.raises(AssertionError, match="snapshots missing"):
        trajectory.check_recorded(traj, ens.flat(), 6, 2, views)
    with pytest.raises(AssertionError, match="not the final"):
        trajectory.check_recorded(traj, ens.flat() + 1, 4, 2, views)


def test_error_surfaces_and_cuts_are_centred_on_the_final_snapshot_and_leave_the_model_alone():
    torch.manual_seed(0)
    net = mlp(2, [4], 1).double()
    x, y = torch.randn(30, 2, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    final = parameters_to_vector(net.parameters()).detach().clone()
    generator = torch.Generator().manual_seed(3)
    snapshots = final + torch.randn(5, final.numel(), generator=generator, dtype=torch.float64).cumsum(0).flip(0)
    snapshots[-1] = final
    loss_fn = torch.nn.functional.mse_loss
    with torch.no_grad():
        final_loss = loss_fn(net(x), y).item()
    surfaces = trajectory.error_surfaces(net, snapshots, loss_fn, x, y, steps=5, direction_seeds=(1, 2))
    summary = trajectory.surface_summary(surfaces)
    assert summary["final_loss"] == pytest.approx(final_loss, rel=1e-10)
    np.testing.assert_allclose(surfaces.pca.path[-1], [0, 0], atol=1e-10)
    np.testing.assert_allclose(surfaces.random.path[-1], [0, 0], atol=1e-10)
    assert summary["random_min_loss"] <= final_loss <= summary["random_max_loss"]
    cuts = trajectory.loss_cuts(net, snapshots, surfaces.random_direction, loss_fn, {"train": (x, y), "test": (x, y)},
                                np.linspace(-1, 1, 5), np.linspace(-0.5, 1.5, 5))
    moved = mlp(2, [4], 1).double()
    vector_to_parameters(snapshots[0], moved.parameters())
    with torch.no_grad():
        init_loss = loss_fn(moved(x), y).item()
    line = trajectory.cut_summary(cuts)
    assert line["line_init"] == pytest.approx(init_loss, rel=1e-10)
    assert line["line_final"] == pytest.approx(final_loss, rel=1e-10)
    assert cuts["random_train"][2] == pytest.approx(final_loss, rel=1e-10)
    torch.testing.assert_close(parameters_to_vector(net.parameters()), final)  # the model is unchanged
    with pytest.raises(ValueError, match="not a point of the cut"):
        trajectory.cut_summary({**cuts, "line_alpha": np.linspace(-0.4, 1.4, 5)})
