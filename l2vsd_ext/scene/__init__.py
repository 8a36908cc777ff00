"""Scene representation for distillation: NeRF field, background, cameras, volume renderer."""
from .background import MLPBackground, SolidBackground
from .cameras import CameraBatch, CameraSampler, view_label
from .field import NeRFField
from .renderer import VolumeRenderer

__all__ = ["NeRFField", "SolidBackground", "MLPBackground", "CameraBatch", "CameraSampler",
           "view_label", "VolumeRenderer"]
