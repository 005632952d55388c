"""Statistics for "does this trick help?": pure numpy/scipy, no torch, no files.

Two kinds of noise decide whether a difference between a variant and the baseline is real:

- **Training noise** (seed): the same recipe trained with another seed scores differently. Runs of
  both recipes with the same seed share the data order, the train subset and the initial head, so
  the per-seed differences d_k = variant_k - baseline_k are paired. `t_interval` gives the 95%
  t-interval of their mean and `paired_t_test` the matching p-value (scipy.stats.ttest_rel). This is
  the question users ask ("would I see the gain again with new seeds?"), and it decides the verdict.
- **Test-set noise** (examples): with a few hundred test examples, an accuracy difference of a
  point can be luck of the draw. `paired_bootstrap` resamples the test examples (a CI and p-value of
  the accuracy difference) and `mcnemar_exact` tests the discordant pairs. They say nothing about
  seeds, so they never decide a verdict on their own.

`verdict` turns the seed-level numbers into plain words and never claims an effect the interval
does not support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

MIN_SEEDS_FOR_VERDICT = 3


def mean_std(x: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan with fewer than 2 values)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def t_interval(diffs: np.ndarray | list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of paired differences, df = n - 1.

    mean ± t_{(1+confidence)/2, n-1} · sd / sqrt(n). With n < 2 the bounds are nan (no spread to
    estimate); with all differences equal the interval collapses to the mean.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(d.mean())
    if n < 2:
        return m, math.nan, math.nan
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half


def paired_t_test(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Two-sided p-value of the paired t-test of b against a (scipy.stats.ttest_rel); nan when n < 2
    or when every difference is exactly 0 (nothing to test)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape:
        raise ValueError(f"paired_t_test: a and b must pair up, got shapes {a_.shape} and {b_.shape}")
    d = b_ - a_
    if a_.size < 2 or np.all(d == 0):
        return math.nan
    if np.all(d == d[0]):  # no spread at all: t is infinite (scipy warns and returns 0 too)
        return 0.0
    return float(_st.ttest_rel(b_, a_).pvalue)


@dataclass
class McNemar:
    b: int        # examples the baseline got right and the variant wrong
    c: int        # examples the baseline got wrong and the variant right
    p: float      # exact two-sided p-value (1.0 when there are no discordant pairs)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test (McNemar 1947; the binomial form): under "no difference" each of the
    n = b + c discordant examples favours either system with probability 1/2, so
    p = min(1, 2 · P[Binomial(n, 1/2) <= min(b, c)]). Inputs: (N,) booleans, paired by position."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar_exact: inputs must pair up, got shapes {a.shape} and {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2.0 * _st.binom.cdf(min(b, c), n, 0.5)))
    return McNemar(b, c, p)


@dataclass
class Bootstrap:
    delta: float  # observed mean difference
    low: float    # percentile interval
    high: float
    p: float      # two-sided: 2 · the share of resampled means on the far side of 0 (at most 1)
    n: int        # examples resampled


def paired_bootstrap(diffs: np.ndarray, n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> Bootstrap:
    """Paired bootstrap (Efron & Tibshirani 1993; Koehn 2004 for NLP) of the mean of per-example
    differences, e.g. d_i = correct_variant_i - correct_baseline_i (an accuracy difference).

    Resampling N examples with replacement only changes how often each distinct value of d is drawn,
    so a resample is drawn as multinomial counts over the distinct values: the same distribution as
    resampling indices, vectorised in O(n_resamples x distinct values) memory instead of
    O(n_resamples x N). Fixed seed: the same inputs give the same interval. Inputs: (N,) numbers.
    """
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    N = d.size
    if N == 0:
        return Bootstrap(math.nan, math.nan, math.nan, math.nan, 0)
    values, counts = np.unique(d, return_counts=True)                       # (U,), (U,)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // values.size)
    means = np.concatenate([rng.multinomial(N, counts / N, size=min(chunk, n_resamples - s)) @ values / N
                            for s in range(0, n_resamples, chunk)])        # (R,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    delta = float(d.mean())
    if np.all(values == 0):
        p = 1.0
    else:
        p = float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
    return Bootstrap(delta, float(low), float(high), p, N)


def verdict(n_seeds: int, low: float, high: float, p: float, higher_is_better: bool = True,
            alpha: float = 0.05) -> str:
    """Plain words from the seed-level interval and t-test.

    "helps" / "hurts" only when the 95% interval of the per-seed differences excludes 0 AND the
    paired t-test gives p < alpha; otherwise "no detectable effect" (which is not "no effect": the
    interval says how large an effect could still hide). Below MIN_SEEDS_FOR_VERDICT seeds the
    interval is too wide to trust (2 seeds: t_{0.975,1} = 12.7), so the answer is "needs more seeds".
    """
    if n_seeds < MIN_SEEDS_FOR_VERDICT:
        return f"needs more seeds ({n_seeds} paired; at least {MIN_SEEDS_FOR_VERDICT})"
    if any(math.isnan(x) for x in (low, high, p)) or not (low > 0 or high < 0) or not p < alpha:
        return "no detectable effect"
    gain = low > 0 if higher_is_better else high < 0
    return "helps" if gain else "hurts"
