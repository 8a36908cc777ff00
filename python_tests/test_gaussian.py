"""The 2D Gaussian example: closed-form scores, the L²-VSD correction, W2, the modes, the CLI."""
import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from l2vsd_ext.gaussian import Config, make_problem, run_method
from l2vsd_ext.gaussian import gaussians
from l2vsd_ext.gaussian.cli import main, parse_seeds
from l2vsd_ext.gaussian.guidance import METHODS, L2VSD
from l2vsd_ext.gaussian.lora import GaussianLora, fitting_loss
from l2vsd_ext.gaussian.schedule import alphas_cumprod, warmup_cosine

REPO = Path(__file__).resolve().parents[1]
DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: extra intra-op threads only slow things down (as in the CLI).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_gaussians(gen, batch):
    mu = torch.randn(batch, 2, generator=gen, dtype=DT) * 2
    L = torch.rand(batch, 2, 2, generator=gen, dtype=DT) + torch.eye(2, dtype=DT)
    alpha_bar = torch.rand(batch, generator=gen, dtype=DT) * 0.98 + 0.01
    return mu, L, alpha_bar


@pytest.mark.parametrize("seed", range(4))
def test_gaussian_eps_is_minus_scaled_autograd_score(seed):
    gen = torch.Generator().manual_seed(seed)
    mu, L, alpha_bar = _random_gaussians(gen, 3)
    xt = (torch.randn(3, 5, 2, generator=gen, dtype=DT) * 3).requires_grad_(True)
    a = alpha_bar[:, None, None]
    cov_t = a * (L @ L.transpose(-1, -2)) + (1 - a) * torch.eye(2, dtype=DT)
    dist = torch.distributions.MultivariateNormal(a[..., 0].sqrt() * mu, covariance_matrix=cov_t)
    log_p = dist.log_prob(xt.transpose(0, 1)).sum()  # points (n, S, 2) against the S distributions
    (score,) = torch.autograd.grad(log_p, xt)
    expected = -(1 - a).sqrt() * score
    got = gaussians.gaussian_eps(xt.detach(), mu, L, alpha_bar)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_delta_mixture_eps_is_minus_scaled_autograd_score():
    gen = torch.Generator().manual_seed(7)
    _, _, alpha_bar = _random_gaussians(gen, 2)
    centers = torch.randn(2, 4, 2, generator=gen, dtype=DT)
    xt = torch.randn(2, 3, 2, generator=gen, dtype=DT).requires_grad_(True)
    a = alpha_bar[:, None, None, None]
    sq = ((xt[:, :, None, :] - a.sqrt() * centers[:, None]) ** 2).sum(-1)
    log_p = torch.logsumexp(-sq / (2 * (1 - a[..., 0])), dim=-1).sum()  # equal weights, constants dropped
    (score,) = torch.autograd.grad(log_p, xt)
    expected = -(1 - alpha_bar[:, None, None]).sqrt() * score
    torch.testing.assert_close(gaussians.delta_mixture_eps(xt.detach(), centers, alpha_bar), expected)


def test_single_delta_returns_the_injected_noise():
    gen = torch.Generator().manual_seed(3)
    _, _, alpha_bar = _random_gaussians(gen, 4)
    x0 = torch.randn(4, 1, 2, generator=gen, dtype=DT)
    eps = torch.randn(4, 1, 2, generator=gen, dtype=DT)
    xt = gaussians.noise(x0, eps, alpha_bar)
    torch.testing.assert_close(gaussians.delta_mixture_eps(xt, x0, alpha_bar), eps)


def test_fitting_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(5)
    mu_r, L_r, _ = _random_gaussians(gen, 3)
    target = _random_gaussians(gen, 3)[:2]
    lora = GaussianLora(mu_r, L_r, lr=1e-2, warmup_steps=1, schedule_steps=10)
    mu, L = mu_r.clone().requires_grad_(True), L_r.clone().requires_grad_(True)
    expected = torch.autograd.grad(fitting_loss(mu, L, target), [mu, L])
    for got, want in zip(lora.gradient(target), expected):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want)


