"""Backbones (graph -> per-atom / per-edge / per-structure features) behind one interface."""

from ._base import BACKBONES, N_SPECIES, Backbone, BackboneOutput, build_backbone, register_backbone

__all__ = [
    "BACKBONES",
    "N_SPECIES",
    "Backbone",
    "BackboneOutput",
    "build_backbone",
    "register_backbone",
]

# Concrete backbones register themselves on import: imported by name, so a broken module fails
# loudly instead of silently vanishing from the registry.
from . import equiformer, gaa, megnet  # noqa: E402,F401
