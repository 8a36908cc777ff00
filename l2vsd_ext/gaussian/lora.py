"""The toy "LoRA": a Gaussian r = N(μ_r, L_r L_rᵀ) that tracks q by fitting q's parameters.

In the image setting the LoRA is trained by denoising score matching on rendered samples; here it is
trained by AdamW on the parameter MSE to q, which gives the same lag behaviour without sampling noise.
"""
import torch

from . import gaussians
from .schedule import warmup_cosine


def fitting_loss(mu_r, L_r, target):
    """0.5·||φ_r − θ_q||² summed over all parameters (and over the independent seeds of the batch).

    The 0.5·sum scaling makes the gradient simply φ_r − θ_q, so a lookahead step of size η = 1 lands
    exactly on the fitted r (see L2VSD in guidance.py). AdamW itself is invariant to this scale.
    """
    mu_q, L_q = target
    return 0.5 * ((mu_r - mu_q) ** 2).sum() + 0.5 * ((L_r - L_q) ** 2).sum()


class GaussianLora:
    def __init__(self, mu, L, lr, warmup_steps, schedule_steps):
        self.mu = mu.detach().clone().requires_grad_(True)
        self.L = L.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.AdamW([self.mu, self.L], lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup_steps, schedule_steps)
        )

    @property
    def params(self):
        return self.mu.detach(), self.L.detach()

    def gradient(self, target):
        """∇_φ of the fitting loss at the current r: φ_r − θ_q in closed form (autograd would cost more
        than the whole AdamW step; tests check the two agree)."""
        mu_q, L_q = target
        return self.mu.detach() - mu_q, self.L.detach() - L_q

    def fit(self, target, steps, first_grad=None):
        """`steps` AdamW steps toward `target`; `first_grad` reuses a gradient already computed at this r."""
        for k in range(steps):
            grads = first_grad if (k == 0 and first_grad is not None) else self.gradient(target)
            self.mu.grad, self.L.grad = grads
            self.optimizer.step()

    def end_iteration(self):
        """One scheduler tick per outer iteration: the γ inner steps of an iteration share a learning rate."""
        self.scheduler.step()

    def eps(self, xt, alpha_bar):
        mu, L = self.params
        return gaussians.gaussian_eps(xt, mu, L, alpha_bar)
