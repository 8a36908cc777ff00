"""Stage 3 (texture), threestudio's prolificdreamer-texture in our pieces: the stage-2 mesh, fixed,
with small disconnected pieces removed; a new hash-grid colour field queried at the rasterized
surface points (interpolated world positions), started by fitting the stage-1 NeRF's albedo on the
surface (threestudio issue #198); VSD guidance by default on the colour render composited over a
solid background and antialiased. The loop, guidance, checkpoints and resume are stage_base's."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..config import ConfigError
from .render import clip_positions, draw
from .stage_base import StageConfig, StageTrainer, _f
from .texture_field import TextureField, fit_colors, remove_small_pieces

COLOR_INITS = ("stage1", "none")


@dataclass
class TextureConfig(StageConfig):
    STAGE = "texture"
    DEFAULT_MODE = "vsd"

    init_from: str = _f("", "the geometry run folder whose mesh is textured")
    out: str = _f("runs/texture", "this stage's run folder")
    steps: int = _f(30000, "iterations (threestudio: 30000)")
    mode: str | None = _f(None, "guidance mode (default: vsd)")
    lr: float = _f(0.01, "Adam learning rate of the texture hash grid (its MLP gets lr/10)")
    color_init: str = _f("stage1", "texture start: stage1 (fit the stage-1 NeRF's albedo on the surface) "
                                   "or none (random)")
    color_init_steps: int = _f(300, "Adam steps of the stage-1 colour fit")
    outlier_faces_fraction: float = _f(0.01, "pieces of the mesh with fewer than this fraction of its faces "
                                             "are removed (threestudio: 0.01)")
    texture_size: int = _f(1024, "side in texels of the exported UV-atlas texture (xatlas charts; "
                                 "threestudio: 1024); 0: vertex colours only")

    def validate(self) -> None:
        super().validate()
        if self.color_init not in COLOR_INITS:
            raise ConfigError(f"--color-init: must be one of {', '.join(COLOR_INITS)}, got '{self.color_init}'")
        if self.color_init_steps < 0:
            raise ConfigError(f"--color-init-steps: must be >= 0, got {self.color_init_steps}")
        if not 0 <= self.texture_size <= 8192:
            raise ConfigError(f"--texture-size: must be in [0, 8192], got {self.texture_size}")
        if not 0 <= self.outlier_faces_fraction < 1:
            raise ConfigError(f"--outlier-faces-fraction: must be in [0, 1), got {self.outlier_faces_fraction}")


class TextureTrainer(StageTrainer):
    """A texture field on a fixed mesh, trained by the guidance mode on colour renders."""

    def _convert(self) -> None:
        from ..checkpoint import load_checkpoint
        from ..run_folder import CHECKPOINT
        from .sdf_init import surface_points
        from .stage_geometry import mesh_from_state

        c = self.config
        state = load_checkpoint(os.path.join(c.init_from, CHECKPOINT))
        try:
            vertices, faces, geometry, box = mesh_from_state(state)
            center, half = box.center, box.half_extent
        except (ConfigError, KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"--init-from: '{c.init_from}' holds no readable geometry checkpoint "
                              f"({type(err).__name__}: {err})") from None
        if faces.shape[0] == 0:
            raise ConfigError(f"--init-from: '{c.init_from}': the geometry run's mesh has no faces")
        faces_before = int(faces.shape[0])
        vertices, faces, removed = remove_small_pieces(vertices, faces, c.outlier_faces_fraction)
        self._set_parameters(vertices, faces, center, half)
        record = {"step": 0, "mesh_faces": int(faces.shape[0]), "mesh_faces_removed": faces_before - int(faces.shape[0]),
                  "mesh_pieces_removed": removed}
        if c.color_init == "stage1":
            from ..trainer import load_scene

            try:
                renderer, _, _ = load_scene(geometry.init_from, self.device)
            except ConfigError as err:
                raise ConfigError(f"--color-init stage1: the geometry run's stage-1 run '{geometry.init_from}' "
                                  f"is not readable ({err}); pass --color-init none") from None
            points = torch.cat([vertices, surface_points(vertices, faces, 20000, c.guidance.seed)]).to(self.device)
            with torch.no_grad():
                albedo = renderer.field(points)["albedo"].clamp(0, 1).float()
            before, after = fit_colors(self.texture, points, albedo, c.color_init_steps, seed=c.guidance.seed)
            record.update(color_init_mse_before=before, color_init_mse_after=after)
            # a fresh optimiser: the fit's moments are not the distillation's
            self._set_optimizer()
        self.initial_metrics = [record]

    def _set_parameters(self, vertices, faces, center, half, texture_state=None) -> None:
        g = self.config.guidance
        self.vertices = vertices.detach().float().to(self.device)
        self.faces = faces.to(torch.int32).to(self.device)
        self.box = (tuple(float(v) for v in center), float(half))
        self.texture = TextureField(center, half, n_levels=g.n_levels,
                                    log2_hashmap_size=g.log2_hashmap_size).to(self.device)
        if texture_state is not None:
            self.texture.load_state_dict(texture_state)
        self.render_rng = torch.Generator().manual_seed(g.seed + 20)
        self._set_optimizer()

    def _set_optimizer(self) -> None:
        lr = self.config.lr
        self.optimizer = torch.optim.Adam([{"params": self.texture.encoding.parameters(), "lr": lr},
                                           {"params": self.texture.mlp.parameters(), "lr": lr / 10}],
                                          betas=(0.9, 0.99), eps=1e-15)

    def _restore(self, state: dict) -> None:
        self._set_parameters(state["vertices"], state["faces"], state["box"]["center"],
                             state["box"]["half_extent"], state["texture"])
        self.render_rng.set_state(state["render_rng"])

    def _extra_state(self) -> dict:
        return {"vertices": self.vertices.cpu(), "faces": self.faces.cpu(),
                "box": {"center": list(self.box[0]), "half_extent": self.box[1]},
                "texture": self.texture.state_dict(), "render_rng": self.render_rng.get_state()}

    # -- rendering ------------------------------------------------------------------------------
    def render(self, cams, training: bool = True):
        background = self._background(cams.batch_size, training)
        image, _ = render_textured(self.vertices, self.faces, self.texture, cams, background)
        return image, None

    def turntable_panels(self, cams) -> list:
        """Shaded | normal map | textured: the fixed mesh's shape, then its colours."""
        from .render import render_mesh, shade_normals

        out = render_mesh(self.vertices, self.faces, cams.c2w, cams.fovy, cams.height, cams.width)
        return [shade_normals(out, cams.rays_d), out.normal.permute(0, 3, 1, 2), self.render(cams, training=False)[0]]

    def _background(self, n: int, training: bool) -> torch.Tensor:
        """White, or (training, with the stage-1 run's --random-background probability) a random
        solid colour per image, as stage 1's white background does."""
        white = torch.ones(n, 3)
        if training and self.config.guidance.random_background > 0:
            draw = torch.rand(n, generator=self.render_rng) < self.config.guidance.random_background
            colors = torch.rand(n, 3, generator=self.render_rng)
            white = torch.where(draw[:, None], colors, white)
        return white.to(self.device)

    def regularization(self, extras):
        return None, {}

    @torch.no_grad()
    def trimesh(self):
        import trimesh

        rgb = self.texture(self.vertices).clamp(0, 1).cpu()
        rgba = torch.cat([rgb, torch.ones(rgb.shape[0], 1)], 1)
        mesh = trimesh.Trimesh(vertices=self.vertices.double().cpu().numpy(), faces=self.faces.long().cpu().numpy(),
                               process=False)
        mesh.visual.vertex_colors = (rgba * 255).round().to(torch.uint8).numpy()
        return mesh


def render_textured(vertices, faces, texture, cams, background: torch.Tensor):
    """((B, 3, H, W) colour renders, (B, H, W) coverage in {0, 1}) of the mesh with the texture
    field queried at the rasterized surface points, over a solid background (B, 3), antialiased:
    the texture stage's training render, and the shapes benchmark's."""
    H, W = cams.height, cams.width
    pos = clip_positions(vertices, cams.c2w, cams.fovy, H, W)

    def shade(rast, points, cameras):   # points: (b, H, W, 3) surface points
        covered = rast.tri_id >= 0
        color = torch.zeros(*covered.shape, 3, device=vertices.device)
        color[covered] = texture(points[covered])
        mask = covered[..., None].float()
        return color * mask + background[cameras, None, None, :] * (1 - mask)

    image, tri_id = draw(pos, faces, H, W, vertices, shade)
    covered = tri_id >= 0
    # rasterize's row 0 is the bottom
    return image.flip(1).permute(0, 3, 1, 2).contiguous(), covered.flip(1).float()
