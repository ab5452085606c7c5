"""Training over in-memory tensors: fit / evaluate / History, and many same-shaped models at once."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from . import cache as disk_cache
from . import config

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("adam", "sgd")
EVAL_BATCH = 8192  # examples per forward pass when evaluating


@dataclass
class History:
    """What one training run recorded: per-epoch metrics, optional per-step values and weight snapshots."""

    epoch: list[int] = field(default_factory=list)  # evaluated epochs; 0 is the untrained model
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)  # nan for regression
    test_loss: list[float] = field(default_factory=list)  # nan without a test set
    test_acc: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)  # mini-batch loss of every step (record_steps)
    step_grad_norm: list[float] = field(default_factory=list)  # 2-norm of that step's full gradient
    snapshots: dict[int, Tensor] = field(default_factory=dict)  # epoch -> flat float32 weights (CPU)
    extra: dict[str, list[Any]] = field(default_factory=dict)  # values returned by `on_epoch`
    steps_per_epoch: int = 0
    seconds: float = 0.0

    def final(self) -> dict[str, float]:
        """The last evaluated epoch's metrics."""
        keys = ("train_loss", "train_acc", "test_loss", "test_acc")
        return {"epoch": self.epoch[-1], **{k: getattr(self, k)[-1] for k in keys}}

    def to_dict(self, with_steps: bool = False) -> dict[str, Any]:
        """Plain lists for results.json: deterministic values only (no wall time, no snapshots)."""
        out = {k: getattr(self, k) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}
        out.update(steps_per_epoch=self.steps_per_epoch, **self.extra)
        if with_steps:
            out.update(step_loss=self.step_loss, step_grad_norm=self.step_grad_norm)
        return out


Data = tuple[Tensor, ...]


