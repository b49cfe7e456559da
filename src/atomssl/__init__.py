"""atomssl: self-supervised, transfer and generative learning on 3D atomic structures.

Data flow: ``data`` (structures) -> ``graph`` (neighbour lists, clouds) -> ``representation``
(backbones) -> ``task`` (pretext/downstream heads) -> ``train`` (Lightning) -> results.
"""

from ._version import __version__
from .data import Structure
from .errors import AtomsslError, StructureError


def load_backbone(path, map_location="cpu"):
    """The pretrained backbone in an atomssl checkpoint (see :func:`atomssl.train.load_backbone`)."""
    from .train import load_backbone as _load  # lazy: keeps `import atomssl` free of Lightning

    return _load(path, map_location)


__all__ = ["__version__", "AtomsslError", "StructureError", "Structure", "load_backbone"]
