"""Bootstrap intervals and paired tests: a percentile bootstrap of any statistic (rows resampled jointly),
Spearman's rank correlation with its interval, McNemar's exact test and a paired bootstrap of an accuracy
difference for two classifiers on the same test images, and the pair win fraction of two groups of seeds.

Every interval is a percentile interval: the (1 - level)/2 and (1 + level)/2 quantiles of the statistic
over `resamples` bootstrap draws from `numpy.random.default_rng(seed)`, so a call is deterministic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import ConstantInputWarning, binom, spearmanr

MIN_RESAMPLES = 100


# ---------------------------------------------------------------------------------------------- checks


def _check_level(level: float) -> None:
    """Reject an interval level outside (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level is the interval's coverage and must lie in (0, 1), e.g. 0.95; got {level}")


def _check_resamples(resamples: int) -> None:
    """Reject fewer than MIN_RESAMPLES bootstrap draws (their quantiles would be noise)."""
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples must be an integer >= {MIN_RESAMPLES} (2000 is a good default), "
                         f"got {resamples!r}")


def _numeric(values: object, name: str) -> np.ndarray:
    """`values` as a finite 1-D float array (ValueError naming `name` otherwise)."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a 1-D array of real numbers, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; drop those rows first")
    return array


def _same_length(arrays: tuple[np.ndarray, ...], names: str) -> int:
    """The common length of `arrays` (ValueError naming them when the lengths differ)."""
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) != 1:
        raise ValueError(f"{names} must have one entry per row (paired), got lengths {lengths}")
    return lengths[0]


def _correctness(values: object, name: str) -> np.ndarray:
    """`values` as a 1-D boolean array of per-example correctness (ValueError otherwise)."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != bool or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D boolean array (True where the classifier is right), "
                         f"e.g. predictions == labels; got shape {array.shape} and dtype {array.dtype}")
    return array


def _paired_correctness(correct_a: object, correct_b: object) -> tuple[np.ndarray, np.ndarray]:
    """Both correctness vectors, checked to be boolean and of one length (the same test images)."""
    a, b = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    _same_length((a, b), "correct_a and correct_b (the same test images, in the same order)")
    return a, b


# ---------------------------------------------------------------------------------------------- bootstrap


def _indices(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) row indices drawn with replacement."""
    return rng.integers(0, n, (resamples, n))


def _percentile_interval(draws: Sequence[float] | np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` interval of the bootstrap draws (NaN draws, e.g. of constant resamples, skipped)."""
    low, high = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_interval(statistic: Callable[..., float], *arrays: np.ndarray, resamples: int, seed: int,
                       level: float = 0.95) -> dict[str, float]:
    """`statistic(*arrays)` with a percentile bootstrap interval, resampling the rows of all arrays jointly.

    The arrays are paired: row i of each belongs to one unit (a run, a test image). Each of `resamples`
    draws picks n rows with replacement and evaluates `statistic` on those rows of every array; draws
    where the statistic is NaN are left out of the quantiles. Returns estimate, low and high.
    """
    _check_level(level)
    _check_resamples(resamples)
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array to resample")
    n = _same_length(arrays, "the arrays")
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 rows, got {n}")
    rng = np.random.default_rng(seed)
    draws = [statistic(*(a[i] for a in arrays)) for i in _indices(rng, n, resamples)]
    low, high = _percentile_interval(draws, level)
    return {"estimate": float(statistic(*arrays)), "low": low, "high": high}


def rank_correlation(a: np.ndarray, b: np.ndarray, resamples: int, seed: int,
                     level: float = 0.95) -> dict[str, float]:
    """Spearman rho of a and b, with a percentile bootstrap interval over runs (resampled in pairs).

    Needs at least 3 pairs (the rank correlation of 2 points is +-1 by construction). When a or b is
    constant the correlation is undefined and rho, low and high are all NaN (stored as null). Resamples
    where a or b happens to be constant have no rho and are left out of the interval (without a
    warning). Returns rho, low, high.
    """
    a, b = _numeric(a, "a"), _numeric(b, "b")
    n = _same_length((a, b), "a and b")
    if n < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs (of 2 points it is +-1 by construction), "
                         f"got {n}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"rho": math.nan, "low": math.nan, "high": math.nan}
    with warnings.catch_warnings():  # constant resamples give NaN draws, which the interval leaves out
        warnings.simplefilter("ignore", ConstantInputWarning)
        out = bootstrap_interval(lambda x, y: spearmanr(x, y).statistic, a, b, resamples=resamples, seed=seed,
                                 level=level)
    return {"rho": out["estimate"], "low": out["low"], "high": out["high"]}


