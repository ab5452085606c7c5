"""Linear interpolation between two trained models (Goodfellow et al. 2015; notebook 1-3c): the blended model,
the cross-entropy loss and accuracy along the line, and what is needed to read such a line fairly: each
end's losses at its stopping point, the ends' weight norms, per-image scores for paired tests, and a
scale-invariant flatness measure around each end (filter-normalised random directions, Li et al. 2018),
which a ReLU layer rescaling that keeps the function (Dinh et al. 2017) leaves unchanged."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from hw1utils import landscape
from hw1utils.evaluation import dataset_mean, device_of, eval_copy, stateless
from hw1utils.weight_vector import flat_params


def _blend(start: Tensor, end: Tensor, alpha: Tensor | float) -> Tensor:
    """(1 - alpha) * start + alpha * end, exact at alpha = 0 and 1."""
    return (1 - alpha) * start + alpha * end


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


def _ends_on_grid(alpha_range: tuple[float, float], n_alphas: int) -> bool:
    """Whether alpha = 0 and alpha = 1 are points of the evenly spaced grid of `n_alphas` over `alpha_range`."""
    low, high = alpha_range
    per_unit = (n_alphas - 1) / (high - low)  # grid intervals per unit of alpha
    return n_alphas >= 2 and all(math.isclose(x, round(x), abs_tol=1e-9) for x in (per_unit, -low * per_unit))


def alpha_grid(alpha_range: tuple[float, float], n_alphas: int) -> np.ndarray:
    """`n_alphas` evenly spaced alphas over `alpha_range`, ends included; ValueError unless 0 and 1 are on it.

    The line's ends must be grid points, so that alpha = 0 and alpha = 1 are the trained models themselves.
    """
    if not alpha_range[0] <= 0 < 1 <= alpha_range[1]:
        raise ValueError(f"ALPHA_RANGE must contain [0, 1] (the two trained models); got {alpha_range}")
    if not _ends_on_grid(alpha_range, n_alphas):
        step = next((n - 1 for n in range(2, 10_001) if _ends_on_grid(alpha_range, n)), None)
        rule = f"N_ALPHAS - 1 must be a multiple of {step} (e.g. {20 * step + 1})" if step else "choose another range"
        raise ValueError(f"N_ALPHAS = {n_alphas} puts alpha = 0 or 1 between the grid points of ALPHA_RANGE "
                         f"{alpha_range}: {rule}")
    return np.linspace(*alpha_range, n_alphas)


def interpolation_curve(model_a: nn.Module, model_b: nn.Module, alphas: Sequence[float] | np.ndarray | Tensor,
                        x: Tensor, y: Tensor, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Cross-entropy loss and accuracy on (x, y) at every alpha of the line from model_a to model_b.

    All alphas are evaluated at once (vmap over stacked interpolated parameters), data in chunks of
    `batch_size` examples: memory grows with len(alphas) * batch_size. Models are run in eval mode.
    Returns numpy arrays `alpha`, `loss` (mean cross-entropy) and `accuracy` (fraction correct).
    """
    _check_interpolable(model_a, model_b)
    template, state_a = stateless(model_a)
    state_b = model_b.state_dict()
    device = device_of(model_a)
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
        loss, accuracy = dataset_mean(chunk_means, batch_size, device, x, y)
    return {"alpha": alpha.cpu().numpy(), "loss": loss.cpu().numpy(), "accuracy": accuracy.cpu().numpy()}


# ------------------------------------------------------------------------------------------- the endpoints


def endpoint_summary(model: nn.Module, schedule_row: dict[str, Any], data: tuple[Tensor, ...]) -> dict[str, float]:
    """One trained end: its epochs and steps (a `train_to_target` row), its loss and accuracy on the training and
    test sets (x, y, x_test, y_test), and its weight norm."""
    x, y, x_test, y_test = data
    train, test = per_example_scores(model, x, y), per_example_scores(model, x_test, y_test)
    return {"epochs": int(schedule_row["epochs"]), "steps": int(schedule_row["steps"]),
            "train_loss": float(train["loss"].mean()), "train_acc": float(train["correct"].mean()),
            "test_loss": float(test["loss"].mean()), "test_acc": float(test["correct"].mean()),
            "weight_norm": flat_params(model).norm().item()}


