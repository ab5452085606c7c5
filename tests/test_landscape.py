"""Tests of hw1utils.landscape against independent references (hand evaluation of moved models, row norms)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_classifiers import _assert_state_equal, _data, _net, _snapshot
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from hw1utils import landscape
from hw1utils.models import cnn

# ---------------------------------------------------------------------------------------------- directions


def test_filter_normalized_direction_matches_weight_row_norms_and_zeroes_biases():
    torch.manual_seed(0)
    model = cnn((1, 8, 8), [3, 5], n_classes=3).double()
    direction = landscape.filter_normalized_direction(model, seed=1)
    assert direction.shape == (sum(p.numel() for p in model.parameters()),)
    pieces = direction.split([p.numel() for p in model.parameters()])
    for (name, weight), piece in zip(model.named_parameters(), pieces, strict=True):
        piece = piece.reshape(weight.shape)
        if weight.dim() == 1:
            assert torch.count_nonzero(piece) == 0, name
        else:
            torch.testing.assert_close(piece.flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1))
    assert torch.equal(direction, landscape.filter_normalized_direction(model, seed=1))
    assert not torch.equal(direction, landscape.filter_normalized_direction(model, seed=2))


# ------------------------------------------------------------------------------------------- loss surfaces


def _hand_loss_at(model: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of a copy of `model` holding the flat parameters `flat`."""
    twin = copy.deepcopy(model)
    vector_to_parameters(flat, twin.parameters())
    with torch.no_grad():
        return F.cross_entropy(twin(x), y).item()


def test_loss_surface_center_and_a_grid_point_match_hand_evaluation():
    model = _net(0)
    saved = _snapshot(model)
    x, y = _data(30)
    d1, d2 = (landscape.filter_normalized_direction(model, seed=s) for s in (1, 2))
    a_grid, b_grid, losses = landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, d1, d2, span=(-1, 1),
                                                    steps=5, batch_size=7)
    assert a_grid.shape == b_grid.shape == losses.shape == (5, 5)
    assert (a_grid[2, 2], b_grid[2, 2]) == (0.0, 0.0)
    theta = parameters_to_vector(model.parameters()).detach()
    assert losses[2, 2] == pytest.approx(_hand_loss_at(model, theta, x, y), rel=1e-12)
    assert (a_grid[0, 3], b_grid[0, 3]) == (-1.0, 0.5)
    assert losses[0, 3] == pytest.approx(_hand_loss_at(model, theta - d1 + 0.5 * d2, x, y), rel=1e-12)
    _assert_state_equal(model, saved)


def test_loss_surface_with_center_and_separate_spans():
    model = _net(0)
    x, y = _data(30)
    d1, d2 = (landscape.filter_normalized_direction(model, seed=s) for s in (1, 2))
    center = parameters_to_vector(_net(3).parameters()).detach()
    a_grid, b_grid, losses = landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, d1, d2,
                                                    span=((0.0, 2.0), (-3.0, 0.0)), steps=3, center=center)
    np.testing.assert_array_equal(a_grid[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(b_grid[0], [-3.0, -1.5, 0.0])
    assert losses[1, 0] == pytest.approx(_hand_loss_at(model, center + d1 - 3 * d2, x, y), rel=1e-12)


def test_loss_line_matches_hand_evaluation():
    model = _net(0)
    x, y = _data(30)
    direction = landscape.filter_normalized_direction(model, seed=4)
    alphas = [-1.0, 0.0, 0.3]
    theta = parameters_to_vector(model.parameters()).detach()
    expected = [_hand_loss_at(model, theta + alpha * direction, x, y) for alpha in alphas]
    np.testing.assert_allclose(landscape.loss_line(model, nn.CrossEntropyLoss(), x, y, direction, alphas),
                               expected, rtol=1e-12)


def test_loss_surface_rejects_wrong_direction_length():
    model = _net(0)
    x, y = _data(10)
    good = landscape.filter_normalized_direction(model)
    with pytest.raises(ValueError, match="direction2"):
        landscape.loss_surface(model, nn.CrossEntropyLoss(), x, y, good, good[:-1])
