"""Figures: Fig. 2-style sample snapshots per method and W2(q, p) over steps for all methods."""
import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import gaussians  # noqa: E402

N_POINTS = 300
COLORS = {"sds": "tab:orange", "ideal-vsd": "tab:brown", "vsd": "tab:blue", "lvsd": "tab:green",
          "l2vsd": "tab:red"}


SNAPSHOT_FRACTIONS = (0.0, 0.025, 0.1, 0.25, 1.0)  # 0, 50, 200, 500, 2000 at the default 2000 steps
# Identical curves are expected (ideal-vsd == sds at n_render=1; vsd ≈ lvsd): line styles differ, and
# each curve carries its own markers at staggered steps, so a curve drawn over another stays visible.
STYLES = {"sds": "-", "ideal-vsd": "--", "vsd": "-", "lvsd": "--", "l2vsd": "-."}
MARKERS = {"sds": "o", "ideal-vsd": "s", "vsd": "^", "lvsd": "v", "l2vsd": "D"}
N_MARKS = 8  # markers per curve


def snapshot_steps(steps):
    """A few steps from 0 to `steps`, denser early where q moves most."""
    return sorted({int(round(f * steps)) for f in SNAPSHOT_FRACTIONS})


def _points(mu, L, z):
    return gaussians.sample(mu[None], L[None], z[None])[0].numpy()


def plot_samples(history, problem, path, seed_index=0):
    """Samples of p (grey), q (red) and r (green, where the mode has a Gaussian LoRA) at a few steps."""
    # Independent draws for p, q and r, so coinciding distributions still look like separate sample clouds.
    z_p, z_q, z_r = torch.randn(3, N_POINTS, 2, generator=torch.Generator().manual_seed(1234),
                                dtype=problem.mu_p.dtype)
    s = seed_index
    p_pts = _points(problem.mu_p[s], problem.L_p[s], z_p)
    marks = snapshot_steps(history.mu_q.shape[0] - 1)
    fig, axes = plt.subplots(1, len(marks), figsize=(3.2 * len(marks), 3.7), sharex=True, sharey=True)
    for ax, step in zip(axes, marks):
        ax.scatter(*p_pts.T, s=4, c="0.6", label="p (target)")
        q_pts = _points(history.mu_q[step, s], history.L_q[step, s], z_q)
        ax.scatter(*q_pts.T, s=4, c="tab:red", alpha=0.6, label="q (learned)")
        if history.mu_r is not None:
            r_pts = _points(history.mu_r[step, s], history.L_r[step, s], z_r)
            ax.scatter(*r_pts.T, s=8, facecolors="none", edgecolors="tab:green", linewidths=0.6, alpha=0.7,
                       label="r (LoRA)")
        ax.set_title(f"step {step}   W2={float(history.w2[step, s]):.3f}", fontsize=9)
        ax.set_box_aspect(1)
    axes[0].legend(loc="best", fontsize=7, markerscale=3)
    fig.suptitle(f"{history.method}, seed {problem.seeds[s]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_w2(histories, path, n_render):
    """Mean over seeds (line) and min-max over seeds (band) of W2(q, p), log scale."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, h in enumerate(histories):
        w2 = h.w2.numpy()
        steps = range(w2.shape[0])
        color = COLORS.get(h.method)
        every = max(1, w2.shape[0] // N_MARKS)
        offset = (i * every) // max(1, len(histories))
        ax.plot(steps, w2.mean(1), color=color, ls=STYLES.get(h.method, "-"), label=h.method, lw=1.4,
                marker=MARKERS.get(h.method), markevery=(offset, every), markersize=5, markerfacecolor="none")
        ax.fill_between(steps, w2.min(1), w2.max(1), color=color, alpha=0.08, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("W2(q, p)")
    ax.set_title(f"2D Gaussian, n_render={n_render}: mean and min-max over {histories[0].w2.shape[1]} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
