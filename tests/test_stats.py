"""ablation/stats.py against references written here from the textbook formulas.

Each function is checked on random inputs and at its boundaries (0, 1 and 2 values; ties at exactly 0;
p exactly at alpha), and on float32 / integer / boolean inputs, which must be computed in float64 like
float64 input. References: the sample standard deviation (ddof = 1); Student's t interval
mean ± t_{(1+c)/2, n-1} sd / sqrt(n); the paired t statistic t = mean(d) / (sd(d) / sqrt(n)) with a
two-sided p from the t distribution; McNemar's exact binomial test; and the percentile bootstrap of the
mean difference with resample counts drawn in one piece.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from tricklab.ablation.stats import (MIN_SEEDS_FOR_VERDICT, mcnemar_exact, mean_std, paired_bootstrap,
                                     paired_t_test, t_interval, verdict)


def ref_sd(x: list[float]) -> float:
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


def float32_sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """Large values with a small spread: float32 arithmetic on them loses digits float64 keeps."""
    return (1e6 + rng.standard_normal(n) * 0.37).astype(np.float32)


# ---------------------------------------------------------------- mean_std

@pytest.mark.parametrize("n", [2, 3, 7])
def test_mean_std_matches_the_sample_formula(n):
    x = list(np.random.default_rng(n).standard_normal(n) * 3 + 1)
    m, s = mean_std(x)
    assert m == pytest.approx(sum(x) / n, rel=1e-12)
    assert s == pytest.approx(ref_sd(x), rel=1e-12)


def test_mean_std_edges():
    assert all(math.isnan(v) for v in mean_std([]))
    m, s = mean_std([4.25])
    assert m == 4.25 and math.isnan(s)
    assert mean_std([1, 3]) == (2.0, pytest.approx(math.sqrt(2)))


def test_mean_std_float32_input_is_computed_in_float64():
    x = float32_sample(np.random.default_rng(0), 9)
    xs = [float(v) for v in x]                      # the float32 values, exactly, as Python floats
    m, s = mean_std(x)
    assert m == pytest.approx(math.fsum(xs) / len(xs), rel=0, abs=1e-9)
    assert s == pytest.approx(ref_sd(xs), rel=1e-9)


# ---------------------------------------------------------------- t_interval

@pytest.mark.parametrize("n,conf", [(2, 0.95), (3, 0.95), (5, 0.9), (10, 0.99)])
def test_t_interval_matches_student_t(n, conf):
    d = list(np.random.default_rng(10 + n).standard_normal(n))
    m, lo, hi = t_interval(d, confidence=conf)
    half = st.t.ppf((1 + conf) / 2, n - 1) * ref_sd(d) / math.sqrt(n)
    assert m == pytest.approx(sum(d) / n, rel=1e-12)
    assert (lo, hi) == (pytest.approx(m - half, rel=1e-12), pytest.approx(m + half, rel=1e-12))


def test_t_interval_edges():
    assert all(math.isnan(v) for v in t_interval([]))
    m, lo, hi = t_interval([0.3])
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)      # no spread: the interval collapses


def test_t_interval_default_confidence_is_95():
    d = [0.1, -0.2, 0.4, 0.3]
    assert t_interval(d) == t_interval(d, confidence=0.95)
    assert t_interval(d)[2] - t_interval(d)[0] == pytest.approx(
        st.t.ppf(0.975, 3) * ref_sd(d) / 2, rel=1e-12)


def test_t_interval_float32_input_is_computed_in_float64():
    x = float32_sample(np.random.default_rng(1), 6)
    xs = [float(v) for v in x]
    m, lo, hi = t_interval(x)
    half = st.t.ppf(0.975, 5) * ref_sd(xs) / math.sqrt(6)
    assert m == pytest.approx(math.fsum(xs) / 6, rel=0, abs=1e-9)
    assert hi - lo == pytest.approx(2 * half, rel=1e-6)


# ---------------------------------------------------------------- paired_t_test

def ref_paired_p(a: list[float], b: list[float]) -> float:
    d = [y - x for x, y in zip(a, b)]
    n = len(d)
    t = (sum(d) / n) / (ref_sd(d) / math.sqrt(n))
    return 2 * st.t.sf(abs(t), n - 1)


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_paired_t_test_matches_the_t_statistic(n):
    rng = np.random.default_rng(20 + n)
    a = list(rng.standard_normal(n))
    b = list(np.asarray(a) + 0.4 + rng.standard_normal(n) * 0.5)
    assert paired_t_test(a, b) == pytest.approx(ref_paired_p(a, b), rel=1e-9)
    assert paired_t_test(b, a) == pytest.approx(ref_paired_p(b, a), rel=1e-9)   # two-sided: symmetric


def test_paired_t_test_edges():
    assert math.isnan(paired_t_test([0.5], [0.7]))                 # one pair: nothing to test
    assert math.isnan(paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))   # every difference 0
    assert paired_t_test([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == 0.0        # equal non-zero differences
    assert paired_t_test([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]) > 0.05     # d = -2, -4, -6: spread, no pairing sum


def test_paired_t_test_integer_and_boolean_inputs():
    a = [True, False, True, True, False]
    b = [True, True, True, False, True]
    ref = ref_paired_p([float(v) for v in a], [float(v) for v in b])
    assert paired_t_test(np.array(a), np.array(b)) == pytest.approx(ref, rel=1e-9)
    assert paired_t_test(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)) == pytest.approx(ref, rel=1e-9)


def test_paired_t_test_shape_error():
    with pytest.raises(ValueError, match=r"^paired_t_test: a and b must pair up, got shapes \(2,\) and \(3,\)$"):
        paired_t_test([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- mcnemar_exact

def ref_mcnemar(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    nb = sum(1 for x, y in zip(a, b) if x and not y)
    nc = sum(1 for x, y in zip(a, b) if y and not x)
    n = nb + nc
    tail = sum(math.comb(n, k) for k in range(min(nb, nc) + 1)) / 2 ** n
    return nb, nc, min(1.0, 2 * tail)


@pytest.mark.parametrize("seed", range(4))
def test_mcnemar_matches_the_binomial_sum(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(60) < 0.7
    b = rng.random(60) < 0.5 + 0.1 * seed
    got = mcnemar_exact(a, b)
    nb, nc, p = ref_mcnemar(list(a), list(b))
    assert (got.b, got.c) == (nb, nc)
    assert got.p == pytest.approx(p, rel=1e-12)


def test_mcnemar_float_zero_one_inputs_are_booleans():
    a = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    b = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    got = mcnemar_exact(a, b)
    assert (got.b, got.c) == (3, 1)
    assert got.p == pytest.approx(ref_mcnemar(list(a > 0), list(b > 0))[2])


def test_mcnemar_edges_and_errors():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same).p == 1.0 and mcnemar_exact(same, same).b == 0
    with pytest.raises(ValueError, match=r"^mcnemar_exact: inputs must pair up, got shapes \(3,\) and \(2,\)$"):
        mcnemar_exact(same, same[:2])


# ---------------------------------------------------------------- paired_bootstrap

def ref_bootstrap(d: np.ndarray, R: int, seed: int, conf: float) -> tuple[float, float, float, float]:
    """Every resample's counts drawn in one piece (the function draws them in chunks, from the same
    generator, so it must give the very same means)."""
    values, counts = np.unique(d, return_counts=True)
    means = np.random.default_rng(seed).multinomial(d.size, counts / d.size, size=R) @ values / d.size
    a = (1 - conf) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    p = 1.0 if np.all(values == 0) else min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return float(np.mean(d)), float(lo), float(hi), float(p)


def test_paired_bootstrap_matches_one_piece_draws_across_chunks():
    # 2,500 distinct values -> chunks of 1,600 resamples: 4,000 resamples come in three chunks
    d = np.random.default_rng(3).standard_normal(2500) + 0.02
    got = paired_bootstrap(d, n_resamples=4000, seed=5, confidence=0.9)
    delta, lo, hi, p = ref_bootstrap(d, 4000, 5, 0.9)
    assert (got.delta, got.low, got.high, got.p, got.n) == (pytest.approx(delta, abs=1e-15), lo, hi, p, 2500)


def test_paired_bootstrap_defaults_are_10000_resamples_seed_0_95_percent():
    d = np.random.default_rng(4).choice([-1.0, 0.0, 1.0], size=300, p=[0.2, 0.5, 0.3])
    got = paired_bootstrap(d)
    assert (got.delta, got.low, got.high, got.p) == ref_bootstrap(d, 10_000, 0, 0.95)


def test_paired_bootstrap_ties_at_zero_count_on_both_sides():
    # many resampled means exactly 0: both tail shares exceed 1/2, so p is clamped to 1
    d = np.array([0.0] * 40 + [1.0, -1.0])
    got = paired_bootstrap(d, n_resamples=2000, seed=1)
    assert got.p == 1.0 == ref_bootstrap(d, 2000, 1, 0.95)[3]
    # a small positive shift: p counts the resamples at exactly 0 as "not above 0"
    d = np.array([0.0] * 10 + [1.0] * 3 + [-1.0])
    got = paired_bootstrap(d, n_resamples=3000, seed=2)
    assert got.p == pytest.approx(ref_bootstrap(d, 3000, 2, 0.95)[3], abs=0)
    assert 0 < got.p < 1


def test_paired_bootstrap_edges():
    e = paired_bootstrap(np.array([]))
    assert e.n == 0 and all(math.isnan(v) for v in (e.delta, e.low, e.high, e.p))
    one = paired_bootstrap(np.array([0.25]))
    assert (one.delta, one.low, one.high, one.p, one.n) == (0.25, 0.25, 0.25, 0.0, 1)
    zero = paired_bootstrap(np.zeros(5))
    assert (zero.delta, zero.low, zero.high, zero.p, zero.n) == (0.0, 0.0, 0.0, 1.0, 5)


def test_paired_bootstrap_float32_and_boolean_inputs():
    x = float32_sample(np.random.default_rng(6), 50) - np.float32(1e6)
    assert paired_bootstrap(x, n_resamples=100).delta == pytest.approx(
        math.fsum(float(v) for v in x) / 50, rel=0, abs=1e-12)
    flips = np.array([True, False, False, True, True])
    assert paired_bootstrap(flips, n_resamples=100).delta == 0.6


# ---------------------------------------------------------------- verdict

def test_verdict_needs_enough_seeds():
    assert MIN_SEEDS_FOR_VERDICT == 3
    assert verdict(2, 0.1, 0.2, 0.001) == "needs more seeds (2 paired; at least 3)"


@pytest.mark.parametrize("low,high,p,higher,expected", [
    (0.1, 0.2, 0.01, True, "helps"),
    (-0.2, -0.1, 0.01, True, "hurts"),
    (0.1, 0.2, 0.01, False, "hurts"),            # lower is better: a positive difference is worse
    (-0.2, -0.1, 0.01, False, "helps"),
    (0.2, 0.5, 0.01, False, "hurts"),            # the whole interval above 0, lower is better
    (0.0, 0.2, 0.01, True, "no detectable effect"),    # interval touches 0
    (-0.2, 0.0, 0.01, True, "no detectable effect"),
    (-0.2, 0.0, 0.01, False, "no detectable effect"),
    (-1.0, 0.5, 0.01, True, "no detectable effect"),   # straddles 0 even though p is small
    (0.1, 0.2, 0.05, True, "no detectable effect"),    # p == alpha is not below alpha
    (0.1, 0.2, 0.2, True, "no detectable effect"),
    (math.nan, 0.2, 0.01, True, "no detectable effect"),
    (0.1, math.nan, 0.01, True, "no detectable effect"),
    (0.1, 0.2, math.nan, True, "no detectable effect"),
])
def test_verdict_table(low, high, p, higher, expected):
    assert verdict(3, low, high, p, higher_is_better=higher) == expected


def test_verdict_alpha_is_a_parameter():
    assert verdict(5, 0.1, 0.2, 0.03, alpha=0.01) == "no detectable effect"
    assert verdict(5, 0.1, 0.2, 0.03, alpha=0.05) == "helps"