def as_tensors(data: Any, device: torch.device | None = None) -> Data:
    """(x_train, y_train, x_test, y_test) on `device` from a tuple of 2 or 4 tensors or an ImageDataset."""
    device = device or config.device()
    if hasattr(data, "float_tensors"):
        return tuple(data.float_tensors(device))
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise TypeError("data must be an ImageDataset or a tuple (x_train, y_train[, x_test, y_test]) of tensors")
    x, y, *test = (t.to(device) for t in data)
    if len(x) != len(y) or (test and len(test[0]) != len(test[1])):
        raise ValueError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
    return (x, y, *test) if test else (x, y, x[:0], y[:0])


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-example loss (no reduction) called `name`."""
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")
    if name == "mse":
        return lambda out, y: (out - y).pow(2).flatten(1).mean(1)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def _check_hyper(epochs: int, batch_size: int | None, lrs: Sequence[float], optimizer: str, loss: str) -> None:
    """Reject non-positive epochs, batch size or learning rate, and unknown names."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (full batch), got {batch_size!r}")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError(f"learning rates must be positive and finite, got {list(lrs)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    loss_function(loss)


def _check_input_shape(model: nn.Module, x: Tensor) -> None:
    """Run one example through the model so a shape mismatch fails early with a readable message."""
    try:
        with torch.no_grad():
            model(x[:1])
    except RuntimeError as err:
        raise ValueError(
            f"inputs of shape {tuple(x.shape[1:])} (per example) do not fit the model: {err}. "
            "Build the model for this input shape (see hw1utils.models)."
        ) from err


def _raise_non_finite(value: float, epoch: int, step: int, member: int | None = None) -> None:
    """Stop training on a NaN/inf loss, naming where it happened."""
    who = "" if member is None else f" (ensemble member {member})"
    raise FloatingPointError(
        f"loss became {value} at epoch {epoch}, step {step}{who}; lower the learning rate or check the data"
    )


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> list[Tensor]:
    """Index slices of one epoch: a random permutation cut into batches (or everything, for full batch)."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _steps_per_epoch(n: int, batch_size: int | None) -> int:
    """Number of batches `_batches` cuts an epoch of n examples into."""
    return 1 if batch_size is None or batch_size >= n else math.ceil(n / batch_size)


def accuracy_from_outputs(out: Tensor, y: Tensor) -> Tensor:
    """Number of correct arg-max predictions (nan-free; 0 for regression targets)."""
    return (out.argmax(-1) == y).sum() if y.dtype == torch.long else out.new_zeros(())


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss: str = "cross_entropy",
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean loss and accuracy (nan for regression or empty data) of `model` on (x, y), in large batches."""
    if len(x) == 0:
        return math.nan, math.nan
    loss_fn = loss_function(loss)
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model(xb)
        total += loss_fn(out, yb).sum().item()
        correct += accuracy_from_outputs(out, yb).item()
    model.train(was_training)
    acc = correct / len(x) if y.dtype == torch.long else math.nan
    return total / len(x), acc


def _progress(requested: bool | None) -> bool:
    """Whether to show a progress bar: as requested, else as config.show_progress() says."""
    return config.show_progress() if requested is None else requested


def _flat(params: Sequence[Tensor]) -> Tensor:
    """Parameters concatenated into one float32 CPU vector."""
    return torch.cat([p.detach().reshape(-1) for p in params]).float().cpu()


def _plateaued(losses: list[float], patience: int, min_improvement: float) -> bool:
    """True when the best loss of the last `patience` evaluations is not `min_improvement` below the earlier best."""
    if len(losses) <= patience:
        return False
    earlier, recent = min(losses[:-patience]), min(losses[-patience:])
    return recent > earlier * (1 - min_improvement)


def _record_eval(history: History, epoch: int, metrics: Sequence[tuple[float, float]]) -> None:
    """Append one evaluation (train and test loss/accuracy) to `history`."""
    (tl, ta), (vl, va) = metrics
    history.epoch.append(epoch)
    history.train_loss.append(tl)
    history.train_acc.append(ta)
    history.test_loss.append(vl)
    history.test_acc.append(va)


def _eval_epochs(epochs: int, eval_every: int) -> set[int]:
    """Epochs at which metrics are recorded: 0, every `eval_every`, and the last (none when eval_every is 0)."""
    if not isinstance(eval_every, int) or eval_every < 0:
        raise ValueError(f"eval_every must be a non-negative integer (0: never evaluate), got {eval_every!r}")
    if eval_every == 0:
        return set()
    return {0, epochs, *range(eval_every, epochs + 1, eval_every)}


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    batch_size: int | None = 64,
    optimizer: str = "adam",
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    record_steps: bool = False,
    snapshot_every: int | None = None,
    eval_every: int = 1,
    patience: int | None = None,
    min_improvement: float = 0.01,
    on_epoch: Callable[[int, nn.Module], dict[str, Any]] | None = None,
    progress: bool | None = None,
    device: torch.device | None = None,
    cache: str | None = None,
) -> History:
    """Train `model` in place on in-memory tensors and return its History.

    Batches are slices of a fresh random permutation per epoch, drawn from a generator seeded with
    `seed` (batch_size None: full batch). Metrics are evaluated at epoch 0, every `eval_every`
    epochs and at the end (eval_every=0: never, for pure training); with `patience`, training stops
    once the training loss has not improved
    by `min_improvement` (relative) over `patience` evaluations. `snapshot_every` stores flat
    weights at epoch 0 and every n epochs; `on_epoch(epoch, model)` may return values to record.
    `progress` (default: config.show_progress()) shows a progress bar, a widget in JupyterLab.
    """
    _check_hyper(epochs, batch_size, [lr], optimizer, loss)
    device = device or config.device()
    x, y, x_test, y_test = as_tensors(data, device)
    model.to(device)
    _check_input_shape(model, x)
    if cache:
        settings = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, loss=loss,
                        momentum=momentum, weight_decay=weight_decay, seed=seed, record_steps=record_steps,
                        snapshot_every=snapshot_every, eval_every=eval_every, patience=patience,
                        min_improvement=min_improvement, on_epoch=on_epoch, device=str(device))
        key = disk_cache.fingerprint(model, (x, y, x_test, y_test), settings)
        hit = disk_cache.load(cache, key)
        if hit is not None:
            model.load_state_dict(hit["model"])
            return History(**hit["history"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True))
    loss_fn = loss_function(loss)
    generator = torch.Generator().manual_seed(seed)
    history = History(steps_per_epoch=_steps_per_epoch(len(x), batch_size))
    evals = _eval_epochs(epochs, eval_every)
    start = time.perf_counter()

    def checkpoint(epoch: int) -> None:
        """Record metrics, snapshots and on_epoch values due at `epoch`."""
        if snapshot_every and epoch % snapshot_every == 0:
            history.snapshots[epoch] = _flat(params)
        if epoch in evals:
            _record_eval(history, epoch, [evaluate(model, x, y, loss), evaluate(model, x_test, y_test, loss)])
            for key, value in (on_epoch(epoch, model) if on_epoch else {}).items():
                history.extra.setdefault(key, []).append(value)

    checkpoint(0)
    model.train()
    bar = tqdm(range(1, epochs + 1), desc="fit", disable=not _progress(progress), leave=False)
    for epoch in bar:
        for step, idx in enumerate(_batches(len(x), batch_size, generator)):
            xb, yb = (x, y) if len(idx) == len(x) else (x[idx.to(device)], y[idx.to(device)])
            batch_loss = loss_fn(model(xb), yb).mean()
            value = batch_loss.item()
            if not math.isfinite(value):
                _raise_non_finite(value, epoch, step)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            if record_steps:
                history.step_loss.append(value)
                history.step_grad_norm.append(torch.linalg.vector_norm(
                    torch.stack(torch._foreach_norm([p.grad for p in params]))).item())
            opt.step()
        checkpoint(epoch)
        if epoch in evals:
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}")
            if patience and _plateaued(history.train_loss, patience, min_improvement):
                break
    history.seconds = time.perf_counter() - start
    if cache:
        disk_cache.store(cache, key, {"model": model.state_dict(), "history": asdict(history)})
    return history


