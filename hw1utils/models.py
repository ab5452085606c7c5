"""MLP and CNN builders, parameter counting and matching, per-layer summaries."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
MONOTONE = ("relu", "tanh")  # non-decreasing: max-pooling commutes with them exactly
PARAM_TOLERANCE = 0.01  # "equal parameter counts" means within 1%


def _activation(name: str) -> nn.Module:
    """A fresh activation module from its name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu") -> nn.Sequential:
    """Flatten, then Linear+activation per hidden width, then a final Linear (no activation)."""
    widths = [int(in_features), *map(int, hidden), int(out_features)]
    if min(widths) < 1:
        raise ValueError(f"every layer width must be >= 1, got {widths}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


def cnn(input_shape: Sequence[int], channels: Sequence[int], n_classes: int = 10,
        activation: str = "relu") -> nn.Sequential:
    """Conv3x3+activation blocks (2x2 max-pool after each while the map is >= 4 px), global average pool, Linear.

    The conventional small classifier: the head is one Linear layer on the last block's channels, so
    almost all of a deep network's parameters sit in its convolutions. For a non-decreasing activation
    (MONOTONE) the pool comes before it: max(f(a), f(b)) = f(max(a, b)), so the outputs and gradients are
    those of activation-then-pool, with the activation applied to a quarter of the values (1-1b's
    CNNs: 3-7% less time per training process on a CPU, measured whole).
    """
    c, h, w = map(int, input_shape)
    if not channels or min(channels) < 1:
        raise ValueError(f"channels must be a non-empty list of positive ints, got {list(channels)}")
    layers: list[nn.Module] = []
    for width in channels:
        block = [_activation(activation)]
        if min(h, w) >= 4:
            block.insert(0 if activation in MONOTONE else 1, nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers += [nn.Conv2d(c, int(width), kernel_size=3, padding=1), *block]
        c = int(width)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, int(n_classes)))


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def same_size(counts: Sequence[int], tolerance: float = PARAM_TOLERANCE) -> bool:
    """True when all parameter counts lie within `tolerance` (relative) of their mean."""
    mean = sum(counts) / len(counts)
    return all(abs(n - mean) <= tolerance * mean for n in counts)


