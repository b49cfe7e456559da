"""Glassy motifs: a-Si by melt-quench, Gram-matrix VAE, synchronised decoding, sample / interpolate / inpaint."""

from ..simulate._melt_quench import (
    SW_PARAMETERS,
    MeltQuenchConfig,
    SimulationError,
    melt_quench,
    read_cells,
    write_cells,
    write_sw_file,
)
from ._analysis import (
    BOND_CUTOFF,
    bond_angles,
    compare_motifs,
    coordination,
    motif_statistics,
    rdf,
    structure_summary,
)
from ._data import BUNDLED_CELLS, bundled_cells
from ._decode import (
    align,
    aligned_rmsd,
    assign_and_align,
    gram_to_coords,
    nearest_psd,
    procrustes,
    rmsd,
)
from ._environments import (
    Environments,
    GramNormalizer,
    augment_permutations,
    extract_environments,
    permute_grams,
    permute_vectors,
    random_permutations,
    triangle_to_gram,
)
from ._generate import InpaintResult, inpaint, interpolate, sample
from ._vae import GramVAE, TrainConfig, VAEConfig, load_vae, save_vae
from ._vae_train import train_vae

__all__ = [
    "MeltQuenchConfig",
    "SimulationError",
    "SW_PARAMETERS",
    "melt_quench",
    "read_cells",
    "write_cells",
    "write_sw_file",
    "Environments",
    "GramNormalizer",
    "augment_permutations",
    "extract_environments",
    "permute_grams",
    "permute_vectors",
    "random_permutations",
    "triangle_to_gram",
    "align",
    "aligned_rmsd",
    "assign_and_align",
    "gram_to_coords",
    "nearest_psd",
    "procrustes",
    "rmsd",
    "GramVAE",
    "TrainConfig",
    "VAEConfig",
    "load_vae",
    "save_vae",
    "train_vae",
    "InpaintResult",
    "inpaint",
    "interpolate",
    "sample",
    "BOND_CUTOFF",
    "bond_angles",
    "compare_motifs",
    "coordination",
    "motif_statistics",
    "rdf",
    "structure_summary",
    "bundled_cells",
    "BUNDLED_CELLS",
]
