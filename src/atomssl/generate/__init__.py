"""Masked crystal reconstruction and adversarial refinement (seed 002), with CDVAE validity
metrics and an element substitution map."""

from ._decoding import DECODINGS, best_first_assignments, choose_species
from ._discriminator import CriticHead, Discriminator, real_batch, train_classifier
from ._gan import CRITIC_POSITIONS, GAN_DEFAULTS, critic_view, discriminator_loss, gan, generator_adversarial_loss, prepare_gan_config, reconstruction_losses
from ._reconstruct import (
    MASK_MODES,
    Corruption,
    Generator,
    Reconstruction,
    corrupt_batch,
    corrupt_structures,
    generate,
    one_hot_species,
    reconstruct,
    reconstruction_metrics,
    relaxed_species,
    repair,
)
from ._substitution import element_order, periodic_position, plot_substitution_map, substitution_counts, substitution_matrix
from ._validity import (
    OXIDATION_SETS,
    composition_validity,
    min_periodic_distance,
    reduced_composition,
    structure_validity,
    validity_report,
)

__all__ = [
    "DECODINGS", "best_first_assignments", "choose_species",
    "CriticHead", "Discriminator", "real_batch", "train_classifier",
    "CRITIC_POSITIONS", "GAN_DEFAULTS", "critic_view", "discriminator_loss", "gan", "generator_adversarial_loss", "prepare_gan_config",
    "reconstruction_losses",
    "MASK_MODES", "Corruption", "Generator", "Reconstruction", "corrupt_batch", "corrupt_structures", "generate",
    "one_hot_species", "reconstruct", "reconstruction_metrics", "relaxed_species", "repair",
    "element_order", "periodic_position", "plot_substitution_map", "substitution_counts", "substitution_matrix",
    "OXIDATION_SETS", "composition_validity", "min_periodic_distance", "reduced_composition", "structure_validity",
    "validity_report",
]
