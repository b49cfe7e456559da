"""Backbones (graph -> per-atom / per-edge / per-structure features) behind one interface."""

from ._base import BACKBONES, N_SPECIES, Backbone, BackboneOutput, build_backbone, register_backbone

__all__ = ["BACKBONES", "N_SPECIES", "Backbone", "BackboneOutput", "build_backbone", "register_backbone"]

# Concrete backbones register themselves on import.
for _mod in ("megnet", "equiformer", "gaa"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:  # a backbone module not yet written
        if _exc.name != f"{__name__}.{_mod}":
            raise
