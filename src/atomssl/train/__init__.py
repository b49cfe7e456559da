"""Training: the one Lightning engine, the pretraining run and the fine-tuning module, safe
checkpoints, data loading and embeddings. Fine-tuning runs, probes and benchmarks that score
models are in :mod:`atomssl.evaluate`."""

from ._checkpoint import AtomicCheckpointIO, load_backbone, load_checkpoint, save_checkpoint
from ._data import PretrainDataModule, build_graphs, load_structures, synthetic_crystals
from ._embed import DEFAULT_MAX_EDGES_PER_CHUNK, default_checkpoint, embed_files, embed_structures
from ._engine import make_trainer
from ._finetune import DEFAULTS as FINETUNE_DEFAULTS
from ._finetune import FinetuneModule, LabelledGraphs, fit_module
from ._module import PretrainModule
from ._pretrain import DEFAULTS as PRETRAIN_DEFAULTS
from ._pretrain import load_run_config, merged_metrics, pretrain

__all__ = [
    "AtomicCheckpointIO",
    "load_backbone",
    "load_checkpoint",
    "save_checkpoint",
    "PretrainDataModule",
    "build_graphs",
    "load_structures",
    "synthetic_crystals",
    "DEFAULT_MAX_EDGES_PER_CHUNK",
    "default_checkpoint",
    "embed_files",
    "embed_structures",
    "PretrainModule",
    "PRETRAIN_DEFAULTS",
    "load_run_config",
    "merged_metrics",
    "pretrain",
    "FINETUNE_DEFAULTS",
    "FinetuneModule",
    "fit_module",
    "make_trainer",
    "LabelledGraphs",
]