def line_scales(model_a: nn.Module, model_b: nn.Module) -> dict[str, float]:
    """The ends' weight norms, the line's length |theta_b - theta_a|, and that length in units of each end's norm."""
    _check_interpolable(model_a, model_b)
    theta_a, theta_b = flat_params(model_a).detach(), flat_params(model_b).detach()
    norm_a, norm_b, length = theta_a.norm().item(), theta_b.norm().item(), (theta_b - theta_a).norm().item()
    return {"norm_a": norm_a, "norm_b": norm_b, "length": length, "length_per_norm_a": length / norm_a,
            "length_per_norm_b": length / norm_b}


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, batch_size: int = 8192) -> Tensor:
    """The model's outputs on x, in batches, in eval mode (the model itself untouched).

    Convolution weights are put channels-last (the copy's only): 1.4-3x as fast on a CPU for 1-1b's CNNs.
    """
    net = eval_copy(model).to(memory_format=torch.channels_last)  # 4-D weights only: an MLP is unchanged
    device = device_of(net)
    return torch.cat([net(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def per_example_scores(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Per example: the cross-entropy, the arg-max prediction and whether it is right (eval mode, model untouched)."""
    logits = _logits(model, x, batch_size)
    target = y.to(logits.device)
    prediction = logits.argmax(1)
    return {"loss": F.cross_entropy(logits, target, reduction="none").double().cpu().numpy(),
            "prediction": prediction.cpu().numpy(), "correct": (prediction == target).cpu().numpy()}


def _grid_index(alpha: np.ndarray, value: float) -> int:
    """Index of `value` in the alpha grid (ValueError when it is not a grid point)."""
    index = int(np.abs(alpha - value).argmin())
    if not np.isclose(alpha[index], value, rtol=0, atol=1e-9):
        raise ValueError(f"alpha = {value:g} is not on the grid ({alpha[0]:g} .. {alpha[-1]:g}, {len(alpha)} points); "
                         "choose a grid that contains it")
    return index


def line_summary(train_curve: dict[str, np.ndarray], test_curve: dict[str, np.ndarray],
                 outside: float) -> dict[str, float]:
    """What a reader of one interpolation figure looks at, from `interpolation_curve` results on train and test.

    The training loss at the ends (alpha 0 and 1) and its highest value between them (where, and how
    many times the higher end), the largest drop of training accuracy between the ends below the lower
    end, the training loss `outside` line lengths beyond each end (alpha -outside and 1 + outside,
    raw parameter units) and the test accuracy at the grid's first and last alpha.
    """
    alpha, loss, accuracy = train_curve["alpha"], train_curve["loss"], train_curve["accuracy"]
    a, b = _grid_index(alpha, 0.0), _grid_index(alpha, 1.0)
    between = np.flatnonzero((alpha >= 0) & (alpha <= 1))
    peak = between[loss[between].argmax()]
    return {"train_loss_a": float(loss[a]), "train_loss_b": float(loss[b]), "peak_train_loss": float(loss[peak]),
            "peak_alpha": float(alpha[peak]), "peak_over_higher_end": float(loss[peak] / max(loss[a], loss[b])),
            "train_acc_drop": float(min(accuracy[a], accuracy[b]) - accuracy[between].min()),
            "loss_beyond_a": float(loss[_grid_index(alpha, -outside)]),
            "loss_beyond_b": float(loss[_grid_index(alpha, 1 + outside)]),
            "test_acc_first": float(test_curve["accuracy"][0]), "test_acc_last": float(test_curve["accuracy"][-1])}


def line_labels(outside: float, alpha_range: tuple[float, float]) -> dict[str, str]:
    """Row labels for `line_scales`, `line_summary`, `raw_view` and `agreement_at` values, in reading order."""
    return {"norm_a": "|θ1|", "norm_b": "|θ2|", "length": "line length |θ2 - θ1|",
            "length_per_norm_a": "length / |θ1|", "length_per_norm_b": "length / |θ2|",
            "train_loss_a": "train loss at α = 0",
            "train_loss_b": "train loss at α = 1", "peak_train_loss": "highest train loss, 0 ≤ α ≤ 1",
            "peak_alpha": "... at α", "peak_over_higher_end": "... / higher end",
            "train_acc_drop": "train accuracy drop between the ends",
            "loss_beyond_a": f"train loss at α = {-outside:g}", "loss_beyond_b": f"train loss at α = {1 + outside:g}",
            "test_acc_first": f"test accuracy at α = {alpha_range[0]:g}",
            "test_acc_last": f"test accuracy at α = {alpha_range[1]:g}",
            "far_end_agreement": f"α = {alpha_range[1]:g}: same test predictions as θ2"}


def agreement_at(model_a: nn.Module, model_b: nn.Module, alpha: float, x: Tensor, prediction: np.ndarray) -> float:
    """Fraction of the inputs x on which the model at `alpha` on the line predicts `prediction` (say, theta_b's)."""
    return float((_logits(interpolate(model_a, model_b, alpha), x).argmax(1).cpu().numpy() == prediction).mean())


def raw_view(model_a: nn.Module, model_b: nn.Module, outside: float, x: Tensor, y: Tensor) -> dict[str, float]:
    """The raw view of a line (unnormalised): |theta_a|, its length, and the loss `outside` lengths past each end."""
    loss = interpolation_curve(model_a, model_b, [-outside, 1 + outside], x, y)["loss"]
    scales = line_scales(model_a, model_b)
    return {"norm_a": scales["norm_a"], "length": scales["length"], "loss_beyond_a": float(loss[0]),
            "loss_beyond_b": float(loss[1])}


# ----------------------------------------------------------------------------- flatness, scale-invariant


def direction_profiles(model: nn.Module, x: Tensor, y: Tensor, steps: Sequence[float] | np.ndarray,
                       seeds: Sequence[int], batch_size: int | None = 4096) -> np.ndarray:
    """Mean cross-entropy on (x, y) at theta + t d_s, (len(seeds), len(steps)), d_s filter-normalised (Li et al. 2018).

    Direction d_s is Gaussian (seed s) with each weight row rescaled to that row's norm in the model
    and zero on biases, so a step t moves every row by t times its own length. Scaling one ReLU layer
    by a > 0 and the next by 1/a keeps the function (Dinh et al. 2017) and scales d_s with it, so the
    profile is unchanged; a step of fixed length in raw parameter units would not be.
    """
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one direction seed")
    loss_fn = lambda out, target: F.cross_entropy(out, target)  # noqa: E731  mean over the chunk
    return np.stack([landscape.loss_line(model, loss_fn, x, y, landscape.filter_normalized_direction(model, seed),
                                         steps, batch_size=batch_size) for seed in seeds])


def _first_crossing(t: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first t where `values` reach `level`, linear between grid points; nan where they never do."""
    above = np.flatnonzero(values >= level)
    if len(above) == 0:
        return math.nan
    j = above[0]
    return float(t[j - 1] + (level - values[j - 1]) * (t[j] - t[j - 1]) / (values[j] - values[j - 1]))


def flatness_radius(steps: Sequence[float] | np.ndarray, profiles: np.ndarray, rise: float) -> np.ndarray:
    """Per ray, the smallest |t| at which the loss has risen by `rise` over its value at t = 0 (nan: never on the grid).

    `steps` is an increasing grid that contains 0, `profiles` is (directions, steps) as from
    `direction_profiles`; every direction gives two rays, t > 0 and t < 0. Returns the 2 * directions
    radii, the positive rays first, each interpolated linearly between grid points.
    """
    t, losses = np.asarray(steps, dtype=float), np.atleast_2d(np.asarray(profiles, dtype=float))
    zero = np.flatnonzero(t == 0)
    if t.ndim != 1 or len(zero) != 1 or np.any(np.diff(t) <= 0) or losses.shape[1] != len(t):
        raise ValueError(f"steps must be an increasing 1-D grid containing 0 once, with one column of profiles per "
                         f"step; got {len(t)} steps and profiles of shape {losses.shape}")
    if not rise > 0:
        raise ValueError(f"rise must be a positive loss increase (nats), got {rise}")
    i = zero[0]
    rays = [(t[i:], losses[:, i:]), (-t[i::-1], losses[:, i::-1])]
    return np.array([_first_crossing(side, row, row[0] + rise) for side, rows in rays for row in rows])


def radius_ratio(radii_a: np.ndarray, radii_b: np.ndarray, resamples: int, seed: int,
                 level: float = 0.95) -> dict[str, float]:
    """Geometric-mean ratio of the radii of end a to those of end b, with a two-level bootstrap interval.

    The radii are (pairs, rays): row s holds the rays around the two models of training seed s (1-D: one
    pair). Ray k of both ends uses the same Gaussian seed and sign (each normalised to its own model),
    so rays are paired. The bootstrap resamples the pairs of models, then the rays within each: the
    interval covers other training seeds as well as other directions. Above 1: end a is the flatter.
    Returns ratio, low and high.
    """
    a, b = np.atleast_2d(np.asarray(radii_a, dtype=float)), np.atleast_2d(np.asarray(radii_b, dtype=float))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"radii_a and radii_b must be paired (pairs, rays) arrays, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (a > 0).all() and (b > 0).all()):
        raise ValueError("every radius must be positive and finite; a nan radius means the loss never rose by "
                         "`rise` on the grid: widen the step grid or lower `rise`")
    log_ratio = np.log(a) - np.log(b)
    rng = np.random.default_rng(seed)
    pairs, rays = log_ratio.shape
    chosen = rng.integers(0, pairs, size=(resamples, pairs, 1))
    draws = log_ratio[chosen, rng.integers(0, rays, size=(resamples, pairs, rays))].mean(axis=(1, 2))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"ratio": float(np.exp(log_ratio.mean())), "low": float(np.exp(low)), "high": float(np.exp(high))}
