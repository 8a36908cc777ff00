"""Paired differences of a case against a baseline case, with 95 % intervals.

A pair is one object and one seed run under both cases (same prompt, same seed, so the same
initial field and camera stream): d = case - baseline. Two summaries of the pairs:

- the mean difference with Student's t-interval over the pairs, mean ± t(0.975, n-1)·sd/√n;
- the exact two-sided sign test: how many pairs went up and down (ties dropped) and the binomial
  p-value under "up and down equally likely". It assumes nothing about the differences' spread,
  so one diverged run cannot swing it, where it can drag the mean and widen the t-interval.

Both treat the pairs as independent. Objects differ in how much a case helps, so the t-interval
over all pairs is an interval for the mean over these objects, not for a new object.

No scipy at run time: the t quantile comes from the exact closed-form CDF for integer degrees of
freedom (Abramowitz & Stegun 26.7.3-4), inverted by bisection; the tests compare it with scipy."""
from __future__ import annotations

import math


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df >= 1."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t_cdf: 'df' must be an integer >= 1, got {df}")
    theta = math.atan2(t, math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    # P(|T| <= |t|) as a finite series in cos^2(theta).
    if df % 2:
        term, total = math.cos(theta), 0.0
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):  # odd df: cos(1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...)
                term *= c2 * (k - 1) / k
                total += term
        central = 2 / math.pi * (theta + s * total)
    else:
        term, total = 1.0, 1.0
        for k in range(2, df - 1, 2):  # even df: sin(1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
            term *= c2 * (k - 1) / k
            total += term
        central = s * total
    return 0.5 + 0.5 * central  # central carries t's sign through theta and sin(theta)


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p, 0 < p < 1."""
    if not 0 < p < 1:
        raise ValueError(f"t_quantile: 'p' must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def sign_test_p(n_up: int, n_down: int) -> float:
    """Exact two-sided sign-test p-value (binomial, p = 1/2) for n_up against n_down."""
    n = n_up + n_down
    if n == 0:
        return 1.0
    k = min(n_up, n_down)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_summary(differences: list[float], confidence: float = 0.95) -> dict:
    """n, mean, sd, the t-interval [lo, hi], and the sign test (up, down, ties, p) of the
    differences; NaN entries (a score a run could not get) are dropped."""
    d = [x for x in differences if x is not None and not math.isnan(x)]
    n = len(d)
    out = {"n": n, "mean": math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan,
           "up": sum(x > 0 for x in d), "down": sum(x < 0 for x in d), "ties": sum(x == 0 for x in d)}
    out["sign_p"] = sign_test_p(out["up"], out["down"])
    if n == 0:
        return out
    out["mean"] = sum(d) / n
    if n > 1:
        out["sd"] = math.sqrt(sum((x - out["mean"]) ** 2 for x in d) / (n - 1))
        half = t_quantile(0.5 + confidence / 2, n - 1) * out["sd"] / math.sqrt(n)
        out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def paired_differences(results: list[dict], metric: str, case: str, baseline: str) -> dict:
    """paired_summary of metric(case) - metric(baseline) over the (object, seed) pairs that both
    cases have; `results` are score dicts with 'object', 'seed', 'case' and the metric."""
    def by_pair(name):
        return {(r["object"], r["seed"]): r.get(metric) for r in results if r["case"] == name}

    ours, base = by_pair(case), by_pair(baseline)
    diffs = []
    for pair in sorted(set(ours) & set(base)):
        a, b = ours[pair], base[pair]
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            diffs.append(float(a) - float(b))
    return paired_summary(diffs)
