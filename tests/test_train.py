"""fit / evaluate / History and fit_ensemble against the plain loop."""

import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from hw1utils import models, train
from hw1utils.weight_vector import flat_params

CPU = torch.device("cpu")


def blobs(n=300, d=6, seed=0):
    """A small separable 3-class problem (train and test)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, d, generator=g) * 3
    y = torch.randint(0, 3, (2 * n,), generator=g)
    x = centers[y] + torch.randn(2 * n, d, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def build():
    return models.mlp(6, [12, 12], 3)


def trained(seed, **kw):
    torch.manual_seed(seed)
    model = build()
    history = train.fit(model, blobs(), seed=seed, **({"progress": False, "device": CPU} | kw))
    return model, history


def test_fit_learns_and_records_every_epoch():
    model, h = trained(0, epochs=5, lr=1e-2, batch_size=32)
    assert h.epoch == [0, 1, 2, 3, 4, 5]
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    assert h.test_acc[-1] > 0.9
    assert h.steps_per_epoch == math.ceil(300 / 32)
    x, y, xt, yt = blobs()
    assert h.final()["test_loss"] == pytest.approx(train.evaluate(model, xt, yt)[0])


def test_fit_is_deterministic_for_a_seed():
    a, ha = trained(1, epochs=3, lr=1e-2, batch_size=16)
    b, hb = trained(1, epochs=3, lr=1e-2, batch_size=16)
    c, _ = trained(2, epochs=3, lr=1e-2, batch_size=16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ha.train_loss == hb.train_loss
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_record_steps_and_snapshots():
    model, h = trained(0, epochs=4, lr=1e-2, batch_size=100, record_steps=True, snapshot_every=2)
    assert len(h.step_loss) == len(h.step_grad_norm) == 4 * 3
    assert sorted(h.snapshots) == [0, 2, 4]
    assert torch.equal(h.snapshots[4], torch.cat([p.detach().flatten() for p in model.parameters()]))


def test_step_grad_norm_is_the_norm_of_the_full_step_gradient():
    x, y, _, _ = blobs()
    torch.manual_seed(0)
    model = build()
    reference = build()
    reference.load_state_dict(model.state_dict())
    h = train.fit(model, (x, y), epochs=1, lr=1e-2, batch_size=None, record_steps=True,
                  progress=False, device=CPU)
    loss = F.cross_entropy(reference(x), y)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()
    assert h.step_grad_norm[0] == pytest.approx(expected, rel=1e-5)
    assert h.step_loss[0] == pytest.approx(loss.item(), rel=1e-6)


def test_on_epoch_values_and_eval_every():
    seen = []
    _, h = trained(0, epochs=6, lr=1e-2, eval_every=4,
                   on_epoch=lambda epoch, model: seen.append(epoch) or {"epoch_again": epoch})
    assert h.epoch == [0, 4, 6] == seen == h.extra["epoch_again"]


def test_patience_stops_on_plateau():
    _, h = trained(0, epochs=200, lr=1e-6, batch_size=None, patience=3, min_improvement=0.5)
    assert h.epoch[-1] < 200


def test_target_loss_stops_at_the_first_evaluation_at_or_below_it():
    _, full = trained(0, epochs=12, lr=1e-2, batch_size=100)
    target = full.train_loss[6]
    first = next(e for e, loss in zip(full.epoch, full.train_loss) if loss <= target)
    _, stopped = trained(0, epochs=12, lr=1e-2, batch_size=100, target_loss=target)
    assert stopped.epoch[-1] == first < 12 and stopped.train_loss == full.train_loss[:first + 1]


def test_ensemble_target_stops_once_every_member_reached_it():
    kw = dict(epochs=20, batch_size=100, eval_every=2, progress=False, device=CPU)
    free = train.fit_ensemble(build, [0, 1], blobs(), lr=[1e-2, 3e-3], **kw)
    target = max(h.train_loss[5] for h in free.histories)
    last = max(next(e for e, loss in zip(h.epoch, h.train_loss) if loss <= target) for h in free.histories)
    stopped = train.fit_ensemble(build, [0, 1], blobs(), lr=[1e-2, 3e-3], target_loss=target, **kw)
    assert all(h.epoch[-1] == last < 20 for h in stopped.histories)


def test_non_finite_loss_names_epoch_and_step():
    x, y, _, _ = blobs()
    x = x.clone()
    x[150] = float("nan")
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step \d+"):
        train.fit(build(), (x, y), epochs=1, lr=1e-2, batch_size=50, progress=False, device=CPU)


@pytest.mark.parametrize("kw, match", [
    (dict(epochs=0), "epochs"), (dict(epochs=2.5), "epochs"), (dict(batch_size=0), "batch_size"),
    (dict(lr=0.0), "learning rate"), (dict(lr=-1e-3), "learning rate"), (dict(lr=float("nan")), "learning rate"),
    (dict(optimizer="lbfgs"), "optimizer"), (dict(loss="hinge"), "loss"),
    (dict(target_loss=0.0), "target_loss must be positive"), (dict(target_loss=float("inf")), "target_loss"),
    (dict(target_loss=0.1, eval_every=0), "needs evaluations"), (dict(eval_train_examples=0), "eval_train_examples"),
])
def test_bad_hyperparameters(kw, match):
    args = dict(epochs=1, lr=1e-2, batch_size=8) | kw
    with pytest.raises(ValueError, match=match):
        train.fit(build(), blobs(), progress=False, device=CPU, **args)
    with pytest.raises(ValueError, match=match):
        train.fit_ensemble(build, [0, 1], blobs(), progress=False, device=CPU, **args)


def test_input_shape_mismatch_is_explained():
    x, y, _, _ = blobs()
    with pytest.raises(ValueError, match=r"inputs of shape \(5,\)"):
        train.fit(build(), (x[:, :5], y), epochs=1, lr=1e-2, progress=False, device=CPU)
    with pytest.raises(ValueError, match="do not fit the model"):
        train.fit_ensemble(build, [0], (x[:, :5], y), epochs=1, lr=1e-2, progress=False, device=CPU)


def test_bad_data_arguments():
    x, y, _, _ = blobs()
    with pytest.raises(TypeError, match="ImageDataset or a tuple"):
        train.fit(build(), x, epochs=1, lr=1e-2, progress=False, device=CPU)
    with pytest.raises(ValueError, match="differ in length"):
        train.fit(build(), (x, y[:-1]), epochs=1, lr=1e-2, progress=False, device=CPU)


def test_evaluate_is_batch_size_independent():
    model = build()
    x, y, _, _ = blobs()
    loss, acc = train.evaluate(model, x, y, batch_size=7)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert math.isnan(train.evaluate(model, x, y.float().unsqueeze(1).expand(-1, 3), loss="mse")[1])


@pytest.mark.parametrize("optimizer, batch_size", [("adam", 32), ("sgd", 50), ("adam", None)])
def test_ensemble_matches_separate_fits(optimizer, batch_size):
    seeds = [3, 4, 5]
    kw = dict(epochs=3, lr=1e-2, batch_size=batch_size, optimizer=optimizer, record_steps=True,
              progress=False, device=CPU)
    ens = train.fit_ensemble(build, seeds, blobs(), **kw)
    for k, seed in enumerate(seeds):
        model, h = trained(seed, **kw)
        member = ens.model(k)
        for p, q in zip(model.parameters(), member.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert h.train_loss == pytest.approx(ens.histories[k].train_loss, rel=1e-4)
        assert h.step_grad_norm == pytest.approx(ens.histories[k].step_grad_norm, rel=1e-3)


def test_ensemble_per_member_learning_rates_and_forward():
    lrs = [1e-3, 3e-2]
    ens = train.fit_ensemble(build, [7, 7], blobs(), epochs=2, lr=lrs, batch_size=64, progress=False, device=CPU)
    for k, lr in enumerate(lrs):
        model, _ = trained(7, epochs=2, lr=lr, batch_size=64)
        torch.testing.assert_close(ens.model(k)[1].weight, model[1].weight, rtol=1e-4, atol=1e-5)
    x = blobs()[0]
    outs = ens.forward(x, batch_size=100)
    assert outs.shape == (2, 300, 3)
    torch.testing.assert_close(outs[1], ens.model(1)(x))
    assert ens.flat().shape == (2, models.count_params(build()))
    with pytest.raises(ValueError, match="one learning rate per seed"):
        train.fit_ensemble(build, [1, 2], blobs(), epochs=1, lr=[1e-3], progress=False, device=CPU)


@pytest.mark.parametrize("optimizer, batch_size", [("adam", 64), ("sgd", None)])
def test_ensemble_interleaved_learning_rates_match_separate_fits(optimizer, batch_size):
    seeds, lrs = [7, 8, 9], [1e-3, 3e-2, 1e-3]  # the members of one rate are not adjacent
    kw = dict(epochs=2, batch_size=batch_size, optimizer=optimizer, record_steps=True, progress=False, device=CPU)
    ens = train.fit_ensemble(build, seeds, blobs(), lr=lrs, **kw)
    for k, (seed, lr) in enumerate(zip(seeds, lrs)):
        model, h = trained(seed, lr=lr, **kw)
        for p, q in zip(model.parameters(), ens.model(k).parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert h.step_grad_norm == pytest.approx(ens.histories[k].step_grad_norm, rel=1e-3)


@pytest.mark.parametrize("optimizer, batch_size, lrs", [("adam", 40, 1e-2), ("sgd", None, [1e-2, 3e-2] * 2 + [1e-2])])
def test_ensemble_in_member_groups_is_bit_for_bit_the_ensemble_in_one_pass(monkeypatch, optimizer, batch_size, lrs):
    kw = dict(epochs=2, lr=lrs, batch_size=batch_size, optimizer=optimizer, record_steps=True, progress=False,
              device=CPU)
    whole = train.fit_ensemble(build, range(5), blobs(), **kw)
    monkeypatch.setattr(train, "CHUNK_BYTES", 40 * 12 * 4 * 2)  # two members of 40 rows (12 wide) a group at most
    row_bytes = train._row_bytes(build())
    assert row_bytes == 12 * 4 and train._row_bytes(models.cnn((1, 8, 8), [2], 3)) is None  # only MLPs are split
    assert train._member_groups(5, row_bytes, 40) == [slice(0, 2), slice(2, 3), slice(3, 5)]  # in member order
    assert train._member_groups(5, None, 40) == [slice(0, 5)]
    grouped = train.fit_ensemble(build, range(5), blobs(), **kw)
    assert all(torch.equal(whole.params[name], grouped.params[name]) for name in whole.params)
    assert [h.step_grad_norm for h in whole.histories] == [h.step_grad_norm for h in grouped.histories]


def test_single_member_ensemble_is_exactly_fit():
    kw = dict(epochs=2, lr=1e-2, batch_size=32, record_steps=True, snapshot_every=1, progress=False, device=CPU)
    ens = train.fit_ensemble(build, [3], blobs(), **kw)
    model, h = trained(3, **kw)
    assert torch.equal(ens.flat()[0], torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert ens.histories[0].to_dict(with_steps=True) == h.to_dict(with_steps=True)
    assert all(torch.equal(ens.histories[0].snapshots[e], h.snapshots[e]) for e in h.snapshots)


def test_ensemble_records_what_fit_records():
    def first_weight(epoch, model):
        return {"first_weight": model[1].weight[0, 0].item()}

    kw = dict(epochs=4, lr=1e-2, batch_size=50, weight_decay=0.1, snapshot_every=2, eval_every=3,
              on_epoch=first_weight, progress=False, device=CPU)
    ens = train.fit_ensemble(build, [3, 4], blobs(), **kw)
    for k, seed in enumerate([3, 4]):
        _, h = trained(seed, **kw)
        member = ens.histories[k]
        assert member.epoch == h.epoch == [0, 3, 4]
        assert sorted(member.snapshots) == sorted(h.snapshots) == [0, 2, 4]
        torch.testing.assert_close(member.snapshots[4], h.snapshots[4], rtol=1e-4, atol=1e-5)
        assert member.extra["first_weight"] == pytest.approx(h.extra["first_weight"], rel=1e-4, abs=1e-6)


def test_ensemble_stops_once_every_member_plateaued():
    kw = dict(epochs=200, batch_size=None, patience=3, min_improvement=0.5, progress=False, device=CPU)
    stalled = train.fit_ensemble(build, [0, 1], blobs(), lr=1e-6, **kw)
    assert stalled.histories[0].epoch[-1] < 200
    mixed = train.fit_ensemble(build, [0, 1], blobs(), lr=[1e-6, 1e-1], **kw)
    assert mixed.histories[0].epoch[-1] > stalled.histories[0].epoch[-1]


def test_ensemble_is_deterministic():
    kw = dict(epochs=2, lr=[1e-2, 3e-2], batch_size=32, progress=False, device=CPU)
    first, second = (train.fit_ensemble(build, [5, 6], blobs(), **kw) for _ in range(2))
    assert torch.equal(first.flat(), second.flat())
    assert [h.train_loss for h in first.histories] == [h.train_loss for h in second.histories]


def test_training_uses_public_torch_apis_only():
    assert "torch._" not in inspect.getsource(train)


def test_ensemble_nan_names_member():
    x, y, _, _ = blobs()
    with pytest.raises(FloatingPointError, match="ensemble member"):
        train.fit_ensemble(build, [0, 1], (x * 1e30, y), epochs=5, lr=10.0, batch_size=None,
                           optimizer="sgd", progress=False, device=CPU)


def test_eval_every_zero_trains_without_evaluating():
    model, h = trained(0, epochs=2, lr=1e-2, eval_every=0)
    assert h.epoch == [] and h.train_loss == []
    reference, _ = trained(0, epochs=2, lr=1e-2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))
    with pytest.raises(ValueError, match="eval_every"):
        trained(0, epochs=1, lr=1e-2, eval_every=-1)


def test_cnn_members_on_cpu_train_one_after_another_like_separate_fits():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    build_cnn = lambda: models.cnn((1, 8, 8), [3, 4], 3)  # noqa: E731
    assert not train._stacking_pays(build_cnn(), CPU) and train._stacking_pays(build(), CPU)
    kw = dict(epochs=2, lr=1e-2, batch_size=32, progress=False, device=CPU)
    lrs = [1e-2, 3e-3]
    auto = train.fit_ensemble(build_cnn, [1, 2], (x, y), **(kw | {"lr": lrs}))
    stacked = train.fit_ensemble(build_cnn, [1, 2], (x, y), stacked=True, **(kw | {"lr": lrs}))
    for k, (seed, lr) in enumerate(zip([1, 2], lrs)):
        torch.manual_seed(seed)
        model = build_cnn()
        history = train.fit(model, (x, y), seed=seed, **(kw | {"lr": lr}))
        assert history.train_loss == auto.histories[k].train_loss  # the same code path: bit for bit
        for p, q, r in zip(model.parameters(), auto.model(k).parameters(), stacked.model(k).parameters()):
            assert torch.equal(p, q)
            torch.testing.assert_close(q, r, rtol=1e-4, atol=1e-5)
    assert auto.forward(x).shape == (2, 96, 3)


def test_a_conv_model_trains_channels_last_and_comes_back_in_the_default_layout():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 8, 8, generator=generator), torch.randint(0, 4, (96,), generator=generator)
    build_cnn = lambda: models.cnn((3, 8, 8), [6, 6], 4)  # noqa: E731
    torch.manual_seed(0)
    model = build_cnn()
    history = train.fit(model, (x, y), epochs=3, lr=1e-2, batch_size=32, progress=False, device=CPU)
    assert all(p.is_contiguous() for p in model.parameters())
    torch.manual_seed(0)
    reference = build_cnn()  # the same steps by hand, in the default layout
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for rows in torch.randperm(96, generator=generator).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(x[rows]), y[rows]).backward()
            optimizer.step()
    torch.testing.assert_close(flat_params(model), flat_params(reference), rtol=1e-4, atol=1e-5)
    loss, _ = train.evaluate(model, x, y)
    assert loss == pytest.approx(history.train_loss[-1], rel=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())


def test_training_metrics_can_be_measured_on_a_fixed_subset():
    x, y, x_test, y_test = blobs()
    model, history = trained(0, epochs=2, lr=1e-2, batch_size=32, eval_train_examples=50)
    assert history.train_loss[-1] == pytest.approx(train.evaluate(model, x[:50], y[:50])[0])
    assert history.test_loss[-1] == pytest.approx(train.evaluate(model, x_test, y_test)[0])
    _, whole = trained(0, epochs=2, lr=1e-2, batch_size=32)
    assert whole.test_loss == history.test_loss and whole.train_loss != history.train_loss


def test_stacked_plain_mlps_run_by_batched_matmuls_with_vmaps_numbers():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(models.mlp(12, [7, 5], 3, "tanh"))
    assert train._is_plain_mlp(members[0])
    assert not train._is_plain_mlp(models.cnn((1, 8, 8), [4], 3))
    assert not train._is_plain_mlp(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
    params, buffers = torch.func.stack_module_state(members)
    per_member, shared = train._stacked_mlp_calls(members[0])
    call = train._member_call(members[0])
    x = torch.randn(6, 3, 2, 2)
    by_vmap = torch.func.vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    torch.testing.assert_close(shared(params, buffers, x), by_vmap)
    xs = torch.randn(3, 6, 3, 2, 2)
    torch.testing.assert_close(per_member(params, buffers, xs), torch.stack([m(xk) for m, xk in zip(members, xs)]))


@pytest.mark.parametrize("n_in, n_out", [(4, 2), (1, 3), (3, 1), (1, 1)])
def test_stacked_linear_gradients_match_autograd_of_the_plain_product(n_in, n_out):
    h = torch.randn(3, 5, n_in, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, n_out, n_in, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, n_out, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(train._StackedLinear.apply, (h, weight, bias))
    assert torch.autograd.gradcheck(train._StackedLinear.apply, (h, weight, None))
    plain = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
    out = train._StackedLinear.apply(h, weight, bias)
    torch.testing.assert_close(out, plain)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(plain, (h, weight, bias), grad)
    got = torch.autograd.grad(out, (h, weight, bias), grad)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    assert got[1].shape == weight.shape and got[1].is_contiguous()


def scheduled_rates(plan, steps_per_epoch):
    """The learning rate of each step of `plan`'s schedule, for a base rate of 1."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = train._scheduler(optimizer, plan, steps_per_epoch)
    rates = []
    for _ in range(plan.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_linear_schedule_falls_to_zero_over_the_run_and_a_target_accuracy_stops_training():
    plan = train._Plan(seeds=[0], lrs=[1.0], epochs=2, batch_size=None, optimizer="sgd", lr_schedule="linear",
                       loss="mse", momentum=0.0, weight_decay=0.0, record_steps=False, snapshot_every=None,
                       eval_every=1, eval_train_examples=None, patience=None, min_improvement=0.01,
                       target_loss=None, target_accuracy=None, on_epoch=None, device=CPU)
    assert scheduled_rates(plan, 5) == pytest.approx([1 - k / 10 for k in range(10)])
    rates = scheduled_rates(dataclasses.replace(plan, lr_schedule="warmup", epochs=4), 5)  # 20 steps: 2 up, 18 down
    assert rates == pytest.approx([0.5, 1.0] + [(20 - k) / 19 for k in range(2, 20)])
    assert max(rates) == 1.0 and rates[-1] > 0 and all(a > b for a, b in zip(rates[1:], rates[2:]))
    _, constant = trained(0, epochs=2, lr=1e-2, batch_size=32)
    _, decayed = trained(0, epochs=2, lr=1e-2, batch_size=32, lr_schedule="linear")
    assert constant.train_loss[0] == decayed.train_loss[0] and constant.train_loss[1:] != decayed.train_loss[1:]
    _, stopped = trained(0, epochs=50, lr=1e-2, batch_size=32, target_accuracy=0.5)
    assert stopped.train_acc[-1] >= 0.5 and stopped.epoch[-1] < 50 and all(a < 0.5 for a in stopped.train_acc[:-1])
    with pytest.raises(ValueError, match="lr_schedule"):
        trained(0, epochs=1, lr=1e-2, lr_schedule="cosine")
    with pytest.raises(ValueError, match="target_accuracy"):
        trained(0, epochs=1, lr=1e-2, target_accuracy=1.5)
