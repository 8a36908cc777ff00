"""Signed distance functions of analytic primitives, in torch, for (N, 3) points (z up, the
object's front facing +x). Each returns (N,) distances, negative inside. The combinators keep the
result a distance bound (Lipschitz <= 1), so sphere tracing on it is safe."""
from __future__ import annotations

import math

import torch


def _t(v, like):
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def sphere(p, center, radius):
    return (p - _t(center, p)).norm(dim=-1) - radius


def ellipsoid(p, center, radii):
    """Inigo Quilez's bound for an axis-aligned ellipsoid (exact on the surface)."""
    q = p - _t(center, p)
    r = _t(radii, p)
    k0 = (q / r).norm(dim=-1)
    k1 = (q / (r * r)).norm(dim=-1).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def box(p, center, half, rounding=0.0):
    q = (p - _t(center, p)).abs() - (_t(half, p) - rounding)
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp_max(0)
    return outside + inside - rounding


def capsule(p, a, b, radius_a, radius_b=None):
    """Segment a-b with a radius varying linearly from radius_a to radius_b (a tapered capsule;
    a distance bound for gentle tapers)."""
    radius_b = radius_a if radius_b is None else radius_b
    a, b = _t(a, p), _t(b, p)
    ab = b - a
    h = (((p - a) * ab).sum(-1) / (ab * ab).sum()).clamp(0, 1)
    radius = radius_a + (radius_b - radius_a) * h
    return (p - a - h[:, None] * ab).norm(dim=-1) - radius


def cylinder(p, center, radius, half_height, axis=2):
    """Capped cylinder along a coordinate axis."""
    q = p - _t(center, p)
    along = q[:, axis]
    radial = torch.cat([q[:, :axis], q[:, axis + 1:]], dim=-1).norm(dim=-1)
    d = torch.stack([radial - radius, along.abs() - half_height], dim=-1)
    return d.clamp_min(0).norm(dim=-1) + d.max(dim=-1).values.clamp_max(0)


def torus(p, center, major, minor, axis=2):
    """Torus whose ring lies in the plane normal to `axis`."""
    q = p - _t(center, p)
    along = q[:, axis]
    radial = torch.cat([q[:, :axis], q[:, axis + 1:]], dim=-1).norm(dim=-1)
    return torch.stack([radial - major, along], dim=-1).norm(dim=-1) - minor


def rotate_x(p, degrees):
    """Points in a frame rotated by `degrees` about x (for rotated primitives)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    y, z = p[:, 1], p[:, 2]
    return torch.stack([p[:, 0], c * y + s * z, -s * y + c * z], dim=-1)


def intersect(*distances):
    return torch.stack(distances, dim=0).max(dim=0).values


def subtract(d, cut):
    return torch.maximum(d, -cut)