def test_l2vsd_correction_matches_finite_difference():
    """eps_estimate = ε_r + J ε_r·d with d = −η∇L_r; the JVP is checked against central differences."""
    gen = torch.Generator().manual_seed(11)
    mu_r, L_r, alpha_bar = _random_gaussians(gen, 3)
    target = _random_gaussians(gen, 3)[:2]
    xt = torch.randn(3, 4, 2, generator=gen, dtype=DT)
    eta = 0.7
    lora = GaussianLora(mu_r, L_r, lr=1e-2, warmup_steps=1, schedule_steps=10)
    mode = L2VSD(lora, lora_steps=1, eta=eta)
    mode.before_step(target)
    correction = mode.eps_estimate(xt, None, None, alpha_bar) - lora.eps(xt, alpha_bar)
    assert correction.abs().max() > 1e-3

    direction = [-eta * g for g in lora.gradient(target)]

    def eps_at(h):
        return gaussians.gaussian_eps(xt, mu_r + h * direction[0], L_r + h * direction[1], alpha_bar)

    errors = []
    for h in (1e-1, 1e-2, 1e-3):
        fd = (eps_at(h) - eps_at(-h)) / (2 * h)
        errors.append((fd - correction).abs().max().item())
    assert errors[0] > errors[1] > errors[2]  # shrinks with h (central differences: ~h²)
    assert errors[2] < 1e-5 * max(1.0, correction.abs().max().item())


def _histories_equal(a, b):
    for name in ("mu_q", "L_q", "mu_r", "L_r", "w2"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None
        else:
            assert torch.equal(x, y), name


@pytest.mark.parametrize("lora_init", ["p", "q"])
def test_l2vsd_at_eta_zero_is_real_vsd_step_for_step(lora_init):
    config = Config(steps=150, n_render=2, eta=0.0, lora_init=lora_init)
    problem = make_problem([0, 1, 2], config.steps, config.n_render)
    real = run_method("vsd", problem, config)
    l2 = run_method("l2vsd", problem, config)
    _histories_equal(real, l2)
    assert not torch.equal(real.mu_q[0], real.mu_q[-1])  # q actually moved
    # and a non-zero eta does change the trajectory
    moved = run_method("l2vsd", problem, Config(steps=150, n_render=2, eta=1.0, lora_init=lora_init))
    assert not torch.equal(moved.mu_q[-1], real.mu_q[-1])


def test_ideal_vsd_with_one_render_is_sds():
    config = Config(steps=100, n_render=1)
    problem = make_problem([0, 4], config.steps, config.n_render)
    sds, vsd = run_method("sds", problem, config), run_method("ideal-vsd", problem, config)
    torch.testing.assert_close(vsd.mu_q, sds.mu_q)
    torch.testing.assert_close(vsd.L_q, sds.L_q)


def test_seed_results_do_not_depend_on_the_batch():
    config = Config(steps=80, n_render=1)
    alone = run_method("lvsd", make_problem([3], config.steps, 1), config)
    batch = run_method("lvsd", make_problem([1, 3, 4], config.steps, 1), config)
    torch.testing.assert_close(alone.mu_q[:, 0], batch.mu_q[:, 1])
    torch.testing.assert_close(alone.w2[:, 0], batch.w2[:, 1])


def test_problem_follows_appendix_f():
    problem = make_problem(range(20), steps=5, n_render=3)
    assert ((problem.mu_p >= 0) & (problem.mu_p <= 1)).all()
    offset = problem.L_p - torch.eye(2, dtype=DT)
    assert ((offset >= 0) & (offset <= 1)).all()
    dist0 = (problem.mu_q0 - problem.mu_p).norm(dim=-1)
    assert (dist0 <= 10).all() and dist0.max() > 5
    assert problem.z.shape == (20, 5, 3, 2) and problem.eps.shape == (20, 5, 3, 2)
    assert ((problem.timesteps >= 20) & (problem.timesteps < 980)).all()


def test_schedules():
    abar = alphas_cumprod()
    assert abar.shape == (1000,) and (abar[1:] < abar[:-1]).all()
    assert math.isclose(abar[0].item(), 1 - 1e-4)
    f = warmup_cosine(100, 3000)
    assert math.isclose(f(0), 0.01) and math.isclose(f(99), 1.0) and math.isclose(f(100), 1.0)
    assert math.isclose(f(1550), 0.5, rel_tol=1e-9)  # halfway through the cosine
    assert 0 < f(1999) < 0.5  # over 1.5x steps: the lr has not reached 0 at the end of a run


def _random_spd(rng):
    a = rng.standard_normal((2, 2))
    return a @ a.T + 0.1 * np.eye(2)


def _w2_scipy(mu1, cov1, mu2, cov2):
    root2 = scipy.linalg.sqrtm(cov2)
    cross = scipy.linalg.sqrtm(root2 @ cov1 @ root2)
    return np.sqrt(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * np.real(cross)))


