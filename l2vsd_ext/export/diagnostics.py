"""The paper's Fig. 4c for one run: |ε_φ|, the VSD signal |ε_pre − ε_φ|, |ε_first| and |ε_high|
against the step, read from RUN/metrics.jsonl and written as RUN/diagnostics.png."""
from __future__ import annotations

import io

# metrics key -> legend label, in drawing order
CURVES = {
    "eps_phi_i_norm": "|ε_φ|",
    "vsd_signal_norm": "|ε_pre − ε_φ|",
    "eps_first_norm": "|ε_first|",
    "eps_high_step_norm": "|ε_high| (after the optimiser step, paper B.2)",
    "eps_high_taylor_norm": "|ε_high| (Taylor remainder along the tangent)",
}


def plot_lookahead_norms(run_dir: str, smooth: int = 20) -> str | None:
    """RUN/diagnostics.png, or None when the run logged no lookahead terms (sds, vsd, lvsd)."""
    from ..checkpoint import atomic_write_bytes
    from ..run_folder import RunFolder, read_metrics

    folder = RunFolder(run_dir)
    records = [r for r in read_metrics(folder.metrics, warn=lambda _: None) if "eps_first_norm" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_kappa) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in records]
    for key, label in CURVES.items():
        values = [r.get(key) for r in records]
        if any(v is None for v in values):
            continue
        ax.plot(steps, _running_mean(values, smooth), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"norm (running mean of {smooth})")
    ax.legend(fontsize=7)
    ax_kappa.plot(steps, _running_mean([r["kappa"] for r in records], smooth), label="κ = |ε_first|/|ε_φ|")
    ax_kappa.plot(steps, _running_mean([r["first_over_signal"] for r in records], smooth),
                  label="|ε_first|/|ε_pre − ε_φ|")
    ax_kappa.set_yscale("log")
    ax_kappa.set_xlabel("step")
    ax_kappa.legend(fontsize=7)
    fig.suptitle("lookahead terms (the paper's Fig. 4c)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    out = folder.claim("diagnostics.png")  # in the run's manifest before it is written
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _running_mean(values, n):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out
