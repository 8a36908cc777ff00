"""The one-step lookahead of the score model that L²-VSD linearises and HL-VSD corrects.

Per iteration: g = ∇φ L_lora(φ_i) on an independently noised render; the LoRA optimiser takes its
step at once (φ_{i+1}; Adam's step depends only on g and its state, so taking it before the θ step
instead of after gives the same φ_{i+1} bit for bit); the parameters are put back to φ_i for the
forward-mode JVP, and to φ_{i+1} when the iteration is done.

The tangent v covers every trainable part of the score model (LoRA factors and the camera MLP;
`lookahead_camera=False`: LoRA factors only; last-layer: the last LoRA layer only) and is
  sgd:        v = −η g                (the paper's linearisation of a plain gradient step),
  optimizer:  v = φ_{i+1} − φ_i       (the LoRA optimiser's actual update; η unused),
  random:     per parameter tensor, a Gaussian direction with the norm of the optimiser's update
              (a control: a correction of the same size and parameter split, but no lookahead).
With `eta_relative` K the JVP is rescaled each step so that κ = |ε_first|/|ε_φ| = K."""
from __future__ import annotations

import contextlib

import torch


class Lookahead:
    def __init__(self, score_model, options, direction_rng: torch.Generator | None = None):
        self.score = score_model
        self.options = options
        self.direction_rng = direction_rng  # the random control's own stream
        self.previous = None  # φ_i
        self.next = None  # φ_{i+1}
        self.grads = None  # g at φ_i

    def _named(self) -> dict:
        return {**self.score.lora_params, **self.score.camera_params}

    @torch.no_grad()
    def _load(self, values: dict) -> None:
        for name, p in self._named().items():
            p.copy_(values[name])

    def prepare(self, latents, c2w, text, generator) -> torch.Tensor:
        """g at φ_i, the optimiser's step to φ_{i+1}, and φ_i put back. Returns the LoRA loss."""
        named = self._named()
        loss = self.score.compute_gradient(latents, c2w, text, generator)
        self.previous = {n: p.detach().clone() for n, p in named.items()}
        self.grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                      for n, p in named.items()}
        self.score.apply_gradient()
        self.next = {n: p.detach().clone() for n, p in named.items()}
        self._load(self.previous)
        return loss

    def finish(self) -> None:
        """Leaves the score model at φ_{i+1}."""
        self._load(self.next)
        self.previous = self.next = self.grads = None

    @contextlib.contextmanager
    def parameters_at(self, values: dict):
        """The score model at `values` for the duration, then back at φ_i."""
        self._load(values)
        try:
            yield
        finally:
            self._load(self.previous)

    def tangent(self) -> dict:
        """v over the parameters the lookahead moves (before any η-relative rescaling)."""
        if self.options.lookahead_direction == "optimizer":
            v = {n: self.next[n] - self.previous[n] for n in self.previous}
        elif self.options.lookahead_direction == "random":
            v = {n: self._random_like(self.next[n] - self.previous[n]) for n in self.previous}
        else:  # with eta_relative the scale comes from κ, so the direction is −g itself
            eta = 1.0 if self.options.eta_relative is not None else self.options.eta
            v = {n: -eta * g for n, g in self.grads.items()}
        if not self.options.lookahead_camera or self.options.last_layer:
            v = {n: t for n, t in v.items() if n in self.score.lora_params}
        return v

    def _random_like(self, update: torch.Tensor) -> torch.Tensor:
        """A Gaussian direction with `update`'s norm, drawn for every tensor (also those the tangent
        then drops) so the stream's position does not depend on the tangent's options."""
        r = torch.randn(update.shape, generator=self.direction_rng, dtype=torch.float64)
        r = r.to(device=update.device, dtype=update.dtype)
        return r * (update.norm() / r.norm().clamp_min(1e-30))

    def split(self, v: dict) -> tuple[dict, dict]:
        """(LoRA part, camera part) of a tangent, the LoRA part complete (zeros where v has none)."""
        lora = {n: v.get(n, torch.zeros_like(p)) for n, p in self.score.lora_params.items()}
        camera = {n: t for n, t in v.items() if n in self.score.camera_params}
        return lora, camera

    def moved(self, v: dict, scale: float | torch.Tensor = 1.0) -> dict:
        """φ_i + scale·v (parameters v does not cover stay at φ_i)."""
        return {n: (p + scale * v[n] if n in v else p) for n, p in self.previous.items()}
