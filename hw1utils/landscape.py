"""Weight-space geometry: interpolation, PCA of trajectories, loss surfaces, sensitivity and sharpness.

Nothing here changes the caller's model: evaluations go through `torch.func.functional_call` on a
parameter-free (meta-device) copy, or on a deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jacrev, vmap

from hw1utils.curvature import flat_params, functional_loss, top_hessian_eigenvalue

LossFn = Callable[[Tensor, Tensor], Tensor]
Span = tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]

# ---------------------------------------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------------------------------------


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (error if it has none)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters; pass a model with at least one parameter") from None


def _check_batch_size(batch_size: int | None) -> None:
    """Reject chunk sizes below 1 (None means one chunk)."""
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")


def _chunks(batch_size: int | None, device: torch.device, *tensors: Tensor,
            dtype: torch.dtype | None = None) -> Iterator[tuple[Tensor, ...]]:
    """Slices of `batch_size` rows (None: all) of each tensor, on `device`, floating ones cast to `dtype`."""
    _check_batch_size(batch_size)
    n = len(tensors[0])
    if n == 0 or any(len(t) != n for t in tensors):
        raise ValueError(f"need non-empty data tensors of equal length, got {[len(t) for t in tensors]}")
    step = n if batch_size is None else int(batch_size)
    for start in range(0, n, step):
        yield tuple(t[start:start + step].to(device, dtype if t.is_floating_point() else None)
                    for t in tensors)


def _dataset_mean(fn: Callable[..., tuple[Tensor, ...]], batch_size: int | None, device: torch.device,
                  *data: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, ...]:
    """Example-weighted mean over data chunks of each tensor that `fn(*chunk)` returns as a chunk mean."""
    totals: list[Tensor] | None = None
    for chunk in _chunks(batch_size, device, *data, dtype=dtype):
        weighted = [value * len(chunk[0]) for value in fn(*chunk)]
        totals = weighted if totals is None else [t + w for t, w in zip(totals, weighted, strict=True)]
    return tuple(t / len(data[0]) for t in totals)


def _eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode (dropout off, batch norm on running statistics)."""
    return copy.deepcopy(model).eval()


