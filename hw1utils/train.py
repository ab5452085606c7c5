"""Training K >= 1 same-shaped models on in-memory tensors: `fit` (one model), `fit_ensemble` (K at once).

Both run the same loop (`_train`): batches, NaN/inf check, stock torch.optim step, per-step values,
snapshots, evaluations, epoch hooks, plateau stop, progress bar and disk cache. Only the forward and
backward passes differ, behind a stepper: `_ModuleStepper` calls one nn.Module directly (fast for
K = 1), `_StackedStepper` calls stacked (K, ...) parameters through torch.func.vmap(functional_call).
A model with convolutions trains and evaluates in channels-last memory format (`_channels_last`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
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
LR_SCHEDULES = ("constant", "linear", "warmup")  # linear: from the learning rate down to zero at the last step;
# warmup: up from zero to the rate over the first WARMUP_FRACTION of the steps, then linear down to zero
WARMUP_FRACTION = 0.1
EVAL_BATCH = 1024  # examples per forward pass when evaluating (8,192 took 1.15x as long: page faults)
CHUNK_BYTES = 2 * 2**20  # stacked MLPs: most bytes of one activation per group of members (`_member_groups`)
CONV_EVAL_BATCH = 256  # the same for a model with convolutions (large batches of feature maps thrash the cache)


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
EpochHook = Callable[[int, nn.Module], dict[str, Any]]


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


def accuracy_from_outputs(out: Tensor, y: Tensor) -> Tensor:
    """Correct arg-max predictions summed over the batch (last but one) dim; 0 for regression targets."""
    return (out.argmax(-1) == y).sum(-1) if y.dtype == torch.long else out.new_zeros(out.shape[:-2])


@torch.no_grad()
def _member_metrics(forward: Callable[[Tensor], Tensor], members: int, x: Tensor, y: Tensor,
                    loss_fn: Callable, batch_size: int = EVAL_BATCH) -> list[tuple[float, float]]:
    """Per-member (mean loss, accuracy) on shared data of `forward(xb) -> (K, B, ...)`, in large batches."""
    if len(x) == 0:
        return [(math.nan, math.nan)] * members
    total = torch.zeros(members, dtype=torch.float64)
    correct = torch.zeros(members, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = forward(xb)
        total += vmap(loss_fn, in_dims=(0, None))(out, yb).sum(1).double().cpu()
        correct += accuracy_from_outputs(out, yb).double().cpu()
    accs = (correct / len(x)).tolist() if y.dtype == torch.long else [math.nan] * members
    return list(zip((total / len(x)).tolist(), accs))


def _conv_weights(model: nn.Module) -> list[Tensor]:
    """The weights of the model's 2-D convolutions (none for an MLP)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


@contextmanager
def _channels_last(model: nn.Module) -> Iterator[None]:
    """Inside: a conv model's 4-D weights in channels-last format; after: back in the default format.

    Measured on a 2-core CPU for 1-1b's CNNs: training steps 1.4-1.5x and evaluation 1.6-3.4x as fast.
    Only the layout changes, not a value; an MLP, or a model already channels-last, is left alone.
    """
    weights = _conv_weights(model)
    if not weights or all(w.is_contiguous(memory_format=torch.channels_last) for w in weights):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss: str = "cross_entropy",
             batch_size: int | None = None) -> tuple[float, float]:
    """Mean loss and accuracy (nan for regression or empty data) of `model` on (x, y), in large batches.

    batch_size defaults to EVAL_BATCH, or CONV_EVAL_BATCH for a model with convolutions.
    """
    batch_size = batch_size or (CONV_EVAL_BATCH if _conv_weights(model) else EVAL_BATCH)
    was_training = model.training
    model.eval()
    with _channels_last(model):
        (metrics,) = _member_metrics(lambda xb: model(xb).unsqueeze(0), 1, x, y, loss_function(loss), batch_size)
    model.train(was_training)
    return metrics


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


