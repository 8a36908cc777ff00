"""The figure docs/reproducibility.md gives for the deterministic option (float64 atomics rounded to
float32): an entry's N contributions summed in two orders round differently with probability at
most ~N·2^-29, typically ~sqrt(N)·2^-29. Checked on the same construction one size down, where
it is measurable: float32 sums rounded to float16 (29 -> 13 bits of headroom), fixed seed."""
import numpy as np
import pytest


@pytest.mark.parametrize("n_terms", [8, 32, 128])
def test_order_dependent_rounding_rate_matches_the_documented_figure(n_terms):
    rng = np.random.default_rng(1234)
    trials = 400_000 // n_terms * 4
    terms = (rng.random((trials, n_terms), dtype=np.float32)
             * rng.standard_normal((trials, n_terms)).astype(np.float32))
    shuffled = np.take_along_axis(terms, rng.permuted(
        np.tile(np.arange(n_terms), (trials, 1)), axis=1), axis=1)
    forward = np.zeros(trials, np.float32)
    other = np.zeros(trials, np.float32)
    for k in range(n_terms):
        forward += terms[:, k]
        other += shuffled[:, k]
    rate = np.mean(forward.astype(np.float16) != other.astype(np.float16))
    gap = 2.0 ** -13  # float32 -> float16, as 2^-29 is float64 -> float32
    assert rate <= n_terms * gap                              # the bound
    assert 0.5 * np.sqrt(n_terms) * gap <= rate <= 2 * np.sqrt(n_terms) * gap  # the typical rate
    assert rate > 0  # not "astronomically rare": it happens
