"""Masked crystal reconstruction and adversarial refinement (seed 002), with CDVAE validity
metrics and an element substitution map.

The names here are what a user calls; building blocks (losses, critic views, decoding
helpers) stay in the private modules."""

from ._discriminator import Discriminator
from ._gan import GAN_DEFAULTS, gan
from ._reconstruct import (
    Corruption,
    Generator,
    Reconstruction,
    corrupt_batch,
    corrupt_structures,
    generate,
    reconstruct,
    reconstruction_metrics,
    repair,
)
from ._substitution import plot_substitution_map, substitution_counts, substitution_matrix
from ._validity import OXIDATION_SETS, composition_validity, structure_validity, validity_report

__all__ = [
    "GAN_DEFAULTS",
    "gan",
    "Generator",
    "Discriminator",
    "Corruption",
    "Reconstruction",
    "corrupt_batch",
    "corrupt_structures",
    "generate",
    "reconstruct",
    "reconstruction_metrics",
    "repair",
    "substitution_counts",
    "substitution_matrix",
    "plot_substitution_map",
    "OXIDATION_SETS",
    "composition_validity",
    "structure_validity",
    "validity_report",
]