@dataclass(frozen=True)
class _Plan:
    """Everything besides the models and the data that decides a training of K members."""

    seeds: list[int]  # one batch-order seed per member
    lrs: list[float]  # one learning rate per member
    epochs: int
    batch_size: int | None
    optimizer: str
    lr_schedule: str
    loss: str
    momentum: float
    weight_decay: float
    record_steps: bool
    snapshot_every: int | None
    eval_every: int
    eval_train_examples: int | None
    patience: int | None
    min_improvement: float
    target_loss: float | None
    target_accuracy: float | None
    on_epoch: EpochHook | None
    device: torch.device

    def __post_init__(self) -> None:
        """Reject missing members, non-positive sizes or learning rates, and unknown names."""
        if not self.seeds or len(self.lrs) != len(self.seeds):
            raise ValueError(f"need at least one seed and one learning rate per seed, got {len(self.seeds)} "
                             f"and {len(self.lrs)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {self.batch_size!r}")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ValueError(f"learning rates must be positive and finite, got {self.lrs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be a non-negative integer (0: never evaluate), got {self.eval_every!r}")
        if self.eval_train_examples is not None and (isinstance(self.eval_train_examples, bool) or not isinstance(
                self.eval_train_examples, int) or self.eval_train_examples < 1):
            raise ValueError(f"eval_train_examples must be a positive integer or None (the whole training set), "
                             f"got {self.eval_train_examples!r}")
        if self.target_loss is not None and not (self.target_loss > 0 and math.isfinite(self.target_loss)):
            raise ValueError(f"target_loss must be positive and finite (or None: no target), got {self.target_loss!r}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1] (or None: no target), got {self.target_accuracy!r}")
        if (self.target_loss is not None or self.target_accuracy is not None) and self.eval_every == 0:
            raise ValueError("a target loss or accuracy needs evaluations to stop at: set eval_every to a positive "
                             "number of epochs")
        loss_function(self.loss)

    def evaluates(self, epoch: int) -> bool:
        """Whether metrics are recorded at `epoch`: 0, every `eval_every`, the last (never when eval_every is 0)."""
        return self.eval_every > 0 and (epoch % self.eval_every == 0 or epoch == self.epochs)


def _member_lrs(lr: float | Sequence[float], members: int) -> list[float]:
    """One learning rate per member from a single value or a sequence."""
    return [float(lr)] * members if isinstance(lr, (int, float)) else [float(v) for v in lr]


def _stacked_flat(tensors: Iterable[Tensor]) -> Tensor:
    """(K, P) matrix from (K, ...) tensors, each member's values concatenated in the given order."""
    return torch.cat([t.detach().flatten(1) for t in tensors], dim=1)


def _member_norms(grads: Iterable[Tensor]) -> Tensor:
    """(K,) 2-norms of each member's full gradient from (K, ...) gradient tensors."""
    return torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()


def _member_state(params: dict[str, Tensor], buffers: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """State dict of member `k` from stacked (K, ...) parameters and buffers."""
    return {n: t[k] for n, t in {**params, **buffers}.items()}


def _member_module(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], k: int) -> nn.Module:
    """A standalone nn.Module copy of member `k`."""
    member = copy.deepcopy(template)
    member.load_state_dict(_member_state(params, buffers, k))
    return member


def _member_call(template: nn.Module) -> Callable[[dict, dict, Tensor], Tensor]:
    """functional_call of a meta-device copy of `template` (for vmap over members)."""
    skeleton = copy.deepcopy(template).to("meta")
    return lambda p, b, x: functional_call(skeleton, (p, b), (x,))


ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Identity)


def _is_plain_mlp(template: nn.Module) -> bool:
    """A Sequential of an optional leading Flatten, Linear layers and elementwise activations, with no buffers."""
    layers = list(template.children()) if isinstance(template, nn.Sequential) else []
    if layers and isinstance(layers[0], nn.Flatten) and layers[0].start_dim == 1 and layers[0].end_dim == -1:
        layers = layers[1:]
    return (bool(layers) and not list(template.buffers())
            and all(isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in layers))


