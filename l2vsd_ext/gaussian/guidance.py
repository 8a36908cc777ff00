"""The five guidance modes as small strategy objects sharing one interface.

Each step the loop calls `before_step(target)`, then `eps_estimate(...)` (the model ε subtracted from the
prior's ε_pre), then `after_step(target)` once q has moved. `target` is q's parameters as rendered this step
(detached), i.e. what the LoRA learns from in this iteration, exactly as a LoRA trains on this step's renders.
"""
import torch

from . import gaussians
from .lora import GaussianLora

# Named as l2vsd_ext.run names its modes: "vsd" is practical VSD (a LoRA r); the idealised VSD whose
# r overfits the current renders is "ideal-vsd".
METHODS = ("sds", "ideal-vsd", "vsd", "lvsd", "l2vsd")
RENAMED = {"real-vsd": "vsd"}  # the names before they matched l2vsd_ext.run's


class Guidance:
    lora = None

    def before_step(self, target):
        pass

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        raise NotImplementedError

    def after_step(self, target):
        if self.lora is not None:
            self.lora.end_iteration()


class SDS(Guidance):
    """ε_pre − ε: the injected noise stands in for the model."""

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        return eps


class IdealVSD(Guidance):
    """r is the empirical distribution of this step's rendered samples (a delta at x_0 when n_render = 1)."""

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        return gaussians.delta_mixture_eps(xt, x0, alpha_bar)


class _WithLora(Guidance):
    def __init__(self, lora, lora_steps):
        self.lora = lora
        self.lora_steps = lora_steps


class RealVSD(_WithLora):
    """Practical VSD order: θ steps with r_i's score, then r takes its γ steps."""

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        return self.lora.eps(xt, alpha_bar)

    def after_step(self, target):
        self.lora.fit(target, self.lora_steps)
        super().after_step(target)


class LVSD(_WithLora):
    """Lookahead VSD: r takes its γ steps on this step's q first, then θ steps with the updated r."""

    def before_step(self, target):
        self.lora.fit(target, self.lora_steps)

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        return self.lora.eps(xt, alpha_bar)


class L2VSD(_WithLora):
    """Linearised lookahead: ε_r(x_t) + J_φ ε_r(x_t)·(−η ∇_φ L_r), then the r update.

    The gradient ∇_φ L_r is computed once and reused as the first of r's γ steps, so the correction costs
    one JVP and no extra backward pass. With η = 0 this is RealVSD step for step.
    """

    def __init__(self, lora, lora_steps, eta):
        super().__init__(lora, lora_steps)
        self.eta = eta
        self._grad = None

    def before_step(self, target):
        self._grad = self.lora.gradient(target)

    def eps_estimate(self, xt, x0, eps, alpha_bar):
        def eps_of(mu, L):
            return gaussians.gaussian_eps(xt, mu, L, alpha_bar)

        tangents = tuple(-self.eta * g for g in self._grad)
        eps_r, correction = torch.func.jvp(eps_of, self.lora.params, tangents)
        return eps_r + correction

    def after_step(self, target):
        self.lora.fit(target, self.lora_steps, first_grad=self._grad)
        super().after_step(target)


def make_guidance(method, problem, config):
    """Build the mode. The LoRA starts as the prior p (config.lora_init = "p"), as a zero-initialised LoRA
    starts as the pretrained model, or already fitted to the initial q (lora_init = "q")."""
    if method == "sds":
        return SDS()
    if method == "ideal-vsd":
        return IdealVSD()
    starts = {"p": (problem.mu_p, problem.L_p), "q": (problem.mu_q0, problem.L_q0)}
    if config.lora_init not in starts:
        raise ValueError(f"lora_init must be 'p' or 'q', got {config.lora_init!r}")
    start = starts[config.lora_init]
    lora = GaussianLora(
        *start, config.lr * config.lora_lr_scale, config.warmup_steps, config.schedule_steps
    )
    if method == "vsd":
        return RealVSD(lora, config.lora_steps)
    if method == "lvsd":
        return LVSD(lora, config.lora_steps)
    if method == "l2vsd":
        return L2VSD(lora, config.lora_steps, config.eta)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
