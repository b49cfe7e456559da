"""atomssl: self-supervised, transfer and generative learning on 3D atomic structures.

Data flow: ``data`` (structures) -> ``graph`` (neighbour lists, clouds) -> ``representation``
(backbones) -> ``task`` (pretext/downstream heads) -> ``train`` (Lightning) -> results.
"""

__version__ = "0.1.0"

from .errors import AtomsslError, StructureError  # noqa: E402
from .data import Structure  # noqa: E402

__all__ = ["__version__", "AtomsslError", "StructureError", "Structure"]
