"""The score model ε_φ(x_t, t, c, y): LoRA adapters (peft) on the prior's own UNet plus a camera
embedding, so no second UNet is held in memory. Disabling both gives back ε_pre."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_NAME = "score"


class CameraEmbedding(nn.Module):
    """Flattened camera-to-world matrix (16) -> the UNet's time-embedding width, added to the time
    embedding like a class embedding (threestudio: diffusers' TimestepEmbedding(16, width)).
    init "default": PyTorch's layer init, as threestudio; "zero": the output layer starts at zero, so
    ε_φ starts as ε_pre (with the LoRA's B at zero)."""

    def __init__(self, embed_dim: int, hidden_dim: int | None = None, init: str = "default"):
        super().__init__()
        if init not in ("default", "zero"):
            raise ValueError(f"CameraEmbedding: argument 'init' must be 'default' or 'zero', got {init!r}")
        hidden_dim = hidden_dim or embed_dim
        self.linear_1 = nn.Linear(16, hidden_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_dim, embed_dim)
        if init == "zero":
            nn.init.zeros_(self.linear_2.weight)
            nn.init.zeros_(self.linear_2.bias)

    def forward(self, c2w_flat: torch.Tensor) -> torch.Tensor:
        x = c2w_flat.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(x)))


def flatten_cameras(c2w: torch.Tensor) -> torch.Tensor:
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"argument 'c2w' must have shape (B, 4, 4), got {tuple(c2w.shape)}")
    return c2w.reshape(c2w.shape[0], 16)


# LoRA A initialisations: diffusers' LoRA layers (which threestudio's VSD uses) draw A from
# N(0, 1/r²), peft's "gaussian"; peft's default (True) is nn.Linear's kaiming-uniform.
LORA_INITS = {"gaussian": "gaussian", "kaiming": True}


class LoraScoreModel:
    """LoRA (rank `rank` on the attention projections) + camera embedding on `prior.unet`, with
    its own AdamW. The LoRA denoising loss uses the render noised independently (t', ε') and drops
    the camera (zeros) with probability `condition_dropout`. The defaults are threestudio's
    ProlificDreamer: AdamW lr 1e-4, betas (0.9, 0.99), eps 1e-15, weight decay 0.01, A ~ N(0, 1/r²),
    the camera MLP with PyTorch's default init."""

    def __init__(self, prior, rank: int = 4, lr: float = 1e-4, condition_dropout: float = 0.1,
                 weight_decay: float = 0.01, betas: tuple = (0.9, 0.99), eps: float = 1e-15,
                 lora_init: str = "gaussian", camera_init: str = "default"):
        from peft import LoraConfig

        if rank < 1:
            raise ValueError(f"LoraScoreModel: argument 'rank' must be >= 1, got {rank}")
        if lora_init not in LORA_INITS:
            raise ValueError(f"LoraScoreModel: argument 'lora_init' must be one of {sorted(LORA_INITS)}, "
                             f"got {lora_init!r}")
        if not 0 <= condition_dropout < 1:
            raise ValueError("LoraScoreModel: argument 'condition_dropout' must be in [0, 1)")
        self.prior, self.unet = prior, prior.unet
        if self.unet.class_embedding is not None:
            raise ValueError("LoraScoreModel: the prior's UNet already has a class embedding")
        self.condition_dropout = condition_dropout
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=LORA_INITS[lora_init],
                                         target_modules=list(LORA_TARGETS)), adapter_name=ADAPTER_NAME)
        embed_dim = self.unet.time_embedding.linear_1.out_features
        self.unet.class_embedding = CameraEmbedding(embed_dim, init=camera_init).to(prior.device)
        # Trainable parameters in float32 even when the frozen base runs in fp16/bf16.
        train_dtype = torch.float32 if prior.dtype in (torch.float16, torch.bfloat16) else prior.dtype
        self.lora_params = {n: p for n, p in self.unet.named_parameters() if "lora_" in n}
        self.camera_params = {f"class_embedding.{n}": p
                              for n, p in self.unet.class_embedding.named_parameters()}
        for p in list(self.lora_params.values()) + list(self.camera_params.values()):
            p.data = p.data.to(train_dtype)
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=lr, betas=tuple(betas), eps=eps,
                                           weight_decay=weight_decay)
        prior._base_model_hooks.append(self._as_base_model)

    def parameters(self):
        return list(self.lora_params.values()) + list(self.camera_params.values())

    def state_dict(self) -> dict:
        params = {n: p.detach().clone() for n, p in {**self.lora_params, **self.camera_params}.items()}
        return {"params": params, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        named = {**self.lora_params, **self.camera_params}
        missing = set(named) - set(state["params"])
        if missing:
            raise ValueError(f"LoraScoreModel.load_state_dict: missing {sorted(missing)[:3]}")
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])

    @contextlib.contextmanager
    def _as_base_model(self):
        saved = self.unet.class_embedding
        self.unet.disable_adapters()
        self.unet.class_embedding = None
        try:
            yield
        finally:
            self.unet.class_embedding = saved
            self.unet.enable_adapters()

    def predict_noise(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      c2w: torch.Tensor) -> torch.Tensor:
        """ε_φ(x_t, t, c, y): guidance scale 1 (conditional only), differentiable w.r.t. φ."""
        return self.prior.to_epsilon(self.raw_prediction(noisy, t, text, c2w), noisy, t)

    def raw_prediction(self, noisy, t, text, c2w) -> torch.Tensor:
        """The UNet's own output (ε, or v for a v-prediction prior): what the LoRA loss fits."""
        return self.prior.unet_forward(noisy, t, text, class_labels=flatten_cameras(c2w)).to(
            torch.promote_types(self.prior.dtype, torch.float32))

    def training_target(self, latents, noise, t):
        if self.prior.scheduler.config.prediction_type == "v_prediction":
            return self.prior.scheduler.get_velocity(latents, noise, t)
        return noise

    def loss(self, latents: torch.Tensor, c2w: torch.Tensor, text: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """LoRA denoising loss on detached latents noised with (t', ε') drawn from `generator`."""
        latents = latents.detach().float()
        batch = latents.shape[0]
        t = torch.randint(0, self.prior.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        keep = (torch.rand(batch, generator=generator) >= self.condition_dropout).float()
        t, noise, keep = (v.to(latents.device) for v in (t, noise, keep))
        noisy = self.prior.add_noise(latents, noise, t)
        c2w = c2w * keep.view(-1, 1, 1)
        # threestudio's VSD: the LoRA fits the prior's own target (v for a v-prediction prior).
        pred = self.raw_prediction(noisy, t, text, c2w)
        return torch.nn.functional.mse_loss(pred, self.training_target(latents, noise, t).float())

    def compute_gradient(self, latents, c2w, text, generator) -> torch.Tensor:
        """Fills .grad of the LoRA and camera parameters with ∇φ L_lora(φ); returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(latents, c2w, text, generator)
        loss.backward()
        return loss.detach()  # a 0-d tensor: reading it here would sync with the GPU

    def apply_gradient(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, latents, c2w, text, generator) -> torch.Tensor:
        loss = self.compute_gradient(latents, c2w, text, generator)
        self.apply_gradient()
        return loss
