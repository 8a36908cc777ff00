"""Comparing variable-length results: the packed samples of two ray-marching runs."""
from __future__ import annotations

import torch


def compare_packed_samples(got: dict, want: dict) -> tuple[float, str]:
    """Pairs the samples of two marching runs by (ray, lattice step) and returns the larger of the
    fraction of samples without a partner and the max relative error of the paired t_starts and
    t_ends. A midpoint within rounding of a cell boundary may be kept by one precision and dropped
    by another, so a float32 run may miss a rare sample that float64 keeps: the fraction counts as
    an error of that size (float32's tolerance admits 0.02% of the samples, float64's none). A run
    with no samples at all proves nothing and fails."""
    keys = []
    for side in (got, want):
        ri = side["ray_indices"].detach().long().cpu()
        step = side["lattice_step"].detach().long().cpu()
        keys.append(ri * (1 << 32) + step)
    k_got, k_want = keys
    if k_want.numel() == 0 or k_got.numel() == 0:
        return float("inf"), f"no samples ({k_got.numel()} vs {k_want.numel()})"
    in_want = torch.isin(k_got, k_want)
    in_got = torch.isin(k_want, k_got)
    unmatched = int((~in_want).sum() + (~in_got).sum())
    worst, where = unmatched / (k_got.numel() + k_want.numel()), ""
    if unmatched:
        where = f"{unmatched} unpaired samples of {k_got.numel()} vs {k_want.numel()}"
    order_got = torch.argsort(k_got[in_want])
    order_want = torch.argsort(k_want[in_got])
    for key in ("t_starts", "t_ends"):
        g = got[key].detach().double().cpu()[in_want][order_got]
        w = want[key].detach().double().cpu()[in_got][order_want]
        err = ((g - w).abs().max() / (w.abs().max() + 1e-12)).item()
        if not err <= worst:
            worst, where = err, key
    return worst, where