# ---------------------------------------------------------------------------------------------- two classifiers


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact two-sided McNemar test of two classifiers' per-example correctness on the same test images.

    b counts the images that A gets right and B wrong, c the reverse. Under the null (equal accuracy)
    b ~ Binomial(b + c, 1/2), and the two-sided p-value is min(1, 2 P(X <= min(b, c))) (1 when b + c = 0).
    Returns b, c, n, accuracy_a, accuracy_b, difference (accuracy_a - accuracy_b = (b - c) / n), p_value.
    """
    right_a, right_b = _paired_correctness(correct_a, correct_b)
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p_value = min(1.0, 2 * float(binom.cdf(min(b, c), b + c, 0.5))) if b + c else 1.0
    return {"b": b, "c": c, "n": len(right_a), "accuracy_a": float(right_a.mean()),
            "accuracy_b": float(right_b.mean()), "difference": (b - c) / len(right_a), "p_value": p_value}


def _counted_interval(counts: dict[str, float], resamples: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of accuracy A - B from `mcnemar`'s counts, each resample drawn through its counts.

    A resample of the n images is described by how many images only A gets right, how many only B, and
    the rest (a multinomial, drawn as two binomials): the distribution of resampling the images themselves,
    without the (resamples, n) index table.
    """
    _check_level(level)
    _check_resamples(resamples)
    only_a, only_b, n = counts["b"], counts["c"], counts["n"]
    rng = np.random.default_rng(seed)
    discordant = rng.binomial(n, (only_a + only_b) / n, resamples)
    fewer = rng.binomial(discordant, min(only_a, only_b) / max(only_a + only_b, 1))  # the rarer kind: A, B swap
    draws_a, draws_b = (discordant - fewer, fewer) if only_a >= only_b else (fewer, discordant - fewer)
    return _percentile_interval((draws_a - draws_b) / n, level)


def paired_bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int, seed: int,
                                level: float = 0.95) -> dict[str, float]:
    """Accuracy of A minus accuracy of B, with a percentile interval resampling test images (paired).

    Returns difference, low and high; identical correctness vectors give exactly 0, 0, 0.
    """
    counts = mcnemar(correct_a, correct_b)
    low, high = _counted_interval(counts, resamples, seed, level)
    return {"difference": counts["difference"], "low": low, "high": high}


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int, seed: int,
                      loss_a: np.ndarray | None = None, loss_b: np.ndarray | None = None) -> dict[str, float]:
    """Two models on the same test images: McNemar's test, and paired bootstrap intervals of the differences.

    Returns `mcnemar`'s values with difference_low and difference_high (accuracy A - B); given the
    per-image losses, also loss_difference (mean loss A - B) with loss_difference_low and _high.
    """
    counts = mcnemar(correct_a, correct_b)
    low, high = _counted_interval(counts, resamples, seed, level=0.95)
    out = {**counts, "difference_low": low, "difference_high": high}
    if loss_a is not None and loss_b is not None:
        difference = np.asarray(loss_a, float) - np.asarray(loss_b, float)  # one array: half the gathering
        loss = bootstrap_interval(np.mean, difference, resamples=resamples, seed=seed)
        out.update(loss_difference=loss["estimate"], loss_difference_low=loss["low"],
                   loss_difference_high=loss["high"])
    return out


# ---------------------------------------------------------------------------------------------- two groups


def _win_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pairs (i, j) with a[i] < b[j], ties counting 1/2."""
    below, tied = a[:, None] < b[None, :], a[:, None] == b[None, :]
    return float((below + 0.5 * tied).mean())


def pair_win_fraction(a: np.ndarray, b: np.ndarray, resamples: int, seed: int,
                      level: float = 0.95) -> dict[str, float]:
    """P(a < b) over all pairs (ties 1/2): the Mann-Whitney common-language effect size, with an interval.

    Meant for two models' final losses over seeds: 1 means every seed of a ends below every seed of b,
    0.5 no separation. The interval resamples the seeds of each group independently (the groups are
    not paired). Each group needs at least 2 values. Returns fraction, low and high.
    """
    _check_level(level)
    _check_resamples(resamples)
    a, b = _numeric(a, "a"), _numeric(b, "b")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each group needs at least 2 values (seeds) to resample, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    draws = [_win_fraction(a[i], b[j])
             for i, j in zip(_indices(rng, len(a), resamples), _indices(rng, len(b), resamples), strict=True)]
    low, high = _percentile_interval(draws, level)
    return {"fraction": _win_fraction(a, b), "low": low, "high": high}