def match_width(build: Callable[[int], nn.Module], target: int, tolerance: float = PARAM_TOLERANCE) -> int:
    """The width w (>= 1) whose `build(w)` has the parameter count closest to `target`, within `tolerance`.

    `build(w)` must have a parameter count that grows with w. Raises ValueError when no width
    reaches the target within the tolerance (for example when even width 1 is too large).
    """
    if target < 1:
        raise ValueError(f"target parameter count must be positive, got {target}")
    hi = 1
    while count_params(build(hi)) < target:  # grow the bracket without building huge models
        hi *= 2
    lo = max(hi // 2, 1)
    while lo < hi:  # smallest width whose count is >= target
        mid = (lo + hi) // 2
        if count_params(build(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min({max(lo - 1, 1), lo}, key=lambda w: abs(count_params(build(w)) - target))
    got = count_params(build(best))
    if abs(got - target) > tolerance * target:
        raise ValueError(
            f"no width reaches {target} parameters within {tolerance:.0%}: the closest, width {best}, "
            f"gives {got}. Change the depth or the target (width 1 gives {count_params(build(1))})."
        )
    return best


def _one_width_adjusted(build: Callable[[list[int]], nn.Module], depth: int, target: int, adjusted: int,
                        what: str) -> nn.Module:
    """`build(widths)` with `depth` equal widths except widths[adjusted], the count within 1% of `target`.

    Equal widths alone move the count in steps of about the width and can jump over the target; the
    one adjusted layer lands it, as close to the others as the 1% allows. ValueError naming `what`,
    the depth and the closest count otherwise.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")

    def widths(other: int, chosen: int) -> list[int]:
        """`depth` widths `other`, with `chosen` at position `adjusted`."""
        out = [other] * depth
        out[adjusted] = chosen
        return out

    equal = match_width(lambda w: build([w] * depth), target, tolerance=math.inf)
    candidates = {}  # (other width, adjusted width) -> parameter count
    for other in range(max(equal - 6, 1), equal + 7):
        try:
            chosen = match_width(lambda w, o=other: build(widths(o, w)), target)
        except ValueError:
            continue
        candidates[(other, chosen)] = count_params(build(widths(other, chosen)))
    if not candidates:
        closest = count_params(build([equal] * depth))
        raise ValueError(f"no {what} with {depth} layers has {target:,} parameters within 1% (the closest equal-width "
                         f"one has {closest:,}): change the depth or the target")
    other, chosen = min(candidates, key=lambda pair: (abs(pair[0] - pair[1]), abs(candidates[pair] - target)))
    return build(widths(other, chosen))


def mlp_with_params(in_features: int, depth: int, out_features: int, target: int,
                    activation: str = "relu") -> nn.Sequential:
    """An MLP with `depth` hidden layers of one width (the first adjusted) and a count within 1% of `target`."""
    return _one_width_adjusted(lambda widths: mlp(in_features, widths, out_features, activation), depth, target,
                               adjusted=0, what=f"MLP {in_features}->{out_features}")


def cnn_with_params(input_shape: Sequence[int], depth: int, n_classes: int, target: int,
                    activation: str = "relu") -> nn.Sequential:
    """A `cnn` with `depth` conv layers of one width (the last adjusted) and a count within 1% of `target`."""
    return _one_width_adjusted(lambda widths: cnn(input_shape, widths, n_classes, activation), depth, target,
                               adjusted=-1, what=f"CNN on {'x'.join(map(str, input_shape))} input")


def conv_fraction(model: nn.Module) -> float:
    """Fraction of the trainable parameters that sit in Conv2d layers."""
    conv = sum(count_params(m) for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv / count_params(model)


def geometric_widths(smallest: int, largest: int, count: int) -> list[int]:
    """`count` distinct integer widths spaced geometrically from `smallest` to `largest`."""
    if count < 2 or smallest < 1 or largest <= smallest:
        raise ValueError(f"need count >= 2 and 1 <= smallest < largest, got {smallest}, {largest}, {count}")
    ratio = (largest / smallest) ** (1 / (count - 1))
    widths = sorted({round(smallest * ratio**i) for i in range(count)})
    if len(widths) < count:
        raise ValueError(f"{count} distinct widths do not fit between {smallest} and {largest}")
    return widths


def describe(model: nn.Module) -> str:
    """A one-line description: hidden widths for an MLP, channels for a CNN, and the parameter count."""
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    parts = []
    if convs:
        parts.append("conv " + "-".join(map(str, convs)))
    parts.append("fc " + "-".join(map(str, linears)))
    return f"{', '.join(parts)} ({count_params(model):,} params)"


def summary(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """Per-layer table (layer, output shape, parameters) from one forward pass of a zero batch."""
    rows = []
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        for i, layer in enumerate(model.children() if isinstance(model, nn.Sequential) else [model]):
            x = layer(x)
            rows.append({"layer": f"{i}: {layer.__class__.__name__}", "output shape": tuple(x.shape[1:]),
                         "parameters": count_params(layer)})
    table = pd.DataFrame(rows)
    total = pd.DataFrame([{"layer": "total", "output shape": "", "parameters": int(table.parameters.sum())}])
    return pd.concat([table, total], ignore_index=True)


def flops_per_example(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates x2 of the Linear and Conv2d layers for one forward pass (an estimate)."""
    total = 0
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        for layer in model.children():
            y = layer(x)
            if isinstance(layer, nn.Linear):
                total += 2 * layer.in_features * layer.out_features
            elif isinstance(layer, nn.Conv2d):
                total += 2 * math.prod(y.shape[1:]) * layer.in_channels * math.prod(layer.kernel_size)
            x = y
    return total