class _StackedLinear(torch.autograd.Function):
    """h (K, B, in) times each member's weight (K, out, in) transposed, plus bias (K, out) or None.

    Autograd's own backward of bmm(h, weight.transpose(1, 2)) builds the weight gradient as (K, in, out)
    and then copies it into the weight's (K, out, in) layout; that transposing copy cost more than the
    matmul itself for a 784-input layer. This backward computes grad_output^T h directly in that layout,
    except for one input feature, where bmm of a transposed matrix with a vector is slow on a CPU and
    h^T grad_output (a row, whose transpose is free) is fast. A layer with one input feature (an outer
    product) runs as a broadcast multiply, several times as fast as baddbmm there.
    """

    @staticmethod
    def forward(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """bias + h weight^T, member by member."""
        weight_t = weight.transpose(1, 2)
        if weight.shape[2] == 1:
            return h * weight_t if bias is None else torch.addcmul(bias.unsqueeze(1), h, weight_t)
        return torch.bmm(h, weight_t) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, weight_t)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        """Keep the input and the weight for the backward pass."""
        h, weight, _ = inputs
        ctx.save_for_backward(h, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """Gradients for h, weight (in its (K, out, in) layout) and bias, each only where needed."""
        h, weight = ctx.saved_tensors
        need_h, need_weight, need_bias = ctx.needs_input_grad
        grad_weight = None
        if need_weight:
            grad_weight = (torch.bmm(h.transpose(1, 2), grad).transpose(1, 2) if weight.shape[2] == 1
                           else torch.bmm(grad.transpose(1, 2), h))
        return torch.bmm(grad, weight) if need_h else None, grad_weight, grad.sum(1) if need_bias else None


def _stacked_mlp_calls(template: nn.Module) -> tuple[Callable, Callable]:
    """(per_member, shared) forward passes of a plain MLP by batched matmuls, for stacked (K, ...) parameters.

    The same arithmetic as vmap(functional_call) without its per-call bookkeeping, which dominates the
    step time of small MLPs (measured: 1.6-1.8x as fast per step for 1-1a's three nets, 8 stacked).
    per_member(params, buffers, x) takes x as (K, B, ...), shared(params, buffers, x) takes x as (B, ...).
    """
    layers = list(template.named_children())

    def forward(params: dict[str, Tensor], h: Tensor) -> Tensor:
        """Apply the layers to h, (K, B, features), member k with its own parameters."""
        for name, layer in layers:
            if isinstance(layer, nn.Linear):
                bias = params[f"{name}.bias"] if layer.bias is not None else None
                h = _StackedLinear.apply(h, params[f"{name}.weight"], bias)
            elif not isinstance(layer, nn.Flatten):
                h = layer(h)
        return h

    def per_member(params: dict[str, Tensor], _: dict, x: Tensor) -> Tensor:
        """Member k on x[k]."""
        return forward(params, x.flatten(2))

    def shared(params: dict[str, Tensor], _: dict, x: Tensor) -> Tensor:
        """Every member on the same x."""
        flat = x.flatten(1)
        return forward(params, flat.expand(next(iter(params.values())).shape[0], *flat.shape))

    return per_member, shared


class _ModuleStepper:
    """One model trained in place with plain forward and backward passes (the fast path for K = 1)."""

    def __init__(self, members: list[nn.Module], plan: _Plan):
        """Hold the single member and its trainable parameters as one param group."""
        (self.model,) = members
        self.model.train()
        self.loss, self.loss_fn = plan.loss, loss_function(plan.loss)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.param_groups = [{"params": self.trainable, "lr": plan.lrs[0]}]

    def losses(self, x: Tensor, y: Tensor, batch: Sequence[Tensor] | None) -> Tensor:
        """(1,) mean loss on the rows batch[0], or on all of (x, y) for None."""
        if batch is not None:
            rows = batch[0].to(x.device)
            x, y = x[rows], y[rows]
        return self.loss_fn(self.model(x), y).mean(0, keepdim=True)

    def backward(self, x: Tensor, y: Tensor, batch: Sequence[Tensor] | None) -> list[float]:
        """Leave the gradient of the loss on the rows batch[0] (None: all) in .grad; returns [the loss]."""
        losses = self.losses(x, y, batch)
        losses.sum().backward()
        return losses.tolist()

    def grad_norms(self) -> Tensor:
        """(1,) norm of the gradient left by the last backward pass."""
        return _member_norms(p.grad.unsqueeze(0) for p in self.trainable)

    def result(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Current parameters and buffers stacked as (1, ...) tensors."""
        return ({n: p.detach().unsqueeze(0) for n, p in self.model.named_parameters()},
                {n: b.unsqueeze(0) for n, b in self.model.named_buffers()})

    def restore(self, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        """Load stacked (1, ...) parameters and buffers into the model."""
        self.model.load_state_dict(_member_state(params, buffers, 0))

    def metrics(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        """[(mean loss, accuracy)] of the model on (x, y)."""
        return [evaluate(self.model, x, y, self.loss)]

    def models(self) -> list[nn.Module]:
        """The model itself (what `on_epoch` receives)."""
        return [self.model]


def _row_bytes(template: nn.Module) -> int | None:
    """Bytes of one example's widest activation of a plain MLP (float32); None for other models (never split)."""
    if not _is_plain_mlp(template):
        return None
    return 4 * max((m.out_features for m in template.modules() if isinstance(m, nn.Linear)), default=1)


def _member_groups(members: int, row_bytes: int | None, rows: int) -> list[slice]:
    """Consecutive, nearly equal groups of the members whose widest activation (`rows` each) fits CHUNK_BYTES.

    One backward pass over all K members of a wide net streams its activations through memory; in
    cache-sized groups the step is faster, and each member's arithmetic is unchanged (measured for
    1-1a's 1-272-1 nets, 17 stacked on 256 points: 0.73x the time of one pass, whole process).
    """
    most = members if row_bytes is None else max(1, CHUNK_BYTES // (rows * row_bytes))
    groups = math.ceil(members / most)
    bounds = [round(i * members / groups) for i in range(groups + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class _StackedStepper:
    """K models as stacked (K, ...) parameters called through vmap(functional_call) (plain MLPs: bmm).

    Members sharing a learning rate share one leaf per parameter, in their own optimizer param group;
    each forward pass concatenates those leaves along dim 0 and puts the rows back in member order.
    """

    def __init__(self, members: list[nn.Module], plan: _Plan):
        """Stack the members' parameters into one leaf per (parameter, distinct learning rate)."""
        stacked, self.buffers = stack_module_state(members)
        rates = list(dict.fromkeys(plan.lrs))
        self.groups = [[k for k, lr in enumerate(plan.lrs) if lr == rate] for rate in rates]
        self.leaves = [{n: t.detach()[ks].requires_grad_() for n, t in stacked.items()} for ks in self.groups]
        self.param_groups = [{"params": list(leaves.values()), "lr": rate} for leaves, rate in zip(self.leaves, rates)]
        grouped = [k for ks in self.groups for k in ks]
        self.member_rows = None if grouped == sorted(grouped) else torch.tensor(grouped).argsort().to(plan.device)
        self.size, self.template, self.loss_fn = len(members), members[0], loss_function(plan.loss)
        self.row_bytes = _row_bytes(members[0])
        if _is_plain_mlp(members[0]):
            self.per_member, self.shared = _stacked_mlp_calls(members[0])
        else:
            call = _member_call(members[0])
            self.per_member, self.shared = vmap(call), vmap(call, in_dims=(0, 0, None))

    def _in_member_order(self, parts: list[Tensor]) -> Tensor:
        """One (K, ...) tensor from the per-group parts, rows in member order."""
        joined = parts[0] if len(parts) == 1 else torch.cat(parts)
        return joined if self.member_rows is None else joined[self.member_rows]

    def params(self) -> dict[str, Tensor]:
        """name -> (K, ...) parameters in member order, differentiable with respect to the leaves."""
        return {n: self._in_member_order([leaves[n] for leaves in self.leaves]) for n in self.leaves[0]}

    def losses(self, x: Tensor, y: Tensor, batch: Sequence[Tensor] | None, members: slice = slice(None)) -> Tensor:
        """Mean losses of `members` (default all K), member k on the rows batch[k] (None: all of (x, y))."""
        params = {n: t[members] for n, t in self.params().items()}
        buffers = {n: t[members] for n, t in self.buffers.items()}
        if batch is None:
            return vmap(self.loss_fn, in_dims=(0, None))(self.shared(params, buffers, x), y).mean(1)
        rows = torch.stack(batch[members]).to(x.device)
        return vmap(self.loss_fn)(self.per_member(params, buffers, x[rows]), y[rows]).mean(1)

    def backward(self, x: Tensor, y: Tensor, batch: Sequence[Tensor] | None) -> list[float]:
        """Leave the gradient of every member's loss in the leaves' .grad, group by group; returns the K losses."""
        values = []
        for members in _member_groups(self.size, self.row_bytes, len(x) if batch is None else len(batch[0])):
            losses = self.losses(x, y, batch, members)
            losses.sum().backward()
            values += losses.tolist()
        return values

    def grad_norms(self) -> Tensor:
        """(K,) norms of each member's gradient left by the last backward pass."""
        return self._in_member_order([_member_norms(leaf.grad for leaf in leaves.values()) for leaves in self.leaves])

    def result(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Current (K, ...) parameters (detached) and buffers."""
        return {n: t.detach() for n, t in self.params().items()}, self.buffers

    @torch.no_grad()
    def restore(self, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        """Copy stacked (K, ...) parameters and buffers into the leaves."""
        for ks, leaves in zip(self.groups, self.leaves):
            for n, leaf in leaves.items():
                leaf.copy_(params[n][ks])
        for n, b in self.buffers.items():
            b.copy_(buffers[n])

    def metrics(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        """Per-member (mean loss, accuracy) on (x, y)."""
        params = self.result()[0]
        return _member_metrics(lambda xb: self.shared(params, self.buffers, xb), self.size, x, y, self.loss_fn)

    def models(self) -> list[nn.Module]:
        """Standalone copies of the members (what `on_epoch` receives)."""
        params, buffers = self.result()
        return [_member_module(self.template, params, buffers, k) for k in range(self.size)]


Stepper = _ModuleStepper | _StackedStepper


def _optimizer(param_groups: list[dict[str, Any]], plan: _Plan) -> torch.optim.Optimizer:
    """Stock fused Adam or foreach SGD over the param groups (one learning rate each)."""
    if plan.optimizer == "adam":
        return torch.optim.Adam(param_groups, weight_decay=plan.weight_decay, fused=True)
    return torch.optim.SGD(param_groups, momentum=plan.momentum, weight_decay=plan.weight_decay, foreach=True)


def _scheduler(optimizer: torch.optim.Optimizer, plan: _Plan,
               steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule of `plan` (None for a constant rate)."""
    if plan.lr_schedule == "constant":
        return None
    total = plan.epochs * steps_per_epoch
    if plan.lr_schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
    warm = max(1, round(WARMUP_FRACTION * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warm if step < warm else (total - step) / (total - warm + 1))


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> list[Tensor | None]:
    """Index slices of one epoch: a random permutation cut into batches ([None], all rows, for full batch)."""
    if batch_size is None or batch_size >= n:
        return [None]
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _steps_per_epoch(n: int, batch_size: int | None) -> int:
    """Number of batches `_batches` cuts an epoch of n examples into."""
    return 1 if batch_size is None or batch_size >= n else math.ceil(n / batch_size)


def _plateaued(losses: list[float], patience: int, min_improvement: float) -> bool:
    """True when the best loss of the last `patience` evaluations is not `min_improvement` below the earlier best."""
    if len(losses) <= patience:
        return False
    earlier, recent = min(losses[:-patience]), min(losses[-patience:])
    return recent > earlier * (1 - min_improvement)


def _all_stop(histories: list[History], plan: _Plan) -> bool:
    """True when every member has plateaued (with `patience`), or reached `target_loss` or `target_accuracy`."""
    if plan.target_loss is not None and all(h.train_loss[-1] <= plan.target_loss for h in histories):
        return True
    if plan.target_accuracy is not None and all(h.train_acc[-1] >= plan.target_accuracy for h in histories):
        return True
    return bool(plan.patience) and all(_plateaued(h.train_loss, plan.patience, plan.min_improvement)
                                       for h in histories)


def _progress(requested: bool | None) -> bool:
    """Whether to show a progress bar: as requested, else as config.show_progress() says."""
    return config.show_progress() if requested is None else requested


def _check_finite(losses: list[float], epoch: int, step: int) -> None:
    """Stop training on a NaN/inf loss, naming the epoch, the step and (with several members) the member."""
    if not all(map(math.isfinite, losses)):
        bad = next(k for k, value in enumerate(losses) if not math.isfinite(value))
        who = f" (ensemble member {bad})" if len(losses) > 1 else ""
        raise FloatingPointError(f"loss became {losses[bad]} at epoch {epoch}, step {step}{who}; "
                                 "lower the learning rate or check the data")


def _record_steps(histories: list[History], losses: list[float], grad_norms: Tensor) -> None:
    """Append each member's mini-batch loss and gradient norm."""
    for history, loss, norm in zip(histories, losses, grad_norms.tolist()):
        history.step_loss.append(loss)
        history.step_grad_norm.append(norm)


def _checkpoint(stepper: Stepper, histories: list[History], epoch: int, tensors: Data, plan: _Plan) -> None:
    """Record the snapshots, metrics and on_epoch values due at `epoch` for every member."""
    if plan.snapshot_every and epoch % plan.snapshot_every == 0:
        flats = _stacked_flat(stepper.result()[0].values()).float().cpu()
        for history, flat in zip(histories, flats):
            history.snapshots[epoch] = flat.clone()
    if not plan.evaluates(epoch):
        return
    x, y, x_test, y_test = tensors
    x, y = x[:plan.eval_train_examples], y[:plan.eval_train_examples]  # None: all of them
    for history, train, test in zip(histories, stepper.metrics(x, y), stepper.metrics(x_test, y_test)):
        history.epoch.append(epoch)
        history.train_loss.append(train[0])
        history.train_acc.append(train[1])
        history.test_loss.append(test[0])
        history.test_acc.append(test[1])
    for history, model in zip(histories, stepper.models() if plan.on_epoch else []):
        for key, value in plan.on_epoch(epoch, model).items():
            history.extra.setdefault(key, []).append(value)


def _train(stepper: Stepper, tensors: Data, plan: _Plan, progress: bool | None) -> list[History]:
    """The training loop: `plan.epochs` epochs of `stepper`'s K members; one History per member."""
    x, y = tensors[:2]
    optimizer = _optimizer(stepper.param_groups, plan)
    generators = [torch.Generator().manual_seed(seed) for seed in plan.seeds]
    steps_per_epoch = _steps_per_epoch(len(x), plan.batch_size)
    histories = [History(steps_per_epoch=steps_per_epoch) for _ in plan.seeds]
    scheduler = _scheduler(optimizer, plan, steps_per_epoch)
    start = time.perf_counter()
    _checkpoint(stepper, histories, 0, tensors, plan)
    desc = "fit" if len(plan.seeds) == 1 else f"fit_ensemble[{len(plan.seeds)}]"
    bar = tqdm(range(1, plan.epochs + 1), desc=desc, disable=not _progress(progress), leave=False)
    for epoch in bar:
        for step, batch in enumerate(zip(*(_batches(len(x), plan.batch_size, g) for g in generators))):
            optimizer.zero_grad(set_to_none=True)
            values = stepper.backward(x, y, None if steps_per_epoch == 1 else batch)
            _check_finite(values, epoch, step)
            if plan.record_steps:
                _record_steps(histories, values, stepper.grad_norms())
            optimizer.step()
            if scheduler:
                scheduler.step()
        _checkpoint(stepper, histories, epoch, tensors, plan)
        if plan.evaluates(epoch):
            bar.set_postfix(median_loss=f"{sorted(h.train_loss[-1] for h in histories)[len(histories) // 2]:.4g}")
            if _all_stop(histories, plan):
                break
    seconds = time.perf_counter() - start
    for history in histories:
        history.seconds = seconds
    return histories


def _fit_members(members: list[nn.Module], data: Any, plan: _Plan, progress: bool | None,
                 cache: str | None) -> tuple[dict[str, Tensor], dict[str, Tensor], list[History]]:
    """Train `members` (the module itself when there is one), or load the result from the disk cache `cache`.

    Returns the trained (K, ...) parameters, buffers and one History per member.
    """
    tensors = as_tensors(data, plan.device)
    for member in members:
        member.to(plan.device)
    _check_input_shape(members[0], tensors[0])
    stepper = (_ModuleStepper if len(members) == 1 else _StackedStepper)(members, plan)

    def train_now() -> dict[str, Any]:
        """Train (a lone conv model channels-last), and return what the cache stores."""
        with _channels_last(members[0]) if len(members) == 1 else nullcontext():
            histories = _train(stepper, tensors, plan, progress)
        params, buffers = stepper.result()
        return {"params": params, "buffers": buffers, "histories": [asdict(h) for h in histories]}

    if cache:
        key = disk_cache.fingerprint(members, tensors, vars(plan))
        payload = disk_cache.load_or_compute(cache, key, train_now)
        stepper.restore(payload["params"], payload["buffers"])  # a plain copy when just trained
    else:
        payload = train_now()
    return (*stepper.result(), [History(**h) for h in payload["histories"]])


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    batch_size: int | None = 64,
    optimizer: str = "adam",
    lr_schedule: str = "constant",
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    record_steps: bool = False,
    snapshot_every: int | None = None,
    eval_every: int = 1,
    eval_train_examples: int | None = None,
    patience: int | None = None,
    min_improvement: float = 0.01,
    target_loss: float | None = None,
    target_accuracy: float | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool | None = None,
    device: torch.device | None = None,
    cache: str | None = None,
) -> History:
    """Train `model` in place on in-memory tensors and return its History.

    Batches are slices of a fresh random permutation per epoch, drawn from a generator seeded with
    `seed` (batch_size None: full batch). Metrics are evaluated at epoch 0, every `eval_every`
    epochs and at the end (eval_every=0: never, for pure training); the training metrics on the
    first `eval_train_examples` training examples (None: all; a fixed subset saves whole passes over
    a large training set). With `patience`, training stops once the training loss has not improved
    by `min_improvement` (relative) over `patience` evaluations; with `target_loss` (`target_accuracy`),
    it stops at the first evaluation whose training loss is at most (accuracy at least) the target.
    `lr_schedule` is one of LR_SCHEDULES, stepped after every optimizer step. `snapshot_every` stores
    flat weights at epoch 0 and every n epochs; `on_epoch(epoch, model)` may return values to record at
    each evaluation. `progress` (default: config.show_progress()) shows a progress bar. `cache` names a
    disk-cache entry: a finished training with the same initial weights, data, settings and training
    code is loaded instead.
    """
    plan = _Plan(seeds=[seed], lrs=_member_lrs(lr, 1), epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                 lr_schedule=lr_schedule, loss=loss, momentum=momentum, weight_decay=weight_decay,
                 record_steps=record_steps, snapshot_every=snapshot_every, eval_every=eval_every,
                 eval_train_examples=eval_train_examples, patience=patience, min_improvement=min_improvement,
                 target_loss=target_loss, target_accuracy=target_accuracy, on_epoch=on_epoch,
                 device=device or config.device())
    _, _, (history,) = _fit_members([model], data, plan, progress, cache)
    return history


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
        return _member_module(self.template, self.params, self.buffers, k)

    def flat(self) -> Tensor:
        """(K, P) matrix of flat parameter vectors in model.parameters() order."""
        return _stacked_flat(self.params.values())

    @torch.no_grad()
    def forward(self, x: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
        """(K, N, ...) outputs of every member on the same inputs."""
        call = vmap(_member_call(self.template), in_dims=(0, 0, None))
        return torch.cat([call(self.params, self.buffers, x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)], dim=1)


def _stacking_pays(template: nn.Module, device: torch.device) -> bool:
    """Whether K members train faster stacked (vmap) than one after another: not for convolutions on a CPU.

    On a CPU, vmap over Conv2d layers is slower than K plain calls (benchmarks/bench_training.py,
    cnn_ensemble_vs_loop); MLPs gain more than tenfold from stacking.
    """
    return device.type != "cpu" or not any(isinstance(m, nn.Conv2d) for m in template.modules())


def _built(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`build()` after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return build()


def fit_ensemble(
    build: Callable[[], nn.Module],
    seeds: Sequence[int],
    data: Any,
    *,
    epochs: int,
    lr: float | Sequence[float],
    batch_size: int | None = 64,
    optimizer: str = "adam",
    lr_schedule: str = "constant",
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    record_steps: bool = False,
    snapshot_every: int | None = None,
    eval_every: int = 1,
    eval_train_examples: int | None = None,
    patience: int | None = None,
    min_improvement: float = 0.01,
    target_loss: float | None = None,
    target_accuracy: float | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool | None = None,
    device: torch.device | None = None,
    cache: str | None = None,
    stacked: bool | None = None,
) -> Ensemble:
    """Train K = len(seeds) copies of `build()`: stacked (stack_module_state + vmap) where that is faster.

    Member k is initialised after torch.manual_seed(seeds[k]) and draws its batches from a generator
    seeded with seeds[k], so it follows the same path as `fit(build(), data, seed=seeds[k])` after
    the same manual_seed. `lr` may be one value or one per member (for learning-rate searches).
    With `patience` (`target_loss`, `target_accuracy`), training stops once every member has plateaued
    (reached the target); `on_epoch` receives a copy of each member; the other knobs are those of
    `fit`. `stacked` (default: where it pays, `_stacking_pays`, or when `patience` asks for the joint
    stop) trains the members as one vmapped model; False trains them one after another, each
    stopping on its own plateau or target.
    """
    seeds = list(seeds)
    plan = _Plan(seeds=seeds, lrs=_member_lrs(lr, len(seeds)), epochs=epochs, batch_size=batch_size,
                 optimizer=optimizer, lr_schedule=lr_schedule, loss=loss, momentum=momentum,
                 weight_decay=weight_decay, record_steps=record_steps, snapshot_every=snapshot_every,
                 eval_every=eval_every, eval_train_examples=eval_train_examples, patience=patience,
                 min_improvement=min_improvement, target_loss=target_loss, target_accuracy=target_accuracy,
                 on_epoch=on_epoch,
                 device=device or config.device())
    members = [_built(build, seed) for seed in seeds]
    template = copy.deepcopy(members[0])
    if stacked is None:
        stacked = bool(patience) or _stacking_pays(template, plan.device)
    if stacked or len(members) == 1:
        params, buffers, histories = _fit_members(members, data, plan, progress, cache)
        return Ensemble(template, params, buffers, seeds, histories)
    parts = [_fit_members([member], data, replace(plan, seeds=[seed], lrs=[lr]), progress, cache)
             for member, seed, lr in zip(members, plan.seeds, plan.lrs)]
    params, buffers = ({name: torch.cat([part[i][name] for part in parts]) for name in parts[0][i]} for i in (0, 1))
    return Ensemble(template, params, buffers, seeds, [h for part in parts for h in part[2]])