def _stateless(model: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """An eval-mode meta-device copy of `model` (no storage) and its detached parameters and buffers."""
    template = copy.deepcopy(model).to("meta").eval()
    return template, dict(model.state_dict())


def _blend(start: Tensor, end: Tensor, alpha: Tensor | float) -> Tensor:
    """(1 - alpha) * start + alpha * end, exact at alpha = 0 and 1."""
    return (1 - alpha) * start + alpha * end


def _as_flat(vector: Tensor | np.ndarray, like: Tensor, name: str) -> Tensor:
    """`vector` as a 1-D tensor with the device, dtype and length of `like`."""
    flat = torch.as_tensor(vector).to(device=like.device, dtype=like.dtype).reshape(-1)
    if flat.numel() != like.numel():
        raise ValueError(f"{name} has {flat.numel()} entries but the model has {like.numel()} parameters")
    return flat


# ---------------------------------------------------------------------------------------------------------
# Linear interpolation between two models (1-3c)
# ---------------------------------------------------------------------------------------------------------


def _check_interpolable(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise unless the two models are distinct objects with the same state_dict names and shapes."""
    if model_a is model_b:
        raise ValueError("model_a and model_b are the same object, so the line between them is one point; "
                         "pass the two differently trained models (e.g. a copy saved before retraining)")
    shapes_a = {k: tuple(v.shape) for k, v in model_a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in model_b.state_dict().items()}
    if shapes_a != shapes_b:
        differ = sorted(k for k in shapes_a.keys() | shapes_b.keys() if shapes_a.get(k) != shapes_b.get(k))
        raise ValueError("the models have different architectures; entries that differ (name: shape a vs b): "
                         + ", ".join(f"{k}: {shapes_a.get(k)} vs {shapes_b.get(k)}" for k in differ[:5]))


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A new model (copy of model_a) with parameters and float buffers (1 - alpha) theta_a + alpha theta_b."""
    _check_interpolable(model_a, model_b)
    mixed = copy.deepcopy(model_a)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    with torch.no_grad():
        for name, tensor in mixed.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(_blend(state_a[name], state_b[name].to(tensor.device), float(alpha)))
    return mixed


def interpolation_curve(model_a: nn.Module, model_b: nn.Module, alphas: Sequence[float] | np.ndarray | Tensor,
                        x: Tensor, y: Tensor, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Cross-entropy loss and accuracy on (x, y) at every alpha of the line from model_a to model_b.

    All alphas are evaluated at once (vmap over stacked interpolated parameters), data in chunks of
    `batch_size` examples: memory grows with len(alphas) * batch_size. Models are run in eval mode.
    Returns numpy arrays `alpha`, `loss` (mean cross-entropy) and `accuracy` (fraction correct).
    """
    _check_interpolable(model_a, model_b)
    template, state_a = _stateless(model_a)
    state_b = model_b.state_dict()
    device = _device_of(model_a)
    alpha = torch.as_tensor(alphas, dtype=torch.float64, device=device).reshape(-1)
    if alpha.numel() == 0:
        raise ValueError("alphas is empty; pass at least one alpha")
    stacked, fixed = {}, {}
    for name, ta in state_a.items():
        if ta.is_floating_point():
            weight = alpha.to(ta.dtype).view(-1, *[1] * ta.dim())
            stacked[name] = _blend(ta, state_b[name].to(device), weight)
        else:
            fixed[name] = ta
    forward = vmap(lambda params, xb: functional_call(template, (params, fixed), (xb,)), in_dims=(0, None))

    def chunk_means(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Per-alpha mean loss and accuracy on one chunk."""
        logits = forward(stacked, xb)  # (alphas, batch, classes)
        losses = F.cross_entropy(logits.transpose(1, 2), yb.expand(len(alpha), -1), reduction="none")
        correct = (logits.argmax(-1) == yb).to(torch.float64)
        return losses.to(torch.float64).mean(1), correct.mean(1)

    with torch.no_grad():
        loss, accuracy = _dataset_mean(chunk_means, batch_size, device, x, y)
    return {"alpha": alpha.cpu().numpy(), "loss": loss.cpu().numpy(), "accuracy": accuracy.cpu().numpy()}


# ---------------------------------------------------------------------------------------------------------
# Sensitivity to the input (1-3d)
# ---------------------------------------------------------------------------------------------------------


def sensitivity(model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int = 1024) -> float:
    """Mean over examples of ||d loss_i / d x_i||_2, each example's cross-entropy w.r.t. its own input.

    Per-example gradients via vmap(grad(...)), so the value does not depend on `batch_size` (unlike the
    gradient of a batch-mean loss, which is 1/batch as large). The model is run in eval mode.
    """
    template, state = _stateless(model)

    def example_loss(x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of one example."""
        return F.cross_entropy(functional_call(template, state, (x.unsqueeze(0),)), y.unsqueeze(0))

    input_grads = vmap(grad(example_loss))

    def chunk_mean(xb: Tensor, yb: Tensor) -> tuple[Tensor]:
        """Mean input-gradient norm of one chunk."""
        return (input_grads(xb, yb).flatten(1).norm(dim=1).to(torch.float64).mean(),)

    with torch.no_grad():
        return float(_dataset_mean(chunk_mean, batch_size, _device_of(model), inputs, targets)[0])


def jacobian_sensitivity(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> float:
    """Mean over examples of ||d softmax(f(x)) / d x||_F, Novak et al. (2018), via vmap(jacrev). Eval mode."""
    template, state = _stateless(model)

    def probabilities(x: Tensor) -> Tensor:
        """Class probabilities of one example."""
        return functional_call(template, state, (x.unsqueeze(0),)).softmax(-1).squeeze(0)

    jacobians = vmap(jacrev(probabilities))

    def chunk_mean(xb: Tensor) -> tuple[Tensor]:
        """Mean Jacobian Frobenius norm of one chunk."""
        return (jacobians(xb).flatten(1).norm(dim=1).to(torch.float64).mean(),)

    with torch.no_grad():
        return float(_dataset_mean(chunk_mean, batch_size, _device_of(model), inputs)[0])


# ---------------------------------------------------------------------------------------------------------
# Sharpness (Keskar et al. 2016) and the rescaling that changes it freely (Dinh et al. 2017)
# ---------------------------------------------------------------------------------------------------------


def _random_start(theta: Tensor, radius: Tensor | float, box: bool, seed: int) -> Tensor:
    """A seeded random offset inside the L2 ball (or the box) of the given radius."""
    generator = torch.Generator().manual_seed(seed)
    if box:
        uniform = torch.rand(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
        return (2 * uniform - 1) * radius
    direction = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    scale = torch.rand((), generator=generator, dtype=theta.dtype).item()
    return direction * (scale * radius / direction.norm())


def _ascent_step(delta: Tensor, gradient: Tensor, radius: Tensor | float, box: bool) -> Tensor:
    """One projected ascent step: a move of one radius (L2: along g/|g|; box: sign(g)), then projection."""
    if box:
        return torch.clamp(delta + radius * gradient.sign(), -radius, radius)
    moved = delta + radius * gradient / gradient.norm().clamp_min(torch.finfo(gradient.dtype).tiny)
    return moved * min(1.0, radius / max(moved.norm().item(), torch.finfo(moved.dtype).tiny))


def _ascent_max_loss(loss_of: Callable[[Tensor], Tensor], grad_and_loss_of: Callable[[Tensor], tuple],
                     theta: Tensor, radius: Tensor | float, box: bool, steps: int, seed: int) -> float:
    """The largest loss at theta and along `steps` projected gradient-ascent steps from a random start."""
    best = loss_of(theta).item()
    delta = _random_start(theta, radius, box, seed)
    for _ in range(steps):
        gradient, value = grad_and_loss_of(theta + delta)
        best = max(best, value.item())
        delta = _ascent_step(delta, gradient, radius, box)
    return max(best, loss_of(theta + delta).item())


def sharpness(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, eps: float,
              batch_size: int | None = None, ascent_steps: int = 0, seed: int = 0,
              box: bool = False) -> dict[str, float]:
    """Keskar's sharpness: the quadratic `estimate` and, when ascent_steps > 0, a measured `ascent` value.

    estimate = max(lambda_max, 0) * eps^2 / (2 (1 + L)), lambda_max the top Hessian eigenvalue (Lanczos)
    and L the mean loss at theta. ascent = max over the eps-ball of (L(theta') - L) / (1 + L), found by
    projected gradient ascent from a seeded random start inside the ball, keeping the best value seen
    (theta itself included, so ascent >= 0). The ball is the L2 ball of radius eps around theta in
    parameter space; with box=True it is Keskar's box |theta'_i - theta_i| <= eps (|theta_i| + 1).
    L and the ascent are computed in float64 (a float32 loss cannot resolve changes of order eps^2).
    `loss_fn` must return the batch mean; data are processed in chunks of `batch_size` (None: all) and
    must be on the model's device. The model is evaluated in eval mode and never modified.
    Returns a dict with loss, lambda_max, estimate and (when ascent_steps > 0) ascent.
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if ascent_steps < 0:
        raise ValueError(f"ascent_steps must be >= 0, got {ascent_steps}")
    frozen = _eval_copy(model)
    device, theta = _device_of(frozen), flat_params(frozen).double()
    objective = functional_loss(frozen, loss_fn)

    def data_mean(fn: Callable[[Tensor, Tensor], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """Full-data float64 mean of the chunk means that fn returns."""
        return _dataset_mean(fn, batch_size, device, inputs, targets, dtype=torch.float64)

    def loss_of(flat: Tensor) -> Tensor:
        """Mean loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: (objective(flat, xb, yb),))[0]

    def grad_and_loss_of(flat: Tensor) -> tuple[Tensor, ...]:
        """Mean gradient and loss over the whole data at `flat`."""
        return data_mean(lambda xb, yb: grad_and_value(objective)(flat, xb, yb))

    loss = loss_of(theta).item()
    lambda_max = top_hessian_eigenvalue(frozen, loss_fn, inputs, targets, batch_size=batch_size, seed=seed)
    estimate = max(lambda_max, 0.0) * eps**2 / (2 * (1 + loss))
    result = {"loss": loss, "lambda_max": lambda_max, "estimate": estimate}
    if ascent_steps > 0:
        radius = eps * (theta.abs() + 1) if box else eps
        highest = _ascent_max_loss(loss_of, grad_and_loss_of, theta, radius, box, ascent_steps, seed)
        result["ascent"] = (highest - loss) / (1 + loss)
    return result


def rescale_relu_layers(model: nn.Module, a: float) -> nn.Module:
    """A copy of a ReLU MLP with the first Linear (weight, bias) times a and the next Linear's weight / a.

    ReLU is positively homogeneous, so the copy computes the same function (Dinh et al. 2017) while
    its curvature, hence its sharpness, changes.
    """
    if not (a > 0 and np.isfinite(a)):
        raise ValueError(f"the scale a must be positive and finite (ReLU(a z) = a ReLU(z) needs it), got {a}")
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    allowed = (nn.Flatten, nn.Linear, nn.ReLU)
    linear_at = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    if (not all(isinstance(layer, allowed) for layer in layers) or len(linear_at) < 2
            or linear_at[1] != linear_at[0] + 2 or not isinstance(layers[linear_at[0] + 1], nn.ReLU)):
        raise TypeError("rescale_relu_layers needs an nn.Sequential of Flatten/Linear/ReLU layers whose "
                        "first two Linear layers are joined by one ReLU, e.g. "
                        "hw1utils.models.mlp(..., activation='relu')")
    rescaled = copy.deepcopy(model)
    first, second = (rescaled[i] for i in linear_at[:2])
    with torch.no_grad():
        first.weight.mul_(a)
        if first.bias is not None:
            first.bias.mul_(a)
        second.weight.div_(a)
    return rescaled


# ---------------------------------------------------------------------------------------------------------
# PCA of weight trajectories (1-2a)
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Loss surfaces (Li et al. 2018)
# ---------------------------------------------------------------------------------------------------------


def filter_normalized_direction(model: nn.Module, seed: int = 0) -> Tensor:
    """A seeded Gaussian direction (flat, P) with each weight row rescaled to that row's norm in the model.

    Rows are output units of Linear layers and filters of Conv layers (the first dimension). Biases and
    other 1-D parameters get zero, as in Li et al. (2018). Ordered like `curvature.flat_params`.
    """
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for weight in (p for p in model.parameters() if p.requires_grad):
        w = weight.detach()
        noise = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        if w.dim() <= 1:
            pieces.append(torch.zeros_like(w).reshape(-1))
            continue
        row_norms = w.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        pieces.append((noise.flatten(1) * row_norms[:, None]).reshape(-1))
    return torch.cat(pieces)


def _loss_evaluator(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor,
                    batch_size: int | None) -> Callable[[Tensor], Tensor]:
    """points (K, P) -> mean loss on (x, y) at each flat parameter vector (eval mode, vmapped over K)."""
    batched = vmap(functional_loss(_eval_copy(model), loss_fn), in_dims=(0, None, None))
    device = _device_of(model)

    def losses(points: Tensor) -> Tensor:
        """(K,) mean losses at the K points."""
        with torch.no_grad():
            return _dataset_mean(lambda xb, yb: (batched(points, xb, yb),), batch_size, device, x, y)[0]

    return losses


def _grid_axes(span: Span, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The a and b coordinates of a steps x steps grid; span is (lo, hi) or ((a_lo, a_hi), (b_lo, b_hi))."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    pairs = span if np.ndim(span) == 2 else (span, span)
    if np.shape(pairs) != (2, 2):
        raise ValueError(f"span must be (lo, hi) or ((a_lo, a_hi), (b_lo, b_hi)), got {span}")
    return tuple(np.linspace(lo, hi, steps) for lo, hi in pairs)


def loss_surface(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor,
                 direction1: Tensor, direction2: Tensor, span: Span = (-1.0, 1.0), steps: int = 21,
                 center: Tensor | None = None,
                 batch_size: int | None = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss L(center + a d1 + b d2) on a steps x steps grid (center defaults to the model's parameters).

    Each grid row is one vmap call over its points, data in chunks of `batch_size` (memory grows with
    steps * batch_size); the model is run in eval mode and not modified.
    Returns numpy (a_grid, b_grid, losses), all (steps, steps), indexed [i, j] <-> (a_i, b_j).
    """
    theta = flat_params(model).detach() if center is None else _as_flat(center, flat_params(model), "center")
    d1, d2 = _as_flat(direction1, theta, "direction1"), _as_flat(direction2, theta, "direction2")
    a_axis, b_axis = _grid_axes(span, steps)
    b_values = torch.as_tensor(b_axis, device=theta.device, dtype=theta.dtype)
    losses_at = _loss_evaluator(model, loss_fn, x, y, batch_size)
    rows = [losses_at(theta + a * d1 + b_values[:, None] * d2) for a in a_axis]
    a_grid, b_grid = np.meshgrid(a_axis, b_axis, indexing="ij")
    return a_grid, b_grid, torch.stack(rows).cpu().numpy()


def loss_line(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, direction: Tensor,
              alphas: Sequence[float] | np.ndarray | Tensor, center: Tensor | None = None,
              batch_size: int | None = 4096) -> np.ndarray:
    """Loss L(center + alpha d) at every alpha (a 1-D cut) as a numpy array; center defaults to the model."""
    theta = flat_params(model).detach() if center is None else _as_flat(center, flat_params(model), "center")
    d = _as_flat(direction, theta, "direction")
    steps = torch.as_tensor(alphas, device=theta.device, dtype=theta.dtype)
    losses_at = _loss_evaluator(model, loss_fn, x, y, batch_size)
    return losses_at(theta + steps.reshape(-1, 1) * d).cpu().numpy()
