"""Mesh scores against a benchmark object's analytic SDF, for every stage's mesh (stage 1's
marching-cubes mesh, stage 2's tet-grid mesh, stage 3's textured mesh): the Chamfer distance (as
score.py), the normal consistency (face normals against the SDF gradient at the face centres) and
the F-score at distance thresholds relative to the object's size."""
from __future__ import annotations

import functools
import math

import torch

from .metrics import chamfer_distance

# F-score thresholds as fractions of the true object's bounding-box diagonal.
FSCORE_FRACTIONS = (0.01, 0.02)


def fscore_key(fraction: float) -> str:
    return f"fscore_{round(fraction * 100)}pct"


def nearest_distances(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(N,) distance from each point of x to its nearest point of y."""
    return torch.cat([torch.cdist(c, y, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
                      for c in x.split(chunk)])


def fscore(predicted: torch.Tensor, truth: torch.Tensor, threshold: float) -> float:
    """Harmonic mean of precision (predicted points within `threshold` of the truth) and recall
    (true points within `threshold` of the prediction); 0 when both are 0."""
    precision = float((nearest_distances(predicted, truth) < threshold).float().mean())
    recall = float((nearest_distances(truth, predicted) < threshold).float().mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, obj) -> float:
    """Area-weighted mean over faces of |cos| between the face normal and the object's SDF
    gradient at the face centre: 1 when every face lies along the true surface's tangent plane.
    |cos|, not cos: a face's winding (inside/outside) is not what is scored."""
    from .field import AnalyticField

    v = vertices.double()[faces.long()]
    cross = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    area = cross.norm(dim=-1)
    keep = area > 0
    if not keep.any():
        return math.nan
    normals = cross[keep] / area[keep, None]
    gradient = AnalyticField(obj).normals(v[keep].mean(dim=1)).double()
    cos = (normals * gradient).sum(-1).abs()
    return float((cos * area[keep]).sum() / area[keep].sum())


@functools.lru_cache(maxsize=8)
def true_mesh(key: str):
    """The object's true surface as a trimesh: score.py's marching cubes of the SDF's zero set
    (resolution 160), cached."""
    from ..export import extract_mesh
    from .field import AnalyticField
    from .objects import OBJECTS

    field = AnalyticField(OBJECTS[key])
    return extract_mesh(field, resolution=160, threshold=field.max_density / 2)


@functools.lru_cache(maxsize=8)
def _truth(key: str):
    """(surface points, bounding-box diagonal) of an object: the same points as
    score.true_surface_points (same mesh, same sampling), cached."""
    from .score import surface_samples

    points = surface_samples(true_mesh(key))
    return points, float((points.max(0).values - points.min(0).values).norm())


def score_mesh(vertices: torch.Tensor, faces: torch.Tensor, obj) -> dict:
    """Chamfer, normal consistency and F-scores of a mesh against `obj`; NaN for an empty mesh."""
    import trimesh

    from .score import surface_samples

    keys = ["chamfer", "normal_consistency"] + [fscore_key(f) for f in FSCORE_FRACTIONS]
    if faces.shape[0] == 0:
        return {**{k: math.nan for k in keys}, "faces": 0}
    truth, diagonal = _truth(obj.key)
    mesh = trimesh.Trimesh(vertices=vertices.detach().double().cpu().numpy(),
                           faces=faces.detach().long().cpu().numpy(), process=False)
    ours = surface_samples(mesh)
    out = {"chamfer": chamfer_distance(ours, truth),
           "normal_consistency": normal_consistency(vertices.detach().cpu(), faces.detach().cpu(), obj)}
    for fraction in FSCORE_FRACTIONS:
        out[fscore_key(fraction)] = fscore(ours, truth, fraction * diagonal)
    out["faces"] = int(faces.shape[0])
    return out