class StackedOptimizer:
    """Adam or SGD(momentum) over stacked (K, ...) parameters with one learning rate per member.

    The update is the same arithmetic as torch.optim's foreach implementations, member by member.
    """

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, kind: str = "adam", momentum: float = 0.9,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        """Keep references to the stacked leaves; `lrs` has one entry per member."""
        self.params, self.kind, self.momentum, self.betas, self.eps = list(params), kind, momentum, betas, eps
        self.lrs = [lrs.view(-1, *[1] * (p.dim() - 1)).to(p) for p in self.params]
        self.state = [torch.zeros_like(p) for p in self.params]
        self.state2 = [torch.zeros_like(p) for p in self.params] if kind == "adam" else []
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """One update from the gradients stored on the parameters."""
        self.steps += 1
        grads = [p.grad for p in self.params]
        if self.kind == "sgd":
            bufs = self.state
            if self.steps == 1:
                torch._foreach_copy_(bufs, grads)
            else:
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, grads)
            torch._foreach_sub_(self.params, torch._foreach_mul(bufs, self.lrs))
            return
        beta1, beta2 = self.betas
        torch._foreach_lerp_(self.state, grads, 1 - beta1)
        torch._foreach_mul_(self.state2, beta2)
        torch._foreach_addcmul_(self.state2, grads, grads, 1 - beta2)
        bias1, bias2_sqrt = 1 - beta1**self.steps, math.sqrt(1 - beta2**self.steps)
        denom = torch._foreach_sqrt(self.state2)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        step = torch._foreach_div(self.state, denom)
        torch._foreach_mul_(step, [lr / bias1 for lr in self.lrs])
        torch._foreach_sub_(self.params, step)