def test_w2_closed_form():
    rng = np.random.default_rng(0)
    t = lambda a: torch.as_tensor(a, dtype=DT)  # noqa: E731
    for _ in range(10):
        mu1, mu2 = rng.standard_normal(2), rng.standard_normal(2)
        cov1, cov2 = _random_spd(rng), _random_spd(rng)
        got = gaussians.w2(t(mu1), t(cov1), t(mu2), t(cov2)).item()
        assert got > 1e-3
        assert math.isclose(got, _w2_scipy(mu1, cov1, mu2, cov2), rel_tol=1e-8)
        assert math.isclose(got, gaussians.w2(t(mu2), t(cov2), t(mu1), t(cov1)).item(), rel_tol=1e-8)
        assert gaussians.w2(t(mu1), t(cov1), t(mu1), t(cov1)).item() < 1e-6  # W2(p, p) = 0
        # same covariance: W2 is the distance between the means
        assert math.isclose(gaussians.w2(t(mu1), t(cov1), t(mu2), t(cov1)).item(),
                            np.linalg.norm(mu1 - mu2), rel_tol=1e-6)
    # diagonal covariances: W2² = |Δμ|² + Σ (σ1 − σ2)²
    got = gaussians.w2_squared(t([1.0, 2.0]), t(np.diag([4.0, 9.0])), t([0.0, 0.0]), t(np.diag([1.0, 1.0])))
    assert math.isclose(got.item(), 5.0 + 1.0 + 4.0, rel_tol=1e-12)


def test_all_methods_five_seeds_at_defaults():
    """The full default run (5 methods × 5 seeds × 2000 steps). Timed and printed, not asserted on."""
    config = Config()
    problem = make_problem(range(5), config.steps, config.n_render)
    start = time.perf_counter()
    finals = {m: run_method(m, problem, config).w2[-1] for m in METHODS}
    print(f"\nfull default run: {time.perf_counter() - start:.1f}s")
    initial = run_method("sds", problem, Config(steps=1)).w2[0]
    for method, final in finals.items():
        assert torch.isfinite(final).all(), method
    for method in ("vsd", "lvsd", "l2vsd"):  # VSD-type modes fit p
        assert (finals[method] < 0.5 * initial).all(), method
    # SDS is mode seeking: q's covariance collapses, so it stays far from p
    assert (finals["sds"] > 3 * finals["vsd"]).all()


def test_cli_writes_outputs(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "l2vsd_ext.gaussian", "--steps", "40", "--seeds", "0-2", "--n-render", "2",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for method in METHODS:
        assert f"| {method} |" in result.stdout
        png = out / f"samples_{method}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (out / "w2.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "final_w2.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(METHODS) * 3
    assert {r["method"] for r in rows} == set(METHODS) and {r["seed"] for r in rows} == {"0", "1", "2"}
    data = json.loads((out / "final_w2.json").read_text())
    assert data["config"]["steps"] == 40 and data["config"]["n_render"] == 2
    csv_values = sorted(float(r["final_w2"]) for r in rows)
    assert csv_values == pytest.approx(sorted(r["final_w2"] for r in data["final_w2"]))
    assert all(v > 0 for v in csv_values)


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "nope"],
        ["--steps", "-5"],
        ["--steps", "0"],
        ["--seeds", "abc"],
        ["--seeds", "4-1"],
        ["--seeds", "1,,2"],
        ["--n-render", "0"],
        ["--eta", "nan"],
        ["--method", "real-vsd"],  # renamed: vsd now means practical VSD, as in l2vsd_ext.run
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    assert not any(tmp_path.iterdir())  # nothing was run


def test_bad_arguments_exit_code_from_the_shell():
    result = subprocess.run([sys.executable, "-m", "l2vsd_ext.gaussian", "--method", "sds", "bogus"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error:" in result.stderr


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7") == [7]
    assert parse_seeds("0-1,5") == [0, 1, 5]


def test_method_names_match_the_run_cli_and_unwritable_out_is_one_line(capsys):
    from l2vsd_ext.config import MODES

    # vsd means practical VSD in both; HL-VSD (Appendix C.4) is a run mode without a 2D form here yet
    assert set(MODES) - {"hlvsd"} < set(METHODS) and "ideal-vsd" in METHODS
    assert main(["--method", "sds", "--steps", "1", "--seeds", "0", "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
