"""The benchmark's objects: compositions of analytic primitives (shapes.sdf), each named by its
prompt. World frame as the cameras use it: z up, front facing +x (azimuth 0 is a 'front view').
Every object has a front that differs from its back and sides (a nose, a door, a spout, a face),
so multi-face ("Janus") failures are measurable, and is mirror-symmetric in y. They fit in a ball
of radius ~0.5 around the origin, where a NeRF run's initial blob (radius 0.5) sits.

An object is a list of parts (distance function, colour); the surface is the union of the parts and
a point takes the colour of the part nearest to it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from . import sdf as S

Colour = Union[Sequence[float], Callable[[torch.Tensor], torch.Tensor]]

BLACK = (0.05, 0.05, 0.05)
# Parts below fit a ball of radius ~0.4; grown by this they fill a 32 px view as a NeRF run's
# object does (cameras at distance 1-1.5, field of view 40-70 degrees).
SCALE = 1.15


@dataclass(frozen=True)
class Part:
    distance: Callable[[torch.Tensor], torch.Tensor]  # (N, 3) -> (N,)
    colour: Colour  # RGB in [0, 1], or (N, 3) points -> (N, 3) colours


@dataclass(frozen=True)
class ShapeObject:
    key: str
    prompt: str
    parts: tuple

    scale: float = SCALE  # parts are modelled at unit scale, then grown uniformly

    def part_distances(self, points: torch.Tensor) -> torch.Tensor:
        local = points / self.scale
        return torch.stack([part.distance(local) for part in self.parts], dim=-1) * self.scale

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) signed distance to the surface (negative inside)."""
        return self.part_distances(points).min(dim=-1).values

    def sdf_and_albedo(self, points: torch.Tensor):
        distances = self.part_distances(points)
        sdf, nearest = distances.min(dim=-1)
        albedo = torch.empty(points.shape[0], 3, dtype=points.dtype, device=points.device)
        for i, part in enumerate(self.parts):
            mask = nearest == i
            if not mask.any():
                continue
            if callable(part.colour):
                albedo[mask] = part.colour(points[mask] / self.scale).to(albedo)
            else:
                albedo[mask] = torch.as_tensor(part.colour, dtype=albedo.dtype, device=albedo.device)
        return sdf, albedo


def _where(mask, colour_in, colour_out):
    a = torch.tensor(colour_in, device=mask.device)
    b = torch.tensor(colour_out, device=mask.device)
    return torch.where(mask[:, None], a, b)


def _snowman():
    white = (0.93, 0.93, 0.96)
    return ShapeObject("snowman", "a snowman with an orange carrot nose", (
        Part(lambda p: S.sphere(p, (0, 0, -0.2), 0.22), white),
        Part(lambda p: S.sphere(p, (0, 0, 0.1), 0.155), white),
        Part(lambda p: S.capsule(p, (0.12, 0, 0.1), (0.36, 0, 0.09), 0.05, 0.015), (1.0, 0.45, 0.05)),
        Part(lambda p: torch.minimum(S.sphere(p, (0.12, 0.065, 0.17), 0.03),
                                     S.sphere(p, (0.12, -0.065, 0.17), 0.03)), BLACK),
        Part(lambda p: torch.minimum(S.cylinder(p, (0, 0, 0.3), 0.1, 0.08),
                                     S.cylinder(p, (0, 0, 0.235), 0.16, 0.015)), (0.12, 0.1, 0.12)),
        Part(lambda p: torch.minimum(S.sphere(p, (0.205, 0, -0.12), 0.035),
                                     S.sphere(p, (0.215, 0, -0.24), 0.035)), BLACK),
    ))


