"""Training: the pretraining run (Lightning), safe checkpoints, data loading and embeddings."""

from ._checkpoint import AtomicCheckpointIO, load_backbone, load_checkpoint, save_checkpoint
from ._curves import learning_curves
from ._data import PretrainDataModule, build_graphs, load_structures, synthetic_crystals
from ._embed import DEFAULT_MAX_EDGES_PER_CHUNK, default_checkpoint, embed_files, embed_structures
from ._evaluate import evaluate_matbench, matbench_record
from ._finetune import DEFAULTS as FINETUNE_DEFAULTS
from ._finetune import FinetuneModule, LabelledGraphs, LinearProbe, finetune, train_and_predict
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
    "LabelledGraphs",
    "LinearProbe",
    "finetune",
    "train_and_predict",
    "evaluate_matbench",
    "matbench_record",
    "learning_curves",
]
