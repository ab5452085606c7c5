"""Tests of hw1utils.weight_vector against hand-built vectors, the model's own forward pass and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_curvature import F64, _autograd_gradient, _data, _tanh_net
from torch import nn

from hw1utils import weight_vector as wv

# -------------------------------------------------------------------------------------------- flat vectors


def test_flat_params_round_trip_in_parameter_order_and_skips_frozen():
    model = _tanh_net((2, 3, 1), seed=0)
    model[2].bias.requires_grad_(False)
    flat = wv.flat_params(model)
    expected = torch.cat([model[0].weight.reshape(-1), model[0].bias, model[2].weight.reshape(-1)])
    assert torch.equal(flat, expected.detach())
    wv.set_flat_params(model, torch.arange(flat.numel(), dtype=F64))
    assert torch.equal(model[0].bias, torch.tensor([6.0, 7.0, 8.0], dtype=F64))
    assert torch.equal(model[2].weight, torch.tensor([[9.0, 10.0, 11.0]], dtype=F64))
    with pytest.raises(ValueError, match="12 trainable parameters"):
        wv.set_flat_params(model, torch.zeros(13))


def test_functional_loss_matches_model_and_rejects_unreduced_losses():
    model = _tanh_net((2, 4, 1), seed=1)
    x, y = _data(9, 2, 1, seed=1)
    loss = wv.functional_loss(model, nn.MSELoss())
    assert torch.allclose(loss(wv.flat_params(model), x, y), F.mse_loss(model(x), y))
    with pytest.raises(ValueError, match="scalar mean loss"):
        wv.functional_loss(model, nn.MSELoss(reduction="none"))(wv.flat_params(model), x, y)


# ------------------------------------------------------------------------------------------- gradient norm


def test_grad_norm_chunked_equals_full_and_autograd():
    model = _tanh_net((3, 4, 2), seed=9)
    x, y = _data(10, 3, 2, seed=9)
    expected = float(_autograd_gradient(model, nn.MSELoss(), x, y).norm())
    assert wv.grad_norm(model, nn.MSELoss(), x, y) == pytest.approx(expected, rel=1e-12)
    assert wv.grad_norm(model, nn.MSELoss(), x, y, batch_size=3) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        wv.grad_norm(model, nn.MSELoss(), x, y, batch_size=0)
