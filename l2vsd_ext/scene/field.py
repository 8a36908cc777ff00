"""NeRF field for score distillation: hash grid -> small MLP -> density (with Magic3D's "blob"
bias, so optimisation starts from a soft ball instead of empty space) and albedo; normals from
the density gradient."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.hashgrid import HashGridEncoding, hashgrid_encode

DENSITY_ACTIVATIONS = ("exp", "softplus")
NORMAL_TYPES = ("analytic", "finite_difference")


class _TruncExp(torch.autograd.Function):
    """exp whose gradient is computed at min(x, 15): a spike in the raw density cannot blow up the
    update (threestudio's trunc_exp)."""

    @staticmethod
    def forward(x):
        return torch.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


class NeRFField(nn.Module):
    """Density + albedo field over an axis-aligned box.

    Points are normalised by `aabb` into [0,1]^3 for the hash grid (out_of_range='clamp'). The MLP
    has `n_hidden_layers` hidden layers of `hidden_dim` (threestudio's default: one of 64) and
    four outputs: raw density, then three albedo logits. density = act(raw + blob_density *
    (1 - |x| / blob_radius)). Normals: -grad(density)/|grad|, 'analytic' (autograd through the hash
    grid's input gradient; detached from the parameters, because the compiled backward is first
    order) or 'finite_difference' (central differences, differentiable, six extra evaluations)."""

    def __init__(self, aabb: Union[torch.Tensor, Sequence[float]] = (-1, -1, -1, 1, 1, 1),
                 n_levels: int = 16, n_features_per_level: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, per_level_scale: float = 1.447269237440378,
                 hidden_dim: int = 64, n_hidden_layers: int = 1, density_activation: str = "exp",
                 blob_density: float = 10.0, blob_radius: float = 0.5,
                 normal_type: str = "analytic", finite_difference_eps: float = 1e-2,
                 device=None):
        super().__init__()
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"NeRFField: 'density_activation' must be one of {DENSITY_ACTIVATIONS}, "
                             f"got {density_activation!r}")
        if normal_type not in NORMAL_TYPES:
            raise ValueError(f"NeRFField: 'normal_type' must be one of {NORMAL_TYPES}, got "
                             f"{normal_type!r}")
        if blob_radius <= 0:
            raise ValueError(f"NeRFField: 'blob_radius' must be > 0, got {blob_radius}")
        box = torch.as_tensor(aabb, dtype=torch.float32).reshape(6)
        self.register_buffer("aabb", box.to(device))
        self.encoding = HashGridEncoding(3, n_levels, n_features_per_level, log2_hashmap_size,
                                         base_resolution, per_level_scale, out_of_range="clamp",
                                         device=device)
        layers, width = [], self.encoding.n_output_dims
        for _ in range(n_hidden_layers):
            layers += [nn.Linear(width, hidden_dim, device=device), nn.ReLU(inplace=True)]
            width = hidden_dim
        layers.append(nn.Linear(width, 4, device=device))
        self.mlp = nn.Sequential(*layers)
        self.density_activation = density_activation
        self.blob_density = float(blob_density)
        self.blob_radius = float(blob_radius)
        self.normal_type = normal_type
        self.finite_difference_eps = float(finite_difference_eps)

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        lo, hi = self.aabb[:3], self.aabb[3:]
        return (points - lo) / (hi - lo)

    def _raw(self, points: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        x = self.normalize(points)
        if detach_params:  # skip the table-gradient scatter when only d/dx is wanted
            enc = hashgrid_encode(x, self.encoding.params.detach(), self.encoding.config, "clamp")
        else:
            enc = self.encoding(x)
        return self.mlp(enc.to(self.mlp[0].weight.dtype))

    def _activate_density(self, raw: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        bias = self.blob_density * (1 - points.norm(dim=-1) / self.blob_radius)
        raw = raw + bias
        return trunc_exp(raw) if self.density_activation == "exp" else F.softplus(raw)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) densities."""
        return self._activate_density(self._raw(points)[:, 0], points)

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) unit normals pointing out of the surface: -grad(density) / |grad(density)|."""
        if self.normal_type == "finite_difference":
            eps = self.finite_difference_eps
            offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
            shifted = torch.cat([points[:, None] + offsets, points[:, None] - offsets], 1)
            sigma = self.density(shifted.reshape(-1, 3)).view(-1, 2, 3)
            grad = (sigma[:, 0] - sigma[:, 1]) / (2 * eps)
        else:
            with torch.enable_grad():
                x = points.detach().requires_grad_(True)
                raw = self._raw(x, detach_params=True)[:, 0]
                sigma = self._activate_density(raw, x)
                (grad,) = torch.autograd.grad(sigma.sum(), x)
        return F.normalize(-grad, dim=-1)

    def forward(self, points: torch.Tensor, with_normals: bool = False) -> dict:
        """(N, 3) world points -> {'density': (N,), 'albedo': (N, 3)[, 'normal': (N, 3)]}."""
        raw = self._raw(points)
        out = {"density": self._activate_density(raw[:, 0], points),
               "albedo": torch.sigmoid(raw[:, 1:4])}
        if with_normals:
            out["normal"] = self.normals(points)
        return out