@dataclass
class Ensemble:
    """K same-shaped models trained together: stacked parameters, one History per member."""

    template: nn.Module  # architecture (the first member's initial weights, never trained)
    params: dict[str, Tensor]  # name -> (K, ...) stacked parameters
    buffers: dict[str, Tensor]
    seeds: list[int]
    histories: list[History]

    def __len__(self) -> int:
        """Number of members."""
        return len(self.seeds)

    def model(self, k: int) -> nn.Module:
        """A standalone copy of member `k` as an ordinary nn.Module."""
        member = copy.deepcopy(self.template)
        state = {n: t[k].detach().clone() for n, t in {**self.params, **self.buffers}.items()}
        member.load_state_dict(state)
        return member

    def flat(self) -> Tensor:
        """(K, P) matrix of flat parameter vectors in model.parameters() order."""
        return torch.cat([t.detach().flatten(1) for t in self.params.values()], dim=1)

    @torch.no_grad()
    def forward(self, x: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
        """(K, N, ...) outputs of every member on the same inputs."""
        call = vmap(_member_call(self.template), in_dims=(0, 0, None))
        return torch.cat([call(self.params, self.buffers, x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)], dim=1)


def _member_call(template: nn.Module) -> Callable[[dict, dict, Tensor], Tensor]:
    """functional_call of a meta-device copy of `template` (for vmap over members)."""
    skeleton = copy.deepcopy(template).to("meta")
    return lambda p, b, x: functional_call(skeleton, (p, b), (x,))


@torch.no_grad()
def _evaluate_members(call: Callable, params: dict, buffers: dict, x: Tensor, y: Tensor,
                      loss_fn: Callable) -> list[tuple[float, float]]:
    """Per-member (mean loss, accuracy) on shared data, in large batches."""
    k = next(iter(params.values())).shape[0]
    if len(x) == 0:
        return [(math.nan, math.nan)] * k
    total = torch.zeros(k, dtype=torch.float64)
    correct = torch.zeros(k, dtype=torch.float64)
    shared = vmap(call, in_dims=(0, 0, None))
    for start in range(0, len(x), EVAL_BATCH):
        xb, yb = x[start:start + EVAL_BATCH], y[start:start + EVAL_BATCH]
        out = shared(params, buffers, xb)
        total += vmap(loss_fn, in_dims=(0, None))(out, yb).sum(1).double().cpu()
        if y.dtype == torch.long:
            correct += (out.argmax(-1) == yb).sum(1).double().cpu()
    accs = (correct / len(x)).tolist() if y.dtype == torch.long else [math.nan] * k
    return list(zip((total / len(x)).tolist(), accs))


def fit_ensemble(
    build: Callable[[], nn.Module],
    seeds: Sequence[int],
    data: Any,
    *,
    epochs: int,
    lr: float | Sequence[float],
    batch_size: int | None = 64,
    optimizer: str = "adam",
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    record_steps: bool = False,
    snapshot_every: int | None = None,
    eval_every: int = 1,
    patience: int | None = None,
    min_improvement: float = 0.01,
    progress: bool | None = None,
    device: torch.device | None = None,
    cache: str | None = None,
) -> Ensemble:
    """Train K = len(seeds) copies of `build()` at once with torch.func (stack_module_state + vmap).

    Member k is initialised after torch.manual_seed(seeds[k]) and draws its batches from a generator
    seeded with seeds[k], so it follows the same path as `fit(build(), data, seed=seeds[k])` after
    the same manual_seed. `lr` may be one value or one per member (for learning-rate searches).
    With `patience`, training stops once every member's training loss has plateaued; `cache` as in `fit`.
    """
    seeds = list(seeds)
    lrs = [float(lr)] * len(seeds) if isinstance(lr, (int, float)) else [float(v) for v in lr]
    if not seeds or len(lrs) != len(seeds):
        raise ValueError(f"need at least one seed and one learning rate per seed, got {len(seeds)} and {len(lrs)}")
    _check_hyper(epochs, batch_size, lrs, optimizer, loss)
    device = device or config.device()
    x, y, x_test, y_test = as_tensors(data, device)
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(build().to(device))
    _check_input_shape(members[0], x)
    template = copy.deepcopy(members[0])
    params, buffers = stack_module_state(members)
    if cache:
        settings = dict(epochs=epochs, lrs=lrs, batch_size=batch_size, optimizer=optimizer, loss=loss,
                        momentum=momentum, record_steps=record_steps, snapshot_every=snapshot_every,
                        eval_every=eval_every, patience=patience, min_improvement=min_improvement,
                        seeds=seeds, device=str(device))
        key = disk_cache.fingerprint(template, params, buffers, (x, y, x_test, y_test), settings)
        hit = disk_cache.load(cache, key)
        if hit is not None:
            on_device = {n: t.to(device) for n, t in hit["params"].items()}
            return Ensemble(template, on_device, buffers, seeds, [History(**h) for h in hit["histories"]])
    names = list(params)
    opt = StackedOptimizer(list(params.values()), torch.tensor(lrs), optimizer, momentum)
    loss_fn = loss_function(loss)
    call = _member_call(template)
    per_member = vmap(call, in_dims=(0, 0, 0))
    shared = vmap(call, in_dims=(0, 0, None))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    histories = [History(steps_per_epoch=_steps_per_epoch(len(x), batch_size)) for _ in seeds]
    evals = _eval_epochs(epochs, eval_every)
    full_batch = batch_size is None or batch_size >= len(x)
    start = time.perf_counter()

    def checkpoint(epoch: int) -> None:
        """Record metrics and snapshots due at `epoch` for every member."""
        if snapshot_every and epoch % snapshot_every == 0:
            flat = torch.cat([params[n].detach().flatten(1) for n in names], dim=1).float().cpu()
            for k, h in enumerate(histories):
                h.snapshots[epoch] = flat[k].clone()
        if epoch in evals:
            train = _evaluate_members(call, params, buffers, x, y, loss_fn)
            test = _evaluate_members(call, params, buffers, x_test, y_test, loss_fn)
            for h, metrics in zip(histories, zip(train, test)):
                _record_eval(h, epoch, metrics)

    checkpoint(0)
    bar = tqdm(range(1, epochs + 1), desc=f"fit_ensemble[{len(seeds)}]", disable=not _progress(progress),
               leave=False)
    for epoch in bar:
        plans = [_batches(len(x), batch_size, g) for g in generators]
        for step, idx in enumerate(zip(*plans)):
            if full_batch:
                out, yb = shared(params, buffers, x), y.expand(len(seeds), *y.shape)
            else:
                idx = torch.stack(idx).to(device)
                out, yb = per_member(params, buffers, x[idx]), y[idx]
            losses = vmap(loss_fn)(out, yb).mean(1)
            if not torch.isfinite(losses).all():
                bad = int((~torch.isfinite(losses)).nonzero()[0])
                _raise_non_finite(losses[bad].item(), epoch, step, bad)
            for p in params.values():
                p.grad = None
            losses.sum().backward()
            if record_steps:
                norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params.values()]).sum(0).sqrt()
                for h, lv, gv in zip(histories, losses.tolist(), norms.tolist()):
                    h.step_loss.append(lv)
                    h.step_grad_norm.append(gv)
            opt.step()
        checkpoint(epoch)
        if epoch in evals:
            bar.set_postfix(median_loss=f"{sorted(h.train_loss[-1] for h in histories)[len(seeds) // 2]:.4g}")
            if patience and all(_plateaued(h.train_loss, patience, min_improvement) for h in histories):
                break
    seconds = time.perf_counter() - start
    for h in histories:
        h.seconds = seconds
    detached = {n: p.detach() for n, p in params.items()}
    if cache:
        disk_cache.store(cache, key, {"params": detached, "buffers": buffers,
                                      "histories": [asdict(h) for h in histories]})
    return Ensemble(template, detached, buffers, seeds, histories)