def _house():
    def roof(p):
        q = S.rotate_x(p - torch.as_tensor((0, 0, 0.1), dtype=p.dtype), 45.0)
        prism = S.box(q, (0, 0, 0), (0.3, 0.24, 0.24))
        return S.intersect(prism, 0.1 - p[:, 2])

    def walls(p):  # yellow windows on the sides, none at the back
        window = (p[:, 1].abs() > 0.29) & ((p[:, 0] - 0.0).abs() < 0.09) & \
                 ((p[:, 2] + 0.08).abs() < 0.07)
        return _where(window, (1.0, 0.9, 0.3), (0.85, 0.25, 0.2))

    return ShapeObject("house", "a red house with a blue door", (
        Part(lambda p: S.box(p, (0, 0, -0.15), (0.24, 0.3, 0.25)), walls),
        Part(roof, (0.3, 0.3, 0.33)),
        Part(lambda p: S.box(p, (0.24, 0, -0.22), (0.03, 0.09, 0.17)), (0.15, 0.3, 0.95)),
    ))


def _mug():
    def body(p):
        outer = S.cylinder(p, (0, 0, -0.08), 0.22, 0.24)
        return S.subtract(outer, S.cylinder(p, (0, 0, 0.1), 0.17, 0.24))

    def body_colour(p):
        inside = p[:, :2].norm(dim=-1) < 0.195
        return _where(inside, (0.08, 0.12, 0.35), (0.2, 0.4, 0.9))

    def handle(p):
        ring = S.torus(p, (0.24, 0, -0.08), 0.12, 0.04, axis=1)
        return S.intersect(ring, 0.2 - p[:, 0])

    return ShapeObject("mug", "a blue coffee mug with a yellow handle", (
        Part(body, body_colour),
        Part(handle, (1.0, 0.85, 0.1)),
    ))


def _pumpkin():
    def face(p):
        # Eyes and a mouth cut into the front (x > 0), in the (y, z) plane.
        y, z = p[:, 1], p[:, 2]
        front = p[:, 0] > 0.1
        eyes = ((y.abs() - 0.11).abs() < 0.055) & ((z - 0.04).abs() < 0.05)
        mouth = (y.abs() < 0.17) & ((z + 0.11 - 0.4 * y * y).abs() < 0.035)
        return _where(front & (eyes | mouth), (0.25, 0.08, 0.02), (1.0, 0.5, 0.05))

    return ShapeObject("pumpkin", "a jack-o-lantern pumpkin with a carved face", (
        Part(lambda p: S.ellipsoid(p, (0, 0, -0.08), (0.33, 0.33, 0.25)), face),
        Part(lambda p: S.capsule(p, (0, 0, 0.12), (0.04, 0, 0.26), 0.04, 0.03), (0.2, 0.55, 0.15)),
    ))


def _robot():
    grey = (0.62, 0.64, 0.68)

    def torso_colour(p):  # a yellow chest panel on the front
        panel = (p[:, 0] > 0.12) & (p[:, 1].abs() < 0.09) & ((p[:, 2] + 0.05).abs() < 0.08)
        return _where(panel, (1.0, 0.8, 0.1), grey)

    return ShapeObject("robot", "a grey robot with a red visor", (
        Part(lambda p: S.box(p, (0, 0, -0.05), (0.14, 0.2, 0.18), 0.02), torso_colour),
        Part(lambda p: S.box(p, (0, 0, 0.24), (0.13, 0.13, 0.1), 0.02), grey),
        Part(lambda p: S.box(p, (0.13, 0, 0.26), (0.03, 0.11, 0.035)), (0.95, 0.1, 0.1)),
        Part(lambda p: torch.minimum(S.capsule(p, (0, 0.26, 0.08), (0, 0.26, -0.2), 0.05),
                                     S.capsule(p, (0, -0.26, 0.08), (0, -0.26, -0.2), 0.05)),
             (0.35, 0.36, 0.4)),
        Part(lambda p: torch.minimum(S.box(p, (0, 0.09, -0.33), (0.07, 0.06, 0.1)),
                                     S.box(p, (0, -0.09, -0.33), (0.07, 0.06, 0.1))),
             (0.35, 0.36, 0.4)),
    ))


