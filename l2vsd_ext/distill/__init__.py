"""Guidance modes (SDS, VSD, L-VSD, L²-VSD): small strategy objects sharing one interface."""
from .base import DistillationMode, GuidanceContext, GuidanceOptions
from .modes import MODES, L2VSD, LVSD, SDS, VSD, make_mode

__all__ = ["DistillationMode", "GuidanceContext", "GuidanceOptions", "L2VSD", "LVSD", "MODES",
           "SDS", "VSD", "make_mode"]
