"""Tests of hw1utils.uncertainty against the old rank correlation, scipy's binomial test and hand cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import ConstantInputWarning, binomtest, spearmanr

from hw1utils import uncertainty


def _old_rank_correlation(a: np.ndarray, b: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> dict:
    """minimal_ratio_study.rank_correlation as it was before the move (the reference for bit equality)."""
    rng = np.random.default_rng(seed)
    draws = [spearmanr(a[i], b[i]).statistic for i in rng.integers(0, len(a), (resamples, len(a)))]
    low, high = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"rho": float(spearmanr(a, b).statistic), "low": float(low), "high": float(high)}


# ----------------------------------------------------------------------------------------------- bootstrap


def test_rank_correlation_is_bit_identical_to_the_old_one():
    rng = np.random.default_rng(3)
    a = rng.normal(size=30)
    b = np.round(a + rng.normal(size=30), 1)  # ties in b
    short = np.array([1.0, 2.0, 2.0, 3.0, 5.0]), np.array([0.1, 0.1, 0.3, 0.2, 0.9])  # some resamples constant
    for x, y, level in ((a, b, 0.95), (*short, 0.9)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the new one is silent about constant resamples
            new = uncertainty.rank_correlation(x, y, 500, 7, level)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            assert new == _old_rank_correlation(x, y, 500, 7, level)


def test_rank_correlation_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    a = rng.normal(size=60)
    out = uncertainty.rank_correlation(a, a + 0.5 * rng.normal(size=60), resamples=300, seed=0)
    assert 0 < out["low"] <= out["rho"] <= out["high"] <= 1


def test_bootstrap_interval_brackets_the_mean_and_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        values = rng.normal(2.0, 1.0, size=n)
        out = uncertainty.bootstrap_interval(np.mean, values, resamples=1000, seed=0)
        assert out["estimate"] == values.mean()
        assert out["low"] < out["estimate"] < out["high"]
        widths.append(out["high"] - out["low"])
    assert widths[1] < widths[0] / 3  # 1/sqrt(16) = 1/4, with room for noise
    assert widths[0] == pytest.approx(2 * 1.96 / np.sqrt(50), rel=0.25)  # the normal-theory width


def test_bootstrap_interval_resamples_rows_jointly():
    x = np.arange(20.0)
    out = uncertainty.bootstrap_interval(lambda a, b: float(np.all(a == b)), x, x.copy(), resamples=200, seed=0)
    assert out == {"estimate": 1.0, "low": 1.0, "high": 1.0}  # pairs never split


# ----------------------------------------------------------------------------------------------- two classifiers


def _two_classifiers(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two classifiers on n images: A right 90%, B right 85%, correlated."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return u < 0.90, (u + 0.3 * rng.random(n)) < 0.95


def test_mcnemar_matches_a_hand_count_and_scipys_binomial_test():
    a = np.array([True] * 7 + [False] * 2 + [True] * 5 + [False] * 3)
    b = np.array([False] * 7 + [True] * 2 + [True] * 5 + [False] * 3)
    out = uncertainty.mcnemar(a, b)
    hand = 2 * sum(math.comb(9, k) for k in range(3)) / 2**9  # 2 P(X <= 2), X ~ Bin(9, 1/2)
    assert (out["b"], out["c"], out["n"]) == (7, 2, 17)
    assert out["difference"] == pytest.approx(5 / 17) == out["accuracy_a"] - out["accuracy_b"]
    assert out["p_value"] == pytest.approx(hand, rel=1e-12) == pytest.approx(binomtest(7, 9).pvalue, rel=1e-12)
    x, y = _two_classifiers()
    forward, backward = uncertainty.mcnemar(x, y), uncertainty.mcnemar(y, x)
    assert forward["p_value"] == backward["p_value"] == pytest.approx(binomtest(forward["b"], forward["b"] +
                                                                                forward["c"]).pvalue, rel=1e-12)
    assert forward["difference"] == -backward["difference"] and (forward["b"], forward["c"]) == (backward["c"],
                                                                                                backward["b"])
    assert uncertainty.mcnemar(x, x)["p_value"] == 1.0


def test_paired_bootstrap_difference():
    x, y = _two_classifiers()
    assert uncertainty.paired_bootstrap_difference(x, x, 500, 0) == {"difference": 0.0, "low": 0.0, "high": 0.0}
    out = uncertainty.paired_bootstrap_difference(x, y, 1000, 0)
    assert out["difference"] == pytest.approx(x.mean() - y.mean())
    assert out["low"] < out["difference"] < out["high"]
    swapped = uncertainty.paired_bootstrap_difference(y, x, 1000, 0)
    assert (swapped["low"], swapped["high"]) == pytest.approx((-out["high"], -out["low"]))


def test_paired_bootstrap_difference_matches_resampling_the_images_themselves():
    x, y = _two_classifiers(n=2_000, seed=1)
    counted = uncertainty.paired_bootstrap_difference(x, y, 20_000, 0)
    resampled = uncertainty.bootstrap_interval(lambda a, b: a.mean() - b.mean(), x.astype(float), y.astype(float),
                                               resamples=20_000, seed=1)
    assert counted["difference"] == pytest.approx(resampled["estimate"])
    assert (counted["low"], counted["high"]) == pytest.approx((resampled["low"], resampled["high"]), abs=1e-3)
    assert counted["high"] - counted["low"] > 0.01  # the interval is not degenerate


def test_paired_comparison_joins_mcnemar_and_both_paired_intervals():
    x, y = _two_classifiers()
    loss_x, loss_y = np.where(x, 0.1, 2.0), np.where(y, 0.2, 1.5)
    out = uncertainty.paired_comparison(x, y, 1000, 0, loss_x, loss_y)
    accuracy = uncertainty.paired_bootstrap_difference(x, y, 1000, 0)
    assert out["p_value"] == uncertainty.mcnemar(x, y)["p_value"] and out["difference_low"] == accuracy["low"]
    assert out["loss_difference"] == pytest.approx(loss_x.mean() - loss_y.mean())
    assert out["loss_difference_low"] < out["loss_difference"] < out["loss_difference_high"]
    assert "loss_difference" not in uncertainty.paired_comparison(x, y, 100, 0)


# ----------------------------------------------------------------------------------------------- two groups


def test_pair_win_fraction_hand_cases():
    low, high = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6])
    assert uncertainty.pair_win_fraction(low, high, 200, 0) == {"fraction": 1.0, "low": 1.0, "high": 1.0}
    assert uncertainty.pair_win_fraction(high, low, 200, 0)["fraction"] == 0.0
    assert uncertainty.pair_win_fraction(low, low, 200, 0)["fraction"] == 0.5  # 3 ties (1/2) + 3 wins of 9 pairs
    assert uncertainty.pair_win_fraction(np.array([1.0, 3.0]), np.array([2.0, 2.0]), 200, 0)["fraction"] == 0.5
    assert uncertainty.pair_win_fraction(np.array([1.0, 2.0]), np.array([2.0, 3.0]), 200, 0)["fraction"] == 0.875
    out = uncertainty.pair_win_fraction(np.arange(10.0), np.arange(10.0) + 3, 500, 0)
    assert out["low"] <= out["fraction"] <= out["high"] and out["fraction"] == 0.755  # 72 wins, 7 ties, 21 losses


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors():
    x = np.arange(5.0)
    with pytest.raises(ValueError, match="at least 3 pairs"):
        uncertainty.rank_correlation(x[:2], x[:2], 200, 0)
    with pytest.raises(ValueError, match="lengths"):
        uncertainty.rank_correlation(x, x[:4], 200, 0)
    undefined = uncertainty.rank_correlation(x, np.ones(5), 200, 0)  # a constant input has no correlation
    assert all(np.isnan(undefined[key]) for key in ("rho", "low", "high"))
    with pytest.raises(ValueError, match="NaN"):
        uncertainty.rank_correlation(np.array([1.0, np.nan, 2.0]), x[:3], 200, 0)
    with pytest.raises(ValueError, match="level"):
        uncertainty.rank_correlation(x, x, 200, 0, level=95)
    with pytest.raises(ValueError, match="resamples"):
        uncertainty.bootstrap_interval(np.mean, x, resamples=50, seed=0)
    with pytest.raises(ValueError, match="boolean"):
        uncertainty.mcnemar(np.array([1, 0, 1]), np.array([True, False, True]))
    with pytest.raises(ValueError, match="same test images"):
        uncertainty.paired_bootstrap_difference(np.ones(3, bool), np.ones(4, bool), 200, 0)
    with pytest.raises(ValueError, match="at least 2 values"):
        uncertainty.pair_win_fraction(x, x[:1], 200, 0)