def _duck():
    yellow = (1.0, 0.85, 0.1)
    return ShapeObject("duck", "a yellow rubber duck with an orange beak", (
        Part(lambda p: S.ellipsoid(p, (-0.04, 0, -0.15), (0.3, 0.21, 0.16)), yellow),
        Part(lambda p: S.sphere(p, (0.12, 0, 0.1), 0.14), yellow),
        Part(lambda p: S.ellipsoid(p, (0.27, 0, 0.07), (0.1, 0.07, 0.035)), (1.0, 0.45, 0.05)),
        Part(lambda p: torch.minimum(S.sphere(p, (0.2, 0.075, 0.15), 0.03),
                                     S.sphere(p, (0.2, -0.075, 0.15), 0.03)), BLACK),
        Part(lambda p: S.ellipsoid(p, (-0.3, 0, -0.03), (0.08, 0.06, 0.08)), yellow),
    ))


def _teapot():
    purple = (0.55, 0.25, 0.75)
    return ShapeObject("teapot", "a purple teapot with a long spout", (
        Part(lambda p: S.ellipsoid(p, (0, 0, -0.1), (0.26, 0.26, 0.2)), purple),
        Part(lambda p: torch.minimum(S.cylinder(p, (0, 0, 0.1), 0.12, 0.03),
                                     S.sphere(p, (0, 0, 0.16), 0.04)), (0.95, 0.95, 0.95)),
        Part(lambda p: S.capsule(p, (0.15, 0, -0.1), (0.4, 0, 0.12), 0.06, 0.035), purple),
        Part(lambda p: S.intersect(S.torus(p, (-0.25, 0, -0.08), 0.11, 0.035, axis=1),
                                   -0.2 - p[:, 0]), (0.95, 0.95, 0.95)),
    ))


def _bear():
    brown = (0.55, 0.33, 0.15)

    def body_colour(p):  # a cream belly patch on the front
        belly = (p[:, 0] > 0.1) & (((p[:, 1] / 0.12) ** 2 + ((p[:, 2] + 0.2) / 0.14) ** 2) < 1)
        return _where(belly, (0.95, 0.88, 0.7), brown)

    return ShapeObject("bear", "a brown teddy bear with a white belly", (
        Part(lambda p: S.sphere(p, (0, 0, -0.18), 0.21), body_colour),
        Part(lambda p: S.sphere(p, (0, 0, 0.13), 0.15), brown),
        Part(lambda p: torch.minimum(S.sphere(p, (0, 0.12, 0.26), 0.06),
                                     S.sphere(p, (0, -0.12, 0.26), 0.06)), brown),
        Part(lambda p: S.ellipsoid(p, (0.14, 0, 0.09), (0.06, 0.07, 0.05)), (0.95, 0.88, 0.7)),
        Part(lambda p: torch.minimum(S.sphere(p, (0.13, 0.06, 0.17), 0.025),
                                     S.sphere(p, (0.13, -0.06, 0.17), 0.025)), BLACK),
        Part(lambda p: torch.minimum(S.capsule(p, (0.05, 0.18, -0.08), (0.12, 0.25, -0.2), 0.05),
                                     S.capsule(p, (0.05, -0.18, -0.08), (0.12, -0.25, -0.2), 0.05)),
             brown),
    ))


OBJECTS = {obj.key: obj for obj in (_snowman(), _house(), _mug(), _pumpkin(), _robot(), _duck(),
                                    _teapot(), _bear())}


def get_object(name: str) -> ShapeObject:
    """An object by key ('snowman') or by its prompt."""
    if name in OBJECTS:
        return OBJECTS[name]
    for obj in OBJECTS.values():
        if obj.prompt == name:
            return obj
    raise KeyError(f"unknown shapes object {name!r}; choose from {', '.join(OBJECTS)}")
